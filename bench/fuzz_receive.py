"""Long fuzz run against ``cdss serve`` (the CI-sized one is ``tests/test_fuzz_receive.py``).

Mutated datasets (committed fixtures, sent as raw bytes) and mutated PDUs (a recorded association
replayed with one PDU changed) against a node subprocess (SQLite, fsync on), with the oracles of
``tests/fuzz.py``. Bounded by ``--datasets``/``--pdus`` and ``--hours``; stops by itself, loopback
only. Prints (and with ``--json`` writes) the counts per status and outcome, the findings (each
reproducible by its case id and ``--seed``), how many times pynetdicom's own reactor thread raised
(logged by the node, not a node crash), the node's threads/RSS before and after, and the load.

Usage::

    python bench/fuzz_receive.py                              # 2 000 datasets + 2 000 PDUs
    python bench/fuzz_receive.py --datasets 40000 --pdus 60000 --json fuzz.json   # the documented run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from cdss.config import StorageSettings  # noqa: E402
from cdss.db import Instance  # noqa: E402
from cdss.store import Spool  # noqa: E402
from tests import fuzz  # noqa: E402
from tests.node_process import NodeProcess  # noqa: E402

ACSE_TIMEOUT_S = 5


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=2000, help="mutated datasets (default 2000)")
    ap.add_argument("--pdus", type=int, default=2000, help="mutated PDU replays (default 2000)")
    ap.add_argument("--hours", type=float, default=2.0, help="stop after this long in total (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="master seed (a finding's case id is reproducible)")
    ap.add_argument("--workers", type=int, default=2, help="parallel dataset associations (default 2)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    budget = args.hours * 3600
    with tempfile.TemporaryDirectory(prefix="cdss-fuzz-") as tmp_s:
        tmp = Path(tmp_s)
        node = NodeProcess(
            tmp / "node",
            extra={
                "api": {"enabled": False},
                "jobs": {"workers": 0, "max_queue_depth": 10**7},
                "logging": {"level": "WARNING"},
                "route": {"view_classifier": False},
                "dicom": {
                    "max_associations": 200,
                    "acse_timeout_s": ACSE_TIMEOUT_S,
                    "dimse_timeout_s": 10,
                    "network_timeout_s": 15,
                },
            },
        )
        node.start()
        assert node.proc is not None
        pid = node.proc.pid
        before = _status(pid)
        load_before = _loadavg()
        started = time.monotonic()
        seeds = fuzz.load_seeds(tmp / "seeds")
        report = fuzz.run_dataset_cases(
            node.dicom_port,
            seeds,
            count=args.datasets,
            time_budget_s=budget / 2,
            workdir=tmp / "cases",
            master_seed=args.seed,
            workers=args.workers,
        )
        print(f"datasets: {json.dumps(report.summary())}", flush=True)
        pdus = fuzz.record_association(node.dicom_port, tmp)
        fuzz.run_pdu_cases(
            node.dicom_port,
            pdus,
            count=args.pdus,
            time_budget_s=max(60.0, budget - (time.monotonic() - started)),
            master_seed=args.seed,
            report=report,
            health=lambda: any(
                fuzz.echo_ok(node.dicom_port) or time.sleep(1) for _ in range(ACSE_TIMEOUT_S + 10)
            ),
        )
        alive = node.proc.poll() is None
        time.sleep(ACSE_TIMEOUT_S + 5)
        after = _status(pid) if alive else {}
        echo = fuzz.echo_ok(node.dicom_port) if alive else False
        db = node.database()
        with db.read_session() as s:
            rows = {
                uid: (key, sha)
                for uid, key, sha in s.execute(
                    select(Instance.sop_instance_uid, Instance.spool_key, Instance.sha256)
                ).all()
            }
        db.dispose()
        spool = Spool(StorageSettings(path=node.workdir / "var" / "spool", min_free_mb=0))
        lost = fuzz.check_acknowledged(report, rows, spool.read)
        log = node.log()
        node.stop()
    out = {
        "summary": report.summary(),
        "node_alive": alive,
        "echo_after": echo,
        "acknowledged_lost": lost[:50],
        "internal_errors_logged": log.count("c_store_internal_error"),
        "pynetdicom_reactor_exceptions_logged": log.count("Exception in thread"),
        "findings": report.findings,
        "node_before": before,
        "node_after": after,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "seed": args.seed,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    ok = alive and echo and not lost and not report.findings and out["internal_errors_logged"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
