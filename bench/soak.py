"""Soak run: the node at ``--factor`` x its own measured sustained rate for ``--minutes``, then drained.

See ``tests/soak.py`` for the phases (warm-up, calibration burst → sustained rate R, paced push of
distinct instances at factor x R, drain) and ``tests/test_soak.py`` for the CI form. Reports the
RSS / open files / threads of the node at the baseline (after calibration) and at the end (after
the drain), the peak queue, and whether every acknowledged image got its results; ``--plot``
draws RSS, open files, threads and queue depth over time.

Usage::

    python bench/soak.py                         # 5 minutes at 2x (plus the drain)
    python bench/soak.py --minutes 60 --json docs/bench/soak60.json --plot docs/images/soak-60min.png   # the documented hour
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers import run_orthanc  # noqa: E402
from tests.soak import SoakReport, run_soak  # noqa: E402


def plot(report: SoakReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in report.samples]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    series = [
        ("node RSS (MiB)", [s.rss_mib for s in report.samples]),
        ("open files", [s.open_files for s in report.samples]),
        ("threads", [s.threads for s in report.samples]),
        ("jobs queued or running", [s.queued for s in report.samples]),
    ]
    for ax, (label, values) in zip(axes.flat, series, strict=True):
        ax.plot(t, values)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, max(values) * 1.15 if values and max(values) else 1)
    for ax in axes[1]:
        ax.set_xlabel("minutes since the soak began")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to push (default 5)")
    ap.add_argument(
        "--factor", type=float, default=2.0, help="push rate / measured sustained rate (default 2)"
    )
    ap.add_argument("--pool", type=int, default=16, help="distinct synthetic images re-sent with new UIDs")
    ap.add_argument("--max-side", type=int, default=512, help="longest image side, pixels (default 512)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling period, seconds")
    ap.add_argument("--batch-size", type=int, default=None, help="jobs.batch_size (default: the node's)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    extra = {"jobs": {"batch_size": args.batch_size}} if args.batch_size else None
    with tempfile.TemporaryDirectory(prefix="cdss-soak-") as tmp_s:
        tmp = Path(tmp_s)
        with run_orthanc(tmp / "orthanc", extra={"MaximumStorageSize": 0}) as pacs:
            report = run_soak(
                tmp,
                pacs,
                minutes=args.minutes,
                factor=args.factor,
                pool_size=args.pool,
                max_side=args.max_side,
                sample_s=args.sample_s,
                node_extra=extra,
                progress=lambda msg: print(msg, flush=True),
            )
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    if args.json:
        data = {"summary": summary, "samples": [asdict(s) for s in report.samples]}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        plot(
            report,
            args.plot,
            f"{args.minutes:g} min at {args.factor:g}x the sustained {summary['rate_calibrated_per_min']} "
            f"images/min (lumbar lateral, {args.max_side} px); RSS {summary['rss_mib']} MiB, "
            f"load {summary['loadavg_start_end']}",
        )
    ok = report.drained and not report.missing_results and report.refused == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
