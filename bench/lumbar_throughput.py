"""Sustained end-to-end throughput of lateral lumbar images, by ``models.processes`` and
``jobs.batch_size``, same run.

For each combination a fresh ``cdss serve`` (SQLite with fsync, local backend, ``--workers``
threads; by default two per analysis process) with Orthanc as the PACS gets two warm-up images,
then a push of ``--images`` distinct synthetic lateral lumbar radiographs over one association;
the figure is images per minute from the start of the push until the last result object (SEG,
SR, GSPS) was delivered to Orthanc. The CPU time per image of the node and its child processes,
the mean batch the workers formed (``cdss_analysis_batch_size``) and the load average are
recorded with each figure.

Usage::

    python bench/lumbar_throughput.py                          # processes 0 vs 2, 60 images of 1024 px
    python bench/lumbar_throughput.py --processes 2 --images 240 --workers 6 --json out.json --plot p.png
    python bench/lumbar_throughput.py --processes 0 --batch-sizes 1,8   # batched inference
    python bench/lumbar_throughput.py --device cuda            # on a machine with a GPU
    python bench/lumbar_throughput.py --processes 0 --celery-workers 2  # scale-out path: PostgreSQL,
                                                               # the local RabbitMQ, 2 `cdss worker`

Measurement, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from tests.bench_helpers import cpu_seconds, drop_postgres, scratch_postgres  # noqa: E402
from tests.node_process import NodeProcess, require_models, storescu, synthetic_images  # noqa: E402
from tests.peers import run_orthanc  # noqa: E402


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _idle(db, total: int) -> bool:
    from cdss.db import Delivery, DeliveryState, Job, JobState

    with db.read_session() as s:
        done = s.execute(
            select(func.count()).select_from(Job).where(Job.state.in_([JobState.SUCCEEDED, JobState.DEAD]))
        ).scalar_one()
        open_ = s.execute(
            select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.DELIVERED)
        ).scalar_one()
    return done >= total and open_ == 0


def _mean_batch(api: str) -> float | None:
    try:
        text = httpx.get(f"{api}/metrics", timeout=120).text
    except httpx.HTTPError:
        return None
    s = re.search(r'cdss_analysis_batch_size_sum\{analysis="lumbar_lateral"\} ([0-9.e+]+)', text)
    n = re.search(r'cdss_analysis_batch_size_count\{analysis="lumbar_lateral"\} ([0-9.e+]+)', text)
    return round(float(s.group(1)) / float(n.group(1)), 1) if s and n and float(n.group(1)) else None


def _cpu(pids: list[int]) -> float:
    """CPU seconds of the node (with its analysis and receiver processes) and its workers."""
    return sum(cpu_seconds(pid, descendants=True) for pid in pids)


def _workers(args, processes: int) -> int:
    """jobs.workers: as given, or (0) two job threads per analysis process, at least two."""
    return args.workers if args.workers > 0 else max(2, 2 * processes)


def run_one(tmp: Path, pacs, files: list[Path], warm: list[Path], batch: int, processes: int, args) -> dict:
    job_threads = _workers(args, processes)
    jobs: dict[str, object] = {"batch_size": batch, "workers": job_threads, "batch_wait_s": args.batch_wait}
    db_url = None
    if args.celery_workers:
        db_url = scratch_postgres(args.postgres)
        jobs.update(
            backend="celery", broker_url=args.broker, celery_queue=f"cdss.bench.{uuid.uuid4().hex[:8]}"
        )
    node = NodeProcess(
        tmp / f"node-b{batch}-p{processes}",
        database_url=db_url,
        destinations=[{"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}],
        extra={
            "jobs": jobs,
            "models": {"device": args.device, "processes": processes},
            "dicom": {"reactor": args.reactor},
            "api": {"metrics_require_token": False},
            "logging": {"level": "WARNING"},
        },
    )
    node.start(timeout=300)
    assert node.proc is not None
    workers = []
    for i in range(args.celery_workers):
        with (node.workdir / f"worker{i}.log").open("wb") as log:
            workers.append(node._spawn("worker", log, "--concurrency", "1", "--hostname", f"w{i}@%h"))
    pids = [node.proc.pid] + [w.pid for w in workers]
    db = node.database()
    try:
        storescu(warm, node.dicom_port)
        while not _idle(db, len(warm)):
            time.sleep(0.2)
        load0, cpu0, t0 = _loadavg(), _cpu(pids), time.monotonic()
        r = storescu(files, node.dicom_port, timeout=3600)
        receive_s = time.monotonic() - t0
        if r.failed:
            raise SystemExit(f"push failed: {r.output[-2000:]}")
        while not _idle(db, len(warm) + len(files)):
            time.sleep(0.2)
        wall = time.monotonic() - t0
        cpu = _cpu(pids) - cpu0
        from cdss.db import Job, JobState

        with db.read_session() as s:
            dead = s.execute(
                select(func.count()).select_from(Job).where(Job.state == JobState.DEAD)
            ).scalar_one()
        return {
            "batch_size": batch,
            "processes": processes,
            "workers": job_threads,
            "images": len(files),
            "receive_s": round(receive_s, 1),
            "all_delivered_s": round(wall, 1),
            "images_per_min": round(len(files) / wall * 60, 1),
            "node_cpu_s_per_image": round(cpu / len(files), 3),
            "mean_batch": _mean_batch(f"http://127.0.0.1:{node.api_port}"),
            "dead_jobs": int(dead),
            "loadavg_before": load0,
            "loadavg_after": _loadavg(),
        }
    finally:
        db.dispose()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        node.stop()
        if db_url:
            drop_postgres(args.postgres, db_url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", default="1", help="jobs.batch_size values (default 1; e.g. 1,8)")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument(
        "--workers", type=int, default=0, help="jobs.workers (default 0: 2 per analysis process, at least 2)"
    )
    ap.add_argument("--batch-wait", type=float, default=0.0, help="jobs.batch_wait_s (default 0)")
    ap.add_argument("--device", default="auto", help="models.device (auto, cpu, cuda)")
    ap.add_argument(
        "--processes",
        default="0,2",
        help="models.processes values, each a run (default 0,2: models in the node's process, then "
        "analysis and encoding in 2 worker processes)",
    )
    ap.add_argument(
        "--reactor", default="waking", help="dicom.reactor of the node (waking, polling; default waking)"
    )
    ap.add_argument(
        "--celery-workers",
        type=int,
        default=0,
        metavar="N",
        help="scale-out path instead of local threads: jobs.backend = celery on a fresh PostgreSQL "
        "database and --broker, N `cdss worker --concurrency 1` processes (CPU counted with the node's)",
    )
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1/postgres")
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    require_models("lumbar")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    procs = [int(x) for x in args.processes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cdss-bench-lumbar-") as tmp_s:
        tmp = Path(tmp_s)
        files = synthetic_images(
            tmp / "push", [("lumbar_lateral", 2000 + i) for i in range(args.images)], max_side=args.max_side
        )
        warm = synthetic_images(
            tmp / "warm", [("lumbar_lateral", 1900), ("lumbar_lateral", 1901)], max_side=args.max_side
        )
        with run_orthanc(tmp / "orthanc") as pacs:
            for processes, batch in [(p, b) for p in procs for b in sizes]:
                row = run_one(tmp, pacs, files, warm, batch, processes, args)
                results.append(row)
                print(
                    f"  processes {processes}, workers {row['workers']}, batch {batch:3d}: "
                    f"{row['images_per_min']:6.1f} images/min, "
                    f"{row['node_cpu_s_per_image']:.3f} CPU s/image, mean batch {row['mean_batch']}, "
                    f"load {row['loadavg_before']:.2f}",
                    flush=True,
                )
    report = {
        "cpus": os.cpu_count(),
        "max_side": args.max_side,
        "celery_workers": args.celery_workers,
        "device": args.device,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        labels = [f"p{r['processes']} w{r['workers']} b{r['batch_size']}" for r in results]
        ax.bar(labels, [r["images_per_min"] for r in results], color="#4c72b0")
        ax.axhline(150, color="k", ls="--", lw=1, label="150 images/min")
        for i, r in enumerate(results):
            ax.text(
                i, r["images_per_min"], f"{r['images_per_min']:.0f}", ha="center", va="bottom", fontsize=8
            )
        ax.set(
            xlabel="models.processes (p), jobs.workers (w), jobs.batch_size (b)",
            ylabel="lateral lumbar images/min (C-STORE → in PACS)",
        )
        ax.legend(fontsize=8)
        ax.set_title(
            f"{args.images} images, {args.max_side} px, {os.cpu_count()} cores, "
            f"load {results[0]['loadavg_before']:.1f}-{max(r['loadavg_after'] for r in results):.1f}",
            fontsize=8,
        )
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
