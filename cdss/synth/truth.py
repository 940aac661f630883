"""Ground-truth JSON for a synthetic image (format: ``docs/dev/interfaces.md``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath
from pydicom.dataset import Dataset

from cdss.analysis.geometry import meyerding_grade, slip
from cdss.synth.acquisition import Acquisition

__all__ = [
    "GENERATOR_VERSION",
    "LISTHESIS_THRESHOLD_PERCENT",
    "dicom_block",
    "image_block",
    "lumbar_levels",
    "pts",
]

GENERATOR_VERSION = 1
#: Slips smaller than this are "no listhesis" in the ground truth (same threshold as the analysis).
LISTHESIS_THRESHOLD_PERCENT = 5.0
_LEVELS = (("L1", "L2"), ("L2", "L3"), ("L3", "L4"), ("L4", "L5"), ("L5", "S1"))


def pts(a: np.ndarray, ndigits: int = 2) -> list[list[float]]:
    """Points as a JSON list of ``[column, row]`` floats."""
    return [[round(float(x), ndigits), round(float(y), ndigits)] for x, y in np.asarray(a, float)]


def lumbar_levels(corners: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Slip and Meyerding grade of every lumbar level, from the final image-space corners."""
    out = []
    for upper, lower in _LEVELS:
        pct, _, _ = slip(corners[upper], corners[lower])
        grade, direction = meyerding_grade(pct, LISTHESIS_THRESHOLD_PERCENT)
        out.append(
            {
                "level": f"{upper}-{lower}",
                "upper": upper,
                "lower": lower,
                "slip_percent": round(pct, 3),
                "direction": direction.value,
                "grade": grade.value,
            }
        )
    return out


def image_block(ds: Dataset, acq: Acquisition, *, rotation_deg: float, scale: float) -> dict[str, Any]:
    return {
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "photometric": str(ds.PhotometricInterpretation),
        "bits_stored": int(ds.BitsStored),
        "pixel_spacing_mm": acq.recorded_spacing(),
        "imager_pixel_spacing_mm": [round(acq.imager_spacing_mm, 6)] * 2
        if acq.write_imager_spacing
        else None,
        "patient_pixel_spacing_mm": round(acq.patient_spacing_mm, 6),
        "rotation_deg": round(rotation_deg, 3),
        "scale": round(scale, 4),
        "noise_sigma": round(acq.noise_rel, 5),
        "variant_effects": list(acq.effects),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
    }


def dicom_block(ds: Dataset) -> dict[str, Any]:
    def get(keyword: str) -> Any:
        v = ds.get(keyword)
        if v is None:
            return None
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            return [str(x) for x in v]
        return str(v)

    return {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "modality": str(ds.Modality),
        "body_part_examined": get("BodyPartExamined"),
        "view_position": get("ViewPosition"),
        "image_laterality": get("ImageLaterality"),
        "laterality": get("Laterality"),
        "patient_orientation": get("PatientOrientation"),
        "presentation_intent_type": get("PresentationIntentType"),
        "series_description": get("SeriesDescription"),
        "protocol_name": get("ProtocolName"),
        "window_center": get("WindowCenter"),
        "window_width": get("WindowWidth"),
    }


def visible_fraction(outline: np.ndarray, shape: tuple[int, int], grid: int = 48) -> float:
    """Share of the polygon ``outline`` ((column, row) px) that lies inside an image of ``shape`` (rows, columns).

    Estimated on a ``grid`` × ``grid`` lattice over the polygon's bounding box (±1/grid).
    """
    poly = np.asarray(outline, dtype=float)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    pts_ = np.column_stack([gx.ravel(), gy.ravel()])
    inside = MplPath(poly).contains_points(pts_)
    if not inside.any():
        return 0.0
    rows, cols = shape
    q = pts_[inside]
    in_image = (q[:, 0] >= -0.5) & (q[:, 0] <= cols - 0.5) & (q[:, 1] >= -0.5) & (q[:, 1] <= rows - 0.5)
    return float(in_image.mean())


def thoracic_truth(
    corners: dict[str, np.ndarray], outlines: dict[str, np.ndarray], shape: tuple[int, int]
) -> dict[str, Any]:
    """Ground truth of the thoracic bodies drawn above L1 (T12, T11), image px, with their visible share.

    Only bodies at least partly inside the image are listed. Consumers that train a detector on
    every visible body (not only L1–S1) read this; the lumbar ``vertebrae`` map is unchanged.
    """
    out: dict[str, Any] = {}
    for name in ("T12", "T11"):
        if name not in corners or name not in outlines:
            continue
        frac = visible_fraction(outlines[name], shape)
        if frac <= 0.0:
            continue
        out[name] = {
            "corners": pts(corners[name], 3),
            "outline": pts(outlines[name]),
            "visible_fraction": round(frac, 3),
        }
    return out
