"""End-to-end node benchmark: C-STORE → results in the PACS, per image and for a batch push.

Starts Orthanc (the PACS) and ``cdss serve`` (defaults: SQLite, local backend, 1 worker, fsync on)
on free ports, pushes synthetic radiographs with DCMTK ``storescu`` and measures

* **latency**: for images sent one at a time, from the start of the C-STORE (storescu
  launched) until every result object of that image is stored in Orthanc (polled every 0.1 s),
  and the node's own view: instance ``received_at`` → last delivery ``delivered_at``;
* **throughput**: a push of ``--images`` images in one association: storescu time, then time
  until every result is delivered (images per minute);
* **peak RSS** of the node process (``VmHWM``), and the CPU it used.

Usage::

    python bench/node_e2e.py                      # 6 latency samples + 200-image push
    python bench/node_e2e.py --images 50 --json out.json
    python bench/node_e2e.py --lumbar-weights my.pt --cervical-weights my_cervical.pt

Numbers go to docs/operations.md ("Measured"). This is a measurement, not a test: it asserts
nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from tests.bench_helpers import cpu_seconds  # noqa: E402
from tests.node_process import NodeProcess, models_available, storescu, synthetic_images  # noqa: E402
from tests.peers import run_orthanc  # noqa: E402


def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _done(db, n_jobs: int) -> tuple[bool, int]:
    from cdss.db import Delivery, DeliveryState, Job, JobState

    with db.read_session() as s:
        finished = s.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.state.in_([JobState.SUCCEEDED, JobState.NOT_APPLICABLE, JobState.DEAD]))
        ).scalar_one()
        open_deliveries = s.execute(
            select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.DELIVERED)
        ).scalar_one()
    return finished >= n_jobs and open_deliveries == 0, finished


def _node_latencies(db, after_instance_id: int) -> list[float]:
    from cdss.db import Delivery, Instance, Job, Result

    with db.read_session() as s:
        rows = s.execute(
            select(Instance.received_at, func.max(Delivery.delivered_at))
            .join(Job, Job.instance_id == Instance.id)
            .join(Result, Result.job_id == Job.id)
            .join(Delivery, Delivery.result_id == Result.id)
            .where(Instance.id > after_instance_id)
            .group_by(Instance.id)
        ).all()
    return [(d - r).total_seconds() for r, d in rows if d is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200, help="images in the throughput push (default 200)")
    ap.add_argument("--latency-samples", type=int, default=6, help="images sent one by one (default 6)")
    ap.add_argument("--max-side", type=int, default=1024, help="longest image side, pixels (default 1024)")
    ap.add_argument("--workers", type=int, default=1, help="jobs.workers (default 1)")
    ap.add_argument("--lumbar-weights", type=Path, help="models.lumbar_weights (default: shipped)")
    ap.add_argument("--cervical-weights", type=Path, help="models.cervical_weights (default: shipped)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    models: dict[str, str] = {"device": "auto"}
    if args.lumbar_weights:
        models["lumbar_weights"] = str(args.lumbar_weights)
    if args.cervical_weights:
        models["cervical_weights"] = str(args.cervical_weights)
    from tests.node_process import SHIPPED

    lumbar_ok = args.lumbar_weights is not None or SHIPPED[0].is_file()
    cervical_ok = args.cervical_weights is not None or SHIPPED[1].is_file()
    if not (lumbar_ok and cervical_ok):
        _, missing = models_available()
        print(f"skipped: the shipped model weights are missing ({missing}); give --lumbar/--cervical-weights")
        return 0

    report: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {"workers": args.workers, "max_side": args.max_side, "fsync": True, "database": "sqlite"},
    }
    with tempfile.TemporaryDirectory(prefix="cdss-bench-") as tmp_s:
        tmp = Path(tmp_s)
        warm = [("lumbar_lateral", 900), ("cervical_oblique", 901)]
        warm_files = synthetic_images(tmp / "warm", warm, max_side=args.max_side)
        kinds = [
            ("lumbar_lateral", i) if i % 2 == 0 else ("cervical_oblique", i)
            for i in range(args.latency_samples)
        ]
        latency_files = synthetic_images(tmp / "latency", kinds, max_side=args.max_side)
        push_kinds = [
            ("lumbar_lateral", 1000 + i) if i % 2 == 0 else ("cervical_oblique", 1000 + i)
            for i in range(args.images)
        ]
        t0 = time.monotonic()
        push_files = synthetic_images(tmp / "push", push_kinds, max_side=args.max_side)
        print(f"generated {len(latency_files) + len(push_files)} images in {time.monotonic() - t0:.0f} s")

        with run_orthanc(tmp / "orthanc") as pacs:
            node = NodeProcess(
                tmp / "node",
                destinations=[
                    {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
                ],
                extra={"models": models, "jobs": {"workers": args.workers}, "logging": {"level": "WARNING"}},
            )
            t0 = time.monotonic()
            node.start(timeout=300)
            start_s = time.monotonic() - t0
            assert node.proc is not None
            pid = node.proc.pid
            db = node.database()
            # Warm-up images (not measured): the first job of each model otherwise pays for loading it.
            storescu(warm_files, node.dicom_port)
            while not _done(db, len(warm_files))[0]:
                time.sleep(0.2)
            warm_count = len(warm_files)
            # ---- latency, one image at a time
            latencies = []
            seen = len(pacs.instances())
            for i, f in enumerate(latency_files):
                t0 = time.monotonic()
                r = storescu([f], node.dicom_port)
                if r.failed:
                    raise SystemExit(f"storescu failed: {r.output[-1000:]}")
                while True:
                    done, _ = _done(db, warm_count + i + 1)
                    if done:
                        break
                    time.sleep(0.1)
                latencies.append(time.monotonic() - t0)
                n = len(pacs.instances())
                print(f"  {f.stem}: {latencies[-1]:.2f} s ({n - seen} objects)")
                seen = n
            node_lat = _node_latencies(db, warm_count)
            report["latency_s"] = {
                "samples": len(latencies),
                "wall_mean": round(statistics.mean(latencies), 2),
                "wall_max": round(max(latencies), 2),
                "wall_each": [round(x, 2) for x in latencies],
                "node_received_to_delivered_mean": round(statistics.mean(node_lat), 2) if node_lat else None,
            }
            # ---- throughput
            before = warm_count + len(latency_files)
            cpu0 = cpu_seconds(pid)
            t0 = time.monotonic()
            r = storescu(push_files, node.dicom_port, timeout=3600)
            push_s = time.monotonic() - t0
            while not _done(db, before + len(push_files))[0]:
                time.sleep(0.5)
            total_s = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu0
            status = _proc_status(pid)
            pacs_before = seen
            report["throughput"] = {
                "images": len(push_files),
                "acknowledged": len(r.acknowledged),
                "storescu_s": round(push_s, 1),
                "receive_images_per_s": round(len(push_files) / push_s, 1),
                "all_results_delivered_s": round(total_s, 1),
                "images_per_min": round(len(push_files) / total_s * 60, 1),
                "node_cpu_s": round(cpu, 1),
                "result_objects_in_pacs": len(pacs.instances()) - pacs_before,
            }
            from cdss.db import Job, Result

            with db.read_session() as sess:
                report["jobs"] = {
                    str(state.value): n
                    for state, n in sess.execute(select(Job.state, func.count()).group_by(Job.state)).all()
                }
                report["dead_jobs"] = [
                    {"job_id": jid, "analysis": analysis, "error": (err or "")[:300]}
                    for jid, analysis, err in sess.execute(
                        select(Job.id, Job.analysis, Job.last_error).where(Job.state == "dead")
                    ).all()
                ]
                report["results_by_kind"] = dict(
                    sess.execute(select(Result.kind, func.count()).group_by(Result.kind)).all()
                )
            report["node"] = {
                "start_to_banner_s": round(start_s, 1),
                "peak_rss_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
                "rss_at_end_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
                "threads": int(status["Threads"]),
            }
            db.dispose()
            node.stop()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
