"""Keep family B's display attributes consistent through family A's transfer-syntax encoders."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from cdss.synth.transfer import TransferSyntax

__all__ = ["prepare_for_transfer"]


def prepare_for_transfer(ds: Dataset, truth: dict[str, Any], syntax: TransferSyntax | str) -> None:
    """Before JPEG Baseline (which rescales the stored values to 8 bits): replace a VOI LUT
    Sequence by the equivalent window and fold a rescale slope/intercept into the window, so
    the rescaled file displays as the original does. Other syntaxes are lossless: no change."""
    if TransferSyntax(syntax) is not TransferSyntax.JPEG_BASELINE:
        return
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        desc = [int(x) for x in item.LUTDescriptor]
        data = np.frombuffer(item.LUTData if isinstance(item.LUTData, bytes) else bytes(item.LUTData), "<u2")
        first = desc[1]
        lo_i = int(np.argmax(data > data.max() * 0.1))
        hi_i = int(np.argmax(data >= data.max() * 0.9))
        # the LUT is a logistic curve: its 10 … 90 % rise spans 1.1 window widths
        ctr, wid = first + (lo_i + hi_i) / 2, max(hi_i - lo_i, 2) / 1.1
        del ds.VOILUTSequence
        ds.WindowCenter = f"{ctr:.1f}"
        ds.WindowWidth = f"{wid:.1f}"
    if (slope, intercept) != (1.0, 0.0) and "WindowCenter" in ds:
        ds.WindowCenter = f"{(float(ds.WindowCenter) - intercept) / slope:.1f}"
        ds.WindowWidth = f"{float(ds.WindowWidth) / abs(slope):.1f}"
    for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if kw in ds and ds.Modality == "CR":
            del ds[kw]
    dicom = truth.get("dicom", {})
    dicom["voi"] = "window" if "WindowCenter" in ds else "none"
    dicom["rescale_slope"] = None if "RescaleSlope" not in ds else str(ds.RescaleSlope)
    dicom["rescale_intercept"] = None if "RescaleIntercept" not in ds else str(ds.RescaleIntercept)
    dicom["window_center"] = str(ds.WindowCenter) if "WindowCenter" in ds else None
    dicom["window_width"] = str(ds.WindowWidth) if "WindowWidth" in ds else None
