"""Which image side the patient faces on a lateral lumbar radiograph.

Order of evidence (the first that decides wins; the result says which one was used):

1. **PatientOrientation (0020,0020)**: its first value is the patient direction of the image
   row (increasing column). ``A`` there means the patient faces the image right, ``P`` the image
   left. Empty or AP-type values (``L``/``R`` only) do not decide.
2. **Lordosis**: the lumbar spine is lordotic, i.e. convex anteriorly. The centroids of L2…L4
   lie anterior to the chord from the L1 centroid to the L5 centroid (the apex is normally at
   L3/L4). The mean signed offset of the intermediate centroids from that chord gives the
   anterior side when it exceeds :data:`LORDOSIS_MIN_FRACTION` of the median body width.
3. **Posterior elements**: pedicles, facets, laminae and the spinous process lie posterior to
   the vertebral bodies; anterior to them is soft tissue (and bowel gas). The mean grey level of
   bands beside each body, perpendicular to the spinal axis, is higher on the posterior side.

A flat (hypolordotic) spine on a file without PatientOrientation therefore falls back to the
posterior-element cue; the analysis writes the cue used into the result's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

__all__ = [
    "LORDOSIS_MIN_FRACTION",
    "AnteriorEstimate",
    "anterior_from_lordosis",
    "anterior_from_patient_orientation",
    "anterior_from_posterior_elements",
    "anterior_unit",
]

#: Minimum mean lordotic offset (fraction of the median body width) for the lordosis cue to decide.
LORDOSIS_MIN_FRACTION = 0.08


@dataclass(frozen=True)
class AnteriorEstimate:
    """``side`` is ``"left"`` or ``"right"`` (image columns); ``method`` names the evidence used."""

    side: str
    method: str
    detail: str = ""


def anterior_from_patient_orientation(ds: Dataset) -> AnteriorEstimate | None:
    """Anterior side from PatientOrientation's row direction; ``None`` when it does not say."""
    value = ds.get("PatientOrientation")
    if value is None:
        return None
    values = list(value) if not isinstance(value, str) else [v for v in value.split("\\")]
    if not values or not str(values[0]).strip():
        return None
    row_dir = str(values[0]).strip().upper()
    has_a, has_p = "A" in row_dir, "P" in row_dir
    if has_a == has_p:
        return None
    side = "right" if has_a else "left"
    return AnteriorEstimate(side, "PatientOrientation", f"row direction {row_dir!r}")


def _axis_normal(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    chord = last - first
    length = float(np.hypot(*chord))
    if length < 1e-6:
        return None
    down = chord / length
    normal = np.array([-down[1], down[0]])
    if normal[0] < 0:  # make the normal point to the image right
        normal = -normal
    return down, normal


def anterior_from_lordosis(centroids: list[np.ndarray], widths: list[float]) -> AnteriorEstimate | None:
    """Anterior side from the lordotic curve of the lumbar body centroids (L1…L5 order).

    Parameters
    ----------
    centroids
        Centroids (column, row) of the lumbar bodies found, cranial first; at least 3.
    widths
        Their widths (px), to scale the decision threshold.
    """
    if len(centroids) < 3:
        return None
    pts = np.asarray(centroids, dtype=float)
    axes = _axis_normal(pts[0], pts[-1])
    if axes is None:
        return None
    _, normal = axes
    offsets = (pts[1:-1] - pts[0]) @ normal
    mean = float(np.mean(offsets))
    scale = float(np.median(widths)) if widths else 1.0
    if abs(mean) < LORDOSIS_MIN_FRACTION * scale:
        return None
    side = "right" if mean > 0 else "left"
    return AnteriorEstimate(side, "lordosis", f"mean centroid offset {mean / scale:+.2f} body widths")


def anterior_from_posterior_elements(
    image: np.ndarray, centroids: list[np.ndarray], widths: list[float], heights: list[float]
) -> AnteriorEstimate | None:
    """Anterior side from where the brighter posterior elements lie beside the bodies.

    Parameters
    ----------
    image
        Display image (bone bright), any numeric type, ``(rows, columns)``.
    centroids, widths, heights
        Per body (cranial first): centroid (column, row), width and height (px). At least 2.
    """
    if len(centroids) < 2:
        return None
    pts = np.asarray(centroids, dtype=float)
    axes = _axis_normal(pts[0], pts[-1])
    if axes is None:
        return None
    down, normal = axes
    rows, cols = image.shape[:2]
    diffs = []
    for c, w, h in zip(pts, widths, heights, strict=True):
        means = []
        for sign in (+1.0, -1.0):
            samples = []
            for t in np.linspace(0.65, 1.2, 8):  # from just outside the wall to ~0.7 width beyond
                for s in np.linspace(-0.3, 0.3, 5):
                    p = c + sign * normal * t * w + down * s * h
                    col, row = round(p[0]), round(p[1])
                    if 0 <= row < rows and 0 <= col < cols:
                        samples.append(float(image[row, col]))
            means.append(float(np.mean(samples)) if samples else float("nan"))
        if not np.isnan(means).any():
            diffs.append(means[0] - means[1])  # right minus left
    if not diffs:
        return None
    diff = float(np.median(diffs))
    if diff == 0:
        return None
    side = "left" if diff > 0 else "right"  # brighter side is posterior
    return AnteriorEstimate(side, "posterior elements", f"right-minus-left grey difference {diff:+.3f}")


def anterior_unit(side: str, cranial: np.ndarray) -> np.ndarray:
    """Unit vector perpendicular to ``cranial`` pointing to the image ``side`` ("left"/"right")."""
    up = np.asarray(cranial, dtype=float)
    up = up / (np.hypot(*up) + 1e-12)
    normal = np.array([-up[1], up[0]])
    if (normal[0] > 0) != (side == "right"):
        normal = -normal
    return normal
