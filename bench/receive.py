"""Receive throughput: N DX images over one association from DCMTK storescu into the node.

Starts a :class:`cdss.receive.Receiver` in this process (temporary spool, SQLite by default or
``--db-url`` for PostgreSQL), sends ``--count`` distinct DX images of ``--rows`` x ``--columns``
16-bit pixels with ``storescu`` over ONE association and reports:

* wall time of the storescu run, instances/s and MB/s (dataset bytes on the wire);
* the C-STORE handler latency (validate + fsync'ed spool write + DB commit) p50/p95/max and its
  split into validate / spool / commit (p50 each).

Every C-STORE must be acknowledged with 0x0000; the run fails otherwise. Example::

    python bench/receive.py --count 40 --rows 2048 --columns 2048
    python bench/receive.py --count 300 --rows 512 --columns 512 --no-fsync
    python bench/receive.py --db-url postgresql+psycopg://postgres@127.0.0.1/bench_receive
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdss.config import Settings
from cdss.db import Database
from cdss.logs import configure_logging
from cdss.receive import Receiver
from cdss.receive.ingest import StoreOutcome
from cdss.store import Spool
from tests.dicom_factory import make_image, write
from tests.peers import free_port
from tests.receive_support import dcmtk_binary


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=40, help="images sent over one association")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--columns", type=int, default=2048)
    parser.add_argument("--db-url", default=None, help="SQLAlchemy URL (default: SQLite in the temp dir)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="storage.fsync = false (throw-away nodes only)"
    )
    parser.add_argument("--max-pdu", type=int, default=131072, help="storescu --max-pdu (bytes)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where images/spool go (default: temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    configure_logging("WARNING")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cdss-bench-receive-"))
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    files = [
        write(make_image(rows=args.rows, columns=args.columns, bits=16, seed=i), images / f"{i:05d}.dcm")
        for i in range(args.count)
    ]
    wire_bytes = sum(f.stat().st_size for f in files)  # Part 10 size ~ dataset size on the wire

    settings = Settings.model_validate(
        {
            "dicom": {"port": free_port(), "bind": "127.0.0.1", "max_pdu_size": 0},
            "storage": {"path": str(work / "spool"), "min_free_mb": 64, "fsync": not args.no_fsync},
            "database": {"url": args.db_url or f"sqlite:///{work / 'cdss.db'}"},
            "jobs": {"max_queue_depth": 10**6},
        }
    )
    db = Database(settings.database.url)
    receiver = Receiver(settings, db, Spool(settings.storage), lambda _job: None)
    latencies: list[float] = []
    parts: dict[str, list[float]] = {"validate": [], "hash": [], "lookup": [], "spool": [], "commit": []}
    statuses: list[int] = []
    original = receiver.ingestor.ingest

    def timed(item):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        outcome: StoreOutcome = original(item)
        latencies.append(time.perf_counter() - t0)
        statuses.append(outcome.status)
        for key, value in outcome.timings.items():
            parts[key].append(value)
        return outcome

    receiver.ingestor.ingest = timed  # type: ignore[method-assign]
    receiver.start()
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [dcmtk_binary("storescu"), "-aet", "BENCH", "-aec", "CDSS", "--max-pdu", str(args.max_pdu)]
            + ["127.0.0.1", str(receiver.port)]
            + [str(f) for f in files],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
    finally:
        receiver.stop()
        db.dispose()
    if proc.returncode != 0 or statuses != [0] * args.count:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        raise SystemExit(f"not every C-STORE succeeded: {sorted(set(statuses))}")

    mb = wire_bytes / 1e6
    result = {
        "count": args.count,
        "image": f"{args.rows}x{args.columns}x16bit",
        "mb_per_image": round(mb / args.count, 2),
        "database": settings.database.url.split(":", 1)[0],
        "fsync": not args.no_fsync,
        "wall_s": round(wall, 2),
        "instances_per_s": round(args.count / wall, 1),
        "mb_per_s": round(mb / wall, 1),
        "handler_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p95": round(_pct(latencies, 0.95) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
        "handler_p50_ms_by_step": {k: round(statistics.median(v) * 1000, 1) for k, v in parts.items() if v},
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
