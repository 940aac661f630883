"""From a DICOM dataset to the grey image the analyses see.

Every analysis works on a single 2D frame in *display polarity* (bone bright, as MONOCHROME2
shows it), scaled to [0, 1]. The mapping is: stored values → Modality LUT (Rescale Slope /
Intercept or LUT) → VOI LUT or the first Window Center/Width when present, otherwise a robust
percentile window (0.5 % … 99.5 %) → inversion for MONOCHROME1. The pixel grid is unchanged,
so (column, row) coordinates on the result are source-image coordinates.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

__all__ = ["PixelDataError", "display_image", "to_uint8"]


class PixelDataError(ValueError):
    """The dataset's pixel data cannot be turned into a grey image; the message says why."""


def display_image(ds: Dataset, *, percentile_window: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Return the first frame of ``ds`` as float32 in [0, 1], shape ``(Rows, Columns)``, bone bright.

    Parameters
    ----------
    ds
        A dataset with Pixel Data (any transfer syntax with an installed decoder).
    percentile_window
        Lower and upper percentiles used when the dataset has no VOI LUT or window.

    Raises
    ------
    PixelDataError
        No Pixel Data, no decoder for the transfer syntax, or an unsupported photometric
        interpretation.
    """
    if "PixelData" not in ds:
        raise PixelDataError("dataset has no Pixel Data (7FE0,0010)")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing codecs / bad data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise PixelDataError(f"cannot decode Pixel Data (transfer syntax {ts}): {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples == 3 or photometric in {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}:
        rgb = arr.astype(np.float32)
        grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return _normalise(grey, percentile_window)
    if photometric not in {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}:
        raise PixelDataError(f"unsupported Photometric Interpretation {photometric!r}")
    modality = np.asarray(apply_modality_lut(arr, ds))
    values = modality.astype(np.float32)
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if has_voi:
        # A VOI LUT Sequence indexes by stored (integer) values: give it integers when the modality
        # output is integral (the usual case), floats only for a fractional rescale.
        voi_input = modality if np.issubdtype(modality.dtype, np.integer) else values
        if voi_input is values and np.array_equal(values, np.rint(values)):
            voi_input = values.astype(np.int64)
        try:
            values = np.asarray(apply_voi_lut(voi_input, ds, index=0, prefer_lut=True), dtype=np.float32)
        except Exception:  # malformed window values: fall back to percentiles
            has_voi = False
    img = _normalise(values, percentile_window if not has_voi else (0.0, 100.0))
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img


def _normalise(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = np.percentile(values, window) if window != (0.0, 100.0) else (values.min(), values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scale a [0, 1] float image to uint8 (0..255)."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
