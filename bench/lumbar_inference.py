"""Lumbar analysis latency on CPU: DICOM file → LumbarResult, per image.

Times the whole per-image path the worker runs — ``pydicom.dcmread`` + pixel decode,
display image, resize, every YOLO pass the weights ask for (whole image, spine crop, mirrored
crop; ``retina_masks``), naming from anatomy, outline and corner fitting, edge refinement,
orientation, levels, abstention — i.e.
``LumbarAnalyzer.analyse`` — for every ``*.dcm`` under ``--data`` (default: the committed
held-out fixture), after one warm-up image, and reports p50 / p95 / max seconds; the split into
reading + display image, model forward passes and the rest is reported at p50.
``--threads`` sets torch's CPU threads after the model is loaded (Ultralytics resets them on
load); ``--no-edge-refine`` times the analysis without the edge refinement. Example::

    python bench/lumbar_inference.py --threads 2
    python bench/lumbar_inference.py --data var/synth/lumbar-heldout --limit 40 --json var/bench/lumbar.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom

from cdss.analysis.lumbar import LumbarAnalyzer
from cdss.analysis.types import LumbarView

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT / "fixtures" / "heldout" / "lumbar")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0 = all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--no-edge-refine", action="store_true", help="switch the edge refinement off")
    args = parser.parse_args()

    import torch

    files = sorted(args.data.rglob("*.dcm"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise SystemExit(f"no DICOM files under {args.data}")
    t0 = time.perf_counter()
    analyzer = LumbarAnalyzer.load(args.weights, args.device)
    load_s = time.perf_counter() - t0
    analyzer.torch_threads = args.threads
    if args.no_edge_refine:
        analyzer.edge_refine = False
    analyzer.analyse(pydicom.dcmread(files[0]), LumbarView.LATERAL)  # warm-up
    predict = analyzer._predict
    model_s = [0.0]

    def timed_predict(*a: object, **kw: object) -> object:
        t = time.perf_counter()
        try:
            return predict(*a, **kw)  # type: ignore[arg-type]
        finally:
            model_s[0] += time.perf_counter() - t

    analyzer._predict = timed_predict  # type: ignore[method-assign]
    total, pre, model, post = [], [], [], []
    for f in files:
        model_s[0] = 0.0
        t_start = time.perf_counter()
        ds = pydicom.dcmread(f)
        ds.pixel_array  # noqa: B018 - decode here, to report it with the reading
        t_pre = time.perf_counter()
        analyzer.analyse(ds, LumbarView.LATERAL)
        t_end = time.perf_counter()
        total.append(t_end - t_start)
        pre.append(t_pre - t_start)
        model.append(model_s[0])
        post.append(t_end - t_pre - model_s[0])
    result = {
        "images": len(files),
        "device": analyzer.device,
        "torch_threads": torch.get_num_threads(),
        "imgsz": analyzer.imgsz,
        "spine_crop": analyzer.spine_crop,
        "flip_average": analyzer.flip_average,
        "edge_refine": analyzer.edge_refine,
        "load_s": round(load_s, 3),
        "p50_s": round(float(np.percentile(total, 50)), 3),
        "p95_s": round(float(np.percentile(total, 95)), 3),
        "max_s": round(float(np.max(total)), 3),
        "read_decode_p50_s": round(float(np.percentile(pre, 50)), 3),
        "model_passes_p50_s": round(float(np.percentile(model, 50)), 3),
        "rest_p50_s": round(float(np.percentile(post, 50)), 3),
        "image_size_median": [
            int(np.median([pydicom.dcmread(f, stop_before_pixels=True).Rows for f in files])),
            int(np.median([pydicom.dcmread(f, stop_before_pixels=True).Columns for f in files])),
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
