"""View classifier latency on CPU, per image, at the sizes routing sees.

Times, for every ``*.dcm`` under ``--data`` (default: the committed held-out sets
``fixtures/heldout/view``) after one warm-up: reading + decoding, ``display_image``,
``ViewClassifier.classify`` (letterbox, input planes, image + mirror forward pass), and the
whole ``route()`` call with the classifier (which decodes the pixels itself). ``--size N``
first resamples every display image to a longest side of N pixels (e.g. 2500, a full-size DR
detector) to time the classifier on large inputs. Reports p50 / p95 / max milliseconds::

    python bench/view_inference.py --threads 1
    python bench/view_inference.py --threads 1 --size 2500 --json var/bench/view.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread

from cdss.analysis.pixels import display_image
from cdss.analysis.view.classifier import ViewClassifier
from cdss.config import RouteSettings
from cdss.route import route

ROOT = Path(__file__).resolve().parents[1]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.median(ms)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "max": round(float(np.max(ms)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "fixtures" / "heldout" / "view")
    ap.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=0, help="resample display images to this longest side")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    clf = ViewClassifier.load(args.weights, "cpu")
    files = sorted(args.data.rglob("*.dcm"))[: args.limit or None]
    if not files:
        print(f"no .dcm under {args.data}", file=sys.stderr)
        return 2
    clf.warm_up()
    read_ms, display_ms, classify_ms, route_ms = [], [], [], []
    settings = RouteSettings()
    for f in files:
        t0 = time.perf_counter()
        ds = dcmread(f)
        _ = ds.pixel_array
        t1 = time.perf_counter()
        img = display_image(ds)
        t2 = time.perf_counter()
        if args.size:
            h, w = img.shape
            k = args.size / max(h, w)
            img = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_LINEAR)
        t3 = time.perf_counter()
        clf.classify(img)
        t4 = time.perf_counter()
        route(ds, settings, "BENCH", clf)
        t5 = time.perf_counter()
        read_ms.append((t1 - t0) * 1000)
        display_ms.append((t2 - t1) * 1000)
        classify_ms.append((t4 - t3) * 1000)
        route_ms.append((t5 - t4) * 1000)
    report = {
        "images": len(files),
        "threads": args.threads,
        "size": args.size or "as stored",
        "model": f"{clf.info.name} {clf.info.version}",
        "read_decode_ms": _stats(read_ms),
        "display_image_ms": _stats(display_ms),
        "classify_ms": _stats(classify_ms),
        "route_with_classifier_ms": _stats(route_ms),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
