"""Writing sets of synthetic images (DICOM + ground-truth JSON) to a directory, in parallel."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from pydicom.dataset import Dataset

from cdss.synth.acquisition import Variant
from cdss.synth.family_b import prepare_for_transfer
from cdss.synth.generator import Kind, generate, generate_pair
from cdss.synth.transfer import TransferSyntax, apply_transfer_syntax

__all__ = ["Written", "file_stem", "write_dataset", "write_one"]


@dataclass(frozen=True)
class Written:
    """One written image: paths and how long generating + encoding + writing took."""

    dicom: Path
    truth: Path
    seconds: float


def file_stem(kind: Kind | str, seed: int, index: int, variant: Variant | str, family: str = "a") -> str:
    """File name stem: ``<kind>_<variant>_s<seed>_<index:05d>`` (family a) or
    ``<kind>_b_<variant>_s<seed>_<index:05d>`` (family b), so both can share a folder."""
    fam = "" if family == "a" else f"{family}_"
    return f"{Kind(kind).value}_{fam}{Variant(variant).value}_s{int(seed)}_{int(index):05d}"


def save(ds: Dataset, truth: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.dcm`` and ``<stem>.json`` (the DICOM in its file-meta transfer syntax)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dcm = out_dir / f"{stem}.dcm"
    js = out_dir / f"{stem}.json"
    truth.setdefault("image", {})["transfer_syntax"] = str(ds.file_meta.TransferSyntaxUID)
    truth["image"]["bits_stored"] = int(ds.BitsStored)
    if "dicom" in truth:
        truth["dicom"]["sop_instance_uid"] = str(ds.SOPInstanceUID)
    if "window_center" in truth.get("dicom", {}) and "WindowCenter" in ds:
        truth["dicom"]["window_center"] = str(ds.WindowCenter)
        truth["dicom"]["window_width"] = str(ds.WindowWidth)
    truth["file"] = dcm.name
    ds.save_as(dcm, enforce_file_format=True)
    js.write_text(json.dumps(truth, indent=1) + "\n")
    return dcm, js


def write_one(
    out_dir: Path | str,
    kind: Kind | str,
    seed: int,
    index: int,
    variant: Variant | str = Variant.STANDARD,
    transfer_syntax: TransferSyntax | str = TransferSyntax.EXPLICIT,
    **options: Any,
) -> Written:
    """Generate, encode and write one image; returns the paths and the time taken.

    With ``pair=True`` the acquisition is written twice, DX For Processing (``<stem>_proc``)
    and DX For Presentation (``<stem>_pres``); the returned paths are the presentation's.
    """
    t0 = time.perf_counter()
    family = options.get("family", "a")
    stem = file_stem(kind, seed, index, variant, family)
    if options.pop("pair", False):
        written = []
        for (ds, truth), suffix in zip(
            generate_pair(kind, seed=seed, index=index, variant=variant, **options),
            ("proc", "pres"),
            strict=True,
        ):
            apply_transfer_syntax(ds, transfer_syntax)
            written.append(save(ds, truth, Path(out_dir), f"{stem}_{suffix}"))
        dcm, js = written[-1]
        return Written(dcm, js, time.perf_counter() - t0)
    ds, truth = generate(kind, seed=seed, index=index, variant=variant, **options)
    if family == "b":
        prepare_for_transfer(ds, truth, transfer_syntax)
    apply_transfer_syntax(ds, transfer_syntax)
    dcm, js = save(ds, truth, Path(out_dir), stem)
    return Written(dcm, js, time.perf_counter() - t0)


def _init_worker() -> None:
    # one thread per process: OpenCV/NumPy must not oversubscribe the shared cores
    cv2.setNumThreads(1)


def write_dataset(
    out_dir: Path | str,
    kind: Kind | str,
    count: int,
    seed: int,
    variant: Variant | str = Variant.STANDARD,
    workers: int = 1,
    transfer_syntax: TransferSyntax | str = TransferSyntax.EXPLICIT,
    *,
    start_index: int = 0,
    progress: Callable[[Written], None] | None = None,
    **options: Any,
) -> list[Written]:
    """Write ``count`` images ``start_index … start_index+count-1`` of one kind to ``out_dir``.

    Parameters
    ----------
    out_dir
        Target directory (created).
    kind, seed, variant
        See :func:`cdss.synth.generate`.
    count
        Number of images.
    workers
        Processes to use (1 = in this process).
    transfer_syntax
        Encoding of the DICOM files (:class:`~cdss.synth.transfer.TransferSyntax`).
    start_index
        First image index (lets several calls extend one set).
    progress
        Called after every written image (in the parent process).
    options
        Passed to :func:`cdss.synth.generate` (e.g. ``laterality`` for cervical views,
        ``family="b"`` for the second synthetic family).

    Returns
    -------
    list[Written]
        In index order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(start_index, start_index + count)
    results: dict[int, Written] = {}
    if workers <= 1:
        _init_worker()
        for i in indices:
            w = write_one(out, kind, seed, i, variant, transfer_syntax, **options)
            results[i] = w
            if progress:
                progress(w)
    else:
        with ProcessPoolExecutor(
            max_workers=min(workers, os.cpu_count() or 1), initializer=_init_worker
        ) as pool:
            futures = {
                pool.submit(write_one, out, kind, seed, i, variant, transfer_syntax, **options): i
                for i in indices
            }
            for fut in as_completed(futures):
                w = fut.result()
                results[futures[fut]] = w
                if progress:
                    progress(w)
    return [results[i] for i in indices]
