"""Choose the lumbar inference settings on a VALIDATION set (never the held-out test set).

Runs the full analysis (:func:`cdss.train.evaluate.evaluate_lumbar`, slip/grade figures only)
for every combination of the given settings and prints slip MAE, grade accuracy, missing rate
and seconds per image, per variant and over all images. Example::

    python bench/lumbar_settings.py --data var/synth/lumbar-v2-valfull \\
        --weights var/train/lumbar/v2/run/weights/best.pt \\
        --imgsz 448 512 --flip-average 0 1 --edge-refine 0 1 --json var/eval/lumbar/settings.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdss.train.evaluate import evaluate_lumbar


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="validation images (DICOM + JSON)")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[448])
    parser.add_argument("--no-spine-crop", action="store_true")
    parser.add_argument("--flip-average", type=int, nargs="+", default=[0], help="0 and/or 1")
    parser.add_argument("--edge-refine", type=int, nargs="+", default=[0], help="0 and/or 1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    for imgsz, average, edges in itertools.product(args.imgsz, args.flip_average, args.edge_refine):
        settings = {
            "imgsz": imgsz,
            "spine_crop": not args.no_spine_crop,
            "flip_average": bool(average),
            "edge_refine": bool(edges),
            "torch_threads": args.threads,
        }
        with tempfile.TemporaryDirectory() as tmp:
            m = evaluate_lumbar(
                args.data,
                weights=args.weights,
                out=Path(tmp),
                device="cpu",
                with_map=False,
                with_plots=False,
                settings=settings,
                limit=args.limit,
            )
        for variant, v in m["variants"].items():
            rows.append(
                {
                    **settings,
                    "variant": variant,
                    "slip_mae": v["slip_mae"],
                    "slip_p95": v["slip_p95_abs_error"],
                    "grade_accuracy": v["grade_accuracy"],
                    "missing_rate": v["missing_rate"],
                    "listhesis_slip_mae": v["listhesis_slip_mae"],
                    "errors_above_15pp": v["errors_above_15pp"],
                    "s_p50": v["seconds_per_image_p50"],
                }
            )
            print(
                f"imgsz {imgsz} flip-avg {average} edges {edges} {variant:12s} MAE {v['slip_mae']:.2f} "
                f"P95 {v['slip_p95_abs_error']:.2f} grade {v['grade_accuracy']:.3f} "
                f"missing {v['missing_rate']:.3f} s/img {v['seconds_per_image_p50']:.2f}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
