"""Encoding time and size per result object on a ~2000 x 2500 lateral lumbar DX.

Usage::

    nice -n 10 python bench/encode.py [--rows 2500 --columns 2000 --repeat 3]

Builds a synthetic MONOCHROME2 (and MONOCHROME1, JPEG 2000 compressed) DX with six vertebrae
and a grade I slip (``tests.result_factory``), then times each encoder separately (SEG, SR,
GSPS, SC) and the whole ``encode_results(..., include_sc=True)``, and the serialisation to
bytes. Every run parses the source afresh from in-memory bytes (pydicom caches decoded
pixels), so the SC and "all+SC" columns include reading and decoding the source pixels. Prints the median of
``--repeat`` runs and the object sizes. Numbers are reported in docs/results.md; nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test data factory lives in tests/

from cdss.config import ResultSettings
from cdss.encode import EncodedObject, ResultKind, encode_results
from cdss.encode.api import overlay_for_context
from cdss.encode.common import EncodeContext
from cdss.encode.gsps import encode_gsps
from cdss.encode.sc import encode_sc
from cdss.encode.seg import encode_seg
from cdss.encode.sr import encode_sr
from tests.result_factory import lumbar_result_from_gt, make_source, synthetic_lumbar_gt

CPU: dict[str, float] = {}


def _median_seconds(fn: Callable[[], object], repeat: int, key: str = "") -> float:
    """Median wall time; the median process CPU time goes to ``CPU[key]`` (steadier on a busy host)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if key:
        CPU[key] = statistics.median(cpu)
    return statistics.median(wall)


def run(rows: int, columns: int, repeat: int) -> None:
    settings = ResultSettings()
    gt = synthetic_lumbar_gt(rows, columns, slips={"L4-L5": 18.0, "L5-S1": -7.0})
    result = lumbar_result_from_gt(gt)
    variants = {
        "MONOCHROME2 uncompressed": make_source(gt, transfer_syntax=ExplicitVRLittleEndian),
        "MONOCHROME1 uncompressed": make_source(gt, photometric="MONOCHROME1"),
        "MONOCHROME2 JPEG 2000 lossless": make_source(gt, transfer_syntax=JPEG2000Lossless),
    }
    print(f"image {rows} x {columns}, {len(result.vertebrae)} vertebrae, median of {repeat} runs")
    print(
        f"{'source':32s} {'SEG':>7s} {'SR':>7s} {'GSPS':>7s} {'SC':>7s} {'all+SC':>7s} {'bytes':>7s}  (seconds)"
    )
    sizes: dict[ResultKind, int] = {}
    for label, source in variants.items():
        raw = EncodedObject(ResultKind.SC, source).to_bytes()  # the source as a Part 10 file

        def fresh(raw: bytes = raw) -> Dataset:
            return pydicom.dcmread(io.BytesIO(raw))

        ctx = EncodeContext(fresh(), result, settings)
        overlay = overlay_for_context(ctx)
        t_seg = _median_seconds(lambda ctx=ctx: encode_seg(ctx), repeat, "SEG")
        t_sr = _median_seconds(lambda ctx=ctx: encode_sr(ctx), repeat, "SR")
        t_gsps = _median_seconds(lambda ctx=ctx, ov=overlay: encode_gsps(ctx, ov), repeat, "GSPS")
        t_sc = _median_seconds(
            lambda ov=overlay, fresh=fresh: encode_sc(EncodeContext(fresh(), result, settings), ov),
            repeat,
            "SC",
        )
        objs: list[EncodedObject] = []

        def everything(fresh=fresh, objs=objs) -> None:  # type: ignore[no-untyped-def]
            objs[:] = encode_results(fresh(), result, settings, include_sc=True)

        t_all = _median_seconds(everything, repeat, "all")
        t_bytes = _median_seconds(lambda objs=objs: [o.to_bytes() for o in objs], repeat, "bytes")
        sizes = {o.kind: len(o.to_bytes()) for o in objs}
        print(
            f"{label:32s} {t_seg:7.3f} {t_sr:7.3f} {t_gsps:7.3f} {t_sc:7.3f} {t_all:7.3f} {t_bytes:7.3f}  wall"
        )
        cpu = " ".join(f"{CPU[k]:7.3f}" for k in ("SEG", "SR", "GSPS", "SC", "all", "bytes"))
        print(f"{'':32s} {cpu}  cpu")
    print("object sizes (bytes): " + ", ".join(f"{k.value} {v / 1e6:.2f} MB" for k, v in sizes.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2500)
    parser.add_argument("--columns", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run(args.rows, args.columns, args.repeat)


if __name__ == "__main__":
    main()
