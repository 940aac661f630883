"""Concurrent senders: 1, 2, 4, 8 simultaneous storescu associations into the node and into DCMTK
``storescp --fork``, measured in the same run.

For every sender count ``n`` the script starts a fresh receiver, launches ``n`` DCMTK
``storescu`` processes at once (each one association, ``--per-sender`` distinct DX images of
``--rows`` x ``--columns`` 16-bit pixels) and records

* the aggregate rate: dataset bytes of all images / (first storescu start → last one done), MB/s;
* the C-STORE latency seen by the modality: ``Sending Store Request`` → ``Received Store
  Response`` in storescu's log (millisecond timestamps), p50 and p95 over every image;
* every response status (each must be Success, or the run fails).

Receivers: **node** = ``cdss serve`` as a subprocess (SQLite, fsync of file and directory,
one DB commit per image, jobs.workers = 0 so nothing else competes), **storescp** = DCMTK
``storescp --fork`` (one process per association, writes files, no fsync). The machine load
(``/proc/loadavg``) is recorded before and after each measurement: on a shared machine compare
the two receivers of one run, not absolute figures of different runs.

Usage::

    python bench/concurrent_receive.py                     # 1,2,4,8 senders x 6 images of 8 MB
    python bench/concurrent_receive.py --per-sender 20 --json out.json --plot docs/images/concurrent_receive.png
    python bench/concurrent_receive.py --receiver-processes 2   # node with 2 receiver processes

This is a measurement, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bench_helpers import cpu_seconds, drop_postgres, scratch_postgres  # noqa: E402
from tests.dicom_factory import make_image, write  # noqa: E402
from tests.node_process import NodeProcess  # noqa: E402
from tests.peers import free_port, wait_for_port  # noqa: E402
from tests.receive_support import dcmtk_binary  # noqa: E402

LOG_CONFIG = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%q} %m%n
"""
_TS = r"(\d\d):(\d\d):(\d\d)\.(\d{3})"
_SEND = re.compile(_TS + r" Sending Store Request")
_RSP = re.compile(_TS + r" Received Store Response(?: \((.+)\))?")


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _seconds(m: re.Match[str]) -> float:
    h, mi, s, ms = (int(m.group(i)) for i in range(1, 5))
    return h * 3600 + mi * 60 + s + ms / 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class SenderLog:
    latencies_s: list[float]
    statuses: list[str]
    returncode: int
    tail: str


def parse_storescu_log(text: str) -> SenderLog:
    """Per-image C-STORE latencies (request sent → response received) and response statuses."""
    latencies, statuses = [], []
    sent: float | None = None
    for line in text.splitlines():
        m = _SEND.match(line)
        if m:
            sent = _seconds(m)
            continue
        m = _RSP.match(line)
        if m and sent is not None:
            elapsed = _seconds(m) - sent
            latencies.append(elapsed + 86400 if elapsed < 0 else elapsed)  # past midnight
            statuses.append(m.group(5) or "?")
            sent = None
    return SenderLog(latencies, statuses, 0, text[-2000:])


