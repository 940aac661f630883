"""CPU inference time of the cervical analysis per image (p50 / p95), ROI detection included.

Each timed call is ``CervicalAnalyzer.analyse(ds, laterality=None)`` on an already read DICOM
dataset: display image → YOLO11n ROI detection (also infers the side) → crop → HE → flip →
STN → ResNet50. Reading the file from disk is excluded; decoding the pixel data is included
(``ds.pixel_array`` is not cached between runs because each run uses a fresh dataset copy).

Run::

    python bench/cervical_inference.py --data fixtures/heldout/cervical --threads 2 --repeat 3
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import pydicom
import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("fixtures/heldout/cervical"))
    parser.add_argument("--weights", type=Path, default=None, help="bundle (.pt); default: shipped")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from cdss.analysis.cervical import CervicalAnalyzer

    files = sorted(args.data.rglob("*.dcm"))[: args.limit]
    if not files:
        raise SystemExit(f"no .dcm files under {args.data}")
    t0 = time.perf_counter()
    analyzer = CervicalAnalyzer.load(args.weights, "cpu")
    load_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    analyzer.warm_up()
    datasets = [pydicom.dcmread(f) for f in files]
    times = []
    for _ in range(args.repeat):
        for ds in datasets:
            fresh = copy.deepcopy(ds)
            t = time.perf_counter()
            analyzer.analyse(fresh, None)
            times.append(time.perf_counter() - t)
    res = {
        "images": len(files),
        "runs": len(times),
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "p50_s": round(float(np.percentile(times, 50)), 3),
        "p95_s": round(float(np.percentile(times, 95)), 3),
        "mean_s": round(float(np.mean(times)), 3),
        "image_sizes": sorted({(int(d.Rows), int(d.Columns)) for d in datasets})[:3],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "imgsz": analyzer.meta.imgsz,
    }
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