def push(
    files_per_sender: list[list[Path]], port: int, aec: str, log_cfg: Path
) -> tuple[float, list[SenderLog]]:
    """Run one storescu per file list at the same time; return the wall time and their logs."""
    exe = dcmtk_binary("storescu")
    procs = []
    t0 = time.perf_counter()
    for i, files in enumerate(files_per_sender):
        cmd = [exe, "-lc", str(log_cfg), "-aet", f"MOD{i:02d}", "-aec", aec, "127.0.0.1", str(port)]
        procs.append(
            subprocess.Popen(
                [*cmd, *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    wall = time.perf_counter() - t0
    logs = []
    for p, out in zip(procs, outputs, strict=True):
        log = parse_storescu_log(out)
        log.returncode = p.returncode
        logs.append(log)
    return wall, logs


class Storescp:
    """DCMTK storescp --fork on a free port, writing into ``out``."""

    def __init__(self, out: Path):
        self.out = out
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Storescp:
        self.out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk_binary("storescp"), "--fork", "-aet", "CDSS", "-od", str(self.out), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, 15)  # the listener and any forked children (this run's own)
        self.proc.wait(timeout=20)


def measure(
    name: str,
    files_per_sender: list[list[Path]],
    port: int,
    log_cfg: Path,
    mb: float,
    cpu_pid: int | None = None,
) -> dict[str, object]:
    load_before = loadavg()
    cpu_before = cpu_seconds(cpu_pid, descendants=True) if cpu_pid else 0.0
    wall, logs = push(files_per_sender, port, "CDSS", log_cfg)
    cpu = cpu_seconds(cpu_pid, descendants=True) - cpu_before if cpu_pid else None
    latencies = [x for log in logs for x in log.latencies_s]
    statuses = [s for log in logs for s in log.statuses]
    expected = sum(len(f) for f in files_per_sender)
    if (
        len(statuses) != expected
        or any(not s.startswith("Success") for s in statuses)
        or any(log.returncode for log in logs)
    ):
        bad = next((log.tail for log in logs if log.returncode or len(log.statuses) == 0), logs[0].tail)
        raise SystemExit(f"{name}: not every C-STORE succeeded ({len(statuses)}/{expected}):\n{bad}")
    return {
        "receiver": name,
        "senders": len(files_per_sender),
        "images": expected,
        "wall_s": round(wall, 2),
        "aggregate_mb_per_s": round(mb / wall, 1),
        "images_per_s": round(expected / wall, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p95": round(pct(latencies, 0.95) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        **({"receiver_cpu_ms_per_image": round(cpu / expected * 1000, 1)} if cpu is not None else {}),
    }


def idle_cpu(port: int, pid: int, associations: int, seconds: float = 10.0) -> dict[str, object]:
    """Receiver CPU (percent of one core) while ``associations`` established associations sit idle
    (modalities that keep their association open between studies)."""
    from pynetdicom import AE

    from tests.dicom_factory import DX_PRESENTATION

    ae = AE(ae_title="IDLE")
    ae.add_requested_context(DX_PRESENTATION)
    ae.network_timeout = seconds + 60
    held = [ae.associate("127.0.0.1", port, ae_title="CDSS") for _ in range(associations)]
    try:
        if not all(a.is_established for a in held):
            raise SystemExit("idle measurement: an association was not established")
        time.sleep(1.0)
        before = cpu_seconds(pid, descendants=True)
        time.sleep(seconds)
        used = cpu_seconds(pid, descendants=True) - before
    finally:
        for a in held:
            a.release()
    return {"associations": associations, "seconds": seconds, "cpu_percent": round(100 * used / seconds, 1)}


def _node_name(processes: int, reactor: str | None = None) -> str:
    name = f"node, {processes} receiver process{'es' if processes > 1 else ''}"
    return f"{name}, {reactor} reactors" if reactor else name


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    receivers = sorted({r["receiver"] for r in results}, key=lambda name: (name.startswith("node"), name))
    styles = ["s--", "o-", "^-", "v-", "d-"]
    for receiver, style in zip(receivers, styles, strict=False):
        rows = [r for r in results if r["receiver"] == receiver]
        if not rows:
            continue
        n = [r["senders"] for r in rows]
        (line,) = ax1.plot(n, [r["aggregate_mb_per_s"] for r in rows], style, label=receiver)
        ax2.plot(
            n, [r["latency_ms"]["p50"] for r in rows], style, color=line.get_color(), label=f"{receiver} p50"
        )
        ax2.plot(
            n,
            [r["latency_ms"]["p95"] for r in rows],
            style,
            color=line.get_color(),
            alpha=0.4,
            label=f"{receiver} p95",
        )
    ax1.set(
        xlabel="simultaneous storescu associations", ylabel="aggregate MB/s", xscale="log", ylim=(0, None)
    )
    ax2.set(xlabel="simultaneous storescu associations", ylabel="C-STORE latency (ms)", xscale="log")
    for ax in (ax1, ax2):
        ax.set_xticks([1, 2, 4, 8], labels=["1", "2", "4", "8"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--senders", default="1,2,4,8", help="comma-separated sender counts (default 1,2,4,8)")
    ap.add_argument("--per-sender", type=int, default=6, help="distinct images per association (default 6)")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--columns", type=int, default=2048)
    ap.add_argument(
        "--receiver-processes",
        default="1,2",
        help="node variants to measure: comma-separated dicom.receiver_processes (default 1,2)",
    )
    ap.add_argument(
        "--reactors",
        default="waking",
        help="node variants: comma-separated dicom.reactor values (waking, polling; default waking)",
    )
    ap.add_argument(
        "--postgres",
        default=None,
        metavar="ADMIN_URL",
        help="node database: a fresh PostgreSQL database per node (created and dropped through this "
        "admin URL, e.g. postgresql+psycopg://postgres@127.0.0.1/postgres); default SQLite",
    )
    ap.add_argument(
        "--no-fsync",
        action="store_true",
        help="node: storage.fsync = false (diagnosis only: what fsync costs)",
    )
    ap.add_argument(
        "--idle",
        type=int,
        default=0,
        metavar="N",
        help="also measure each node's CPU while N associations sit idle for 10 s (default: not measured)",
    )
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--plot", type=Path, help="write the PNG plot here")
    ap.add_argument("--workdir", type=Path, help="keep images and spools here (default: temp dir)")
    ap.add_argument("--replot", type=Path, help="only draw --plot again from this --json output")
    args = ap.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["results"], args.plot, saved.get("plot_title", ""))
        return 0
    counts = [int(x) for x in args.senders.split(",")]
    processes = [int(x) for x in args.receiver_processes.split(",")]
    reactors = [x.strip() for x in args.reactors.split(",")]
    variants = [(rp, r if len(reactors) > 1 else None) for rp in processes for r in reactors]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cdss-bench-concurrent-"))
    work.mkdir(parents=True, exist_ok=True)
    log_cfg = work / "log.cfg"
    log_cfg.write_text(LOG_CONFIG)
    t0 = time.monotonic()
    senders = max(counts)
    files = [
        [
            write(
                make_image(rows=args.rows, columns=args.columns, bits=16, seed=s * 1000 + i),
                work / "images" / f"s{s}" / f"{i:04d}.dcm",
            )
            for i in range(args.per_sender)
        ]
        for s in range(senders)
    ]
    print(f"generated {senders * args.per_sender} images in {time.monotonic() - t0:.0f} s", flush=True)
    mb_per_image = statistics.mean(f.stat().st_size for group in files for f in group) / 1e6

    report: dict[str, object] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "host": socket.gethostname(),
        },
        "image": f"{args.rows}x{args.columns}x16bit",
        "mb_per_image": round(mb_per_image, 2),
        "per_sender": args.per_sender,
        "node_settings": {
            "database": "postgresql" if args.postgres else "sqlite",
            "fsync": not args.no_fsync,
            "receiver_processes": processes,
            "reactors": reactors,
        },
    }
    results: list[dict] = []
    for n in counts:
        group = files[:n]
        mb = sum(f.stat().st_size for g in group for f in g) / 1e6
        # storescp --fork
        with Storescp(work / f"storescp-{n}") as scp:
            results.append(measure("storescp --fork", group, scp.port, log_cfg, mb))
        shutil.rmtree(work / f"storescp-{n}", ignore_errors=True)
        # the node (fresh database and spool each time: every image is new to it)
        for rp, reactor in variants:
            dicom: dict[str, object] = {
                "max_associations": 64,
                "receiver_processes": rp,
                "reactor": reactor or reactors[0],
            }
            db_url = scratch_postgres(args.postgres) if args.postgres else None
            node = NodeProcess(
                work / f"node-{n}-{rp}-{reactor or reactors[0]}",
                database_url=db_url,
                extra={
                    "dicom": dicom,
                    "storage": {"fsync": not args.no_fsync},
                    "api": {"enabled": False},
                    "jobs": {"workers": 0, "max_queue_depth": 10**6},
                    "logging": {"level": "WARNING"},
                    "route": {"view_classifier": False},
                },
            )
            node.start(timeout=120)
            try:
                assert node.proc is not None
                name = _node_name(rp, reactor)
                results.append(measure(name, group, node.dicom_port, log_cfg, mb, cpu_pid=node.proc.pid))
                if args.idle and n == counts[-1]:
                    results[-1]["idle"] = idle_cpu(node.dicom_port, node.proc.pid, args.idle)
                    print(
                        f"  {name}: {args.idle} idle associations: {results[-1]['idle']['cpu_percent']} % CPU"
                    )
            finally:
                node.stop()
                if db_url:
                    drop_postgres(args.postgres, db_url)
            shutil.rmtree(work / f"node-{n}-{rp}-{reactor or reactors[0]}", ignore_errors=True)
        for r in results[-1 - len(variants) :]:
            print(
                f"  {r['receiver']:16s} {n} sender(s): {r['aggregate_mb_per_s']:7.1f} MB/s  "
                f"p50 {r['latency_ms']['p50']:7.1f} ms  p95 {r['latency_ms']['p95']:7.1f} ms  "
                f"load {r['loadavg_before'][0]:.2f}"
                + (
                    f"  CPU {r['receiver_cpu_ms_per_image']:.0f} ms/image"
                    if "receiver_cpu_ms_per_image" in r
                    else ""
                ),
                flush=True,
            )
    report["results"] = results
    ratios: dict[str, dict[str, float]] = {}
    for rp, reactor in variants:
        ratios[_node_name(rp, reactor)] = {}
        for n in counts:
            node_r = next(
                r for r in results if r["receiver"] == _node_name(rp, reactor) and r["senders"] == n
            )
            scp_r = next(r for r in results if r["receiver"] == "storescp --fork" and r["senders"] == n)
            ratios[_node_name(rp, reactor)][str(n)] = round(
                node_r["aggregate_mb_per_s"] / scp_r["aggregate_mb_per_s"], 2
            )
    report["node_over_storescp"] = ratios
    title = (
        f"{report['image']} DX ({mb_per_image:.1f} MB), {args.per_sender} per association; node: "
        f"{report['node_settings']['database']}, {'fsync' if not args.no_fsync else 'NO fsync'}, "
        f"load {results[0]['loadavg_before'][0]:.1f}-{max(r['loadavg_after'][0] for r in results):.1f} "
        f"on {os.cpu_count()} cores"
    )
    report["plot_title"] = title
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot, title)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
