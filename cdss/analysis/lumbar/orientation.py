"""Which image side the patient faces on a lateral lumbar radiograph.

Order of evidence (the first that decides wins; the result says which one was used):

1. **PatientOrientation (0020,0020)**: its first value is the patient direction of the image
   row (increasing column), its second that of the column (increasing row). ``A`` in the row
   direction means the patient faces the image right, ``P`` the image left; on a film turned
   by a quarter (the spine lies across the image) ``A`` / ``P`` is in the column direction and
   the patient faces the image bottom / top. Empty or AP-type values (``L``/``R`` only) do not
   decide.
2. **Lordosis**: the lumbar spine is lordotic, i.e. convex anteriorly. The centroids of L2…L4
   lie anterior to the chord from the L1 centroid to the L5 centroid (the apex is normally at
   L3/L4). The mean signed offset of the intermediate centroids from that chord gives the
   anterior side when it exceeds :data:`LORDOSIS_MIN_FRACTION` of the median body width.
3. **Posterior elements**: pedicles, facets, laminae and the spinous process lie posterior to
   the vertebral bodies; anterior to them is soft tissue (and bowel gas). The mean grey level of
   bands beside each body, perpendicular to the spinal axis, is higher on the posterior side.

A flat (hypolordotic) spine on a file without PatientOrientation therefore falls back to the
posterior-element cue; the analysis writes the cue used into the result's notes.

The estimate is a direction in the image (``side``: ``left``, ``right``, ``up`` or ``down``, the
image direction the patient faces; the anatomical cues also keep their exact unit ``vector``).
The corners are then labelled with the perpendicular to each vertebra's cranial axis that points
that way (:func:`anterior_unit`), so a spine lying across a quarter-turned film is labelled as
well as an upright one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

__all__ = [
    "LORDOSIS_MIN_FRACTION",
    "SIDE_VECTORS",
    "AnteriorEstimate",
    "anterior_from_lordosis",
    "anterior_from_patient_orientation",
    "anterior_from_posterior_elements",
    "anterior_unit",
    "side_of",
]

#: Minimum mean lordotic offset (fraction of the median body width) for the lordosis cue to decide.
LORDOSIS_MIN_FRACTION = 0.08


#: Image direction (column, row) of each ``side`` name.
SIDE_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}


def side_of(vector: np.ndarray) -> str:
    """The ``side`` name (:data:`SIDE_VECTORS`) closest to an image direction (column, row)."""
    v = np.asarray(vector, dtype=float)
    return max(SIDE_VECTORS, key=lambda k: float(np.dot(SIDE_VECTORS[k], v)))


@dataclass(frozen=True)
class AnteriorEstimate:
    """Where the patient faces on the image.

    Attributes
    ----------
    side
        ``"left"``, ``"right"``, ``"up"`` or ``"down"``: the image direction the patient faces.
    method
        The evidence used (``PatientOrientation``, ``lordosis``, ``posterior elements``, ``default``).
    detail
        What the evidence said.
    vector
        The exact anterior direction (column, row) when the evidence gives one; ``None``: the
        direction of ``side``.
    """

    side: str
    method: str
    detail: str = ""
    vector: tuple[float, float] | None = None

    @property
    def direction(self) -> np.ndarray:
        """Unit anterior direction in the image, (column, row)."""
        return np.asarray(self.vector if self.vector is not None else SIDE_VECTORS[self.side], dtype=float)


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
    if has_a != has_p:
        side = "right" if has_a else "left"
        return AnteriorEstimate(side, "PatientOrientation", f"row direction {row_dir!r}")
    col_dir = str(values[1]).strip().upper() if len(values) > 1 else ""
    has_a, has_p = "A" in col_dir, "P" in col_dir
    if has_a != has_p and not any(c in row_dir for c in "AP"):
        side = "down" if has_a else "up"
        return AnteriorEstimate(side, "PatientOrientation", f"column direction {col_dir!r} (film turned)")
    return None


def _axis_normal(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Unit caudal axis of the chord ``first → last`` and one unit normal to it (fixed handedness)."""
    chord = last - first
    length = float(np.hypot(*chord))
    if length < 1e-6:
        return None
    down = chord / length
    return down, np.array([-down[1], down[0]])


def _estimate(normal: np.ndarray, sign: float, method: str, detail: str) -> AnteriorEstimate:
    vec = normal * (1.0 if sign > 0 else -1.0)
    return AnteriorEstimate(side_of(vec), method, detail, (float(vec[0]), float(vec[1])))


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
    return _estimate(normal, mean, "lordosis", f"mean centroid offset {abs(mean) / scale:.2f} body widths")


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
            diffs.append(means[0] - means[1])  # along the normal minus against it
    if not diffs:
        return None
    diff = float(np.median(diffs))
    if diff == 0:
        return None
    # the brighter side is posterior
    return _estimate(
        normal, -diff, "posterior elements", f"posterior-minus-anterior grey difference {abs(diff):.3f}"
    )


def anterior_unit(anterior: AnteriorEstimate | str, cranial: np.ndarray) -> np.ndarray:
    """Unit vector perpendicular to ``cranial`` pointing where ``anterior`` says (an estimate or a side name)."""
    towards = (
        anterior.direction if isinstance(anterior, AnteriorEstimate) else np.asarray(SIDE_VECTORS[anterior])
    )
    up = np.asarray(cranial, dtype=float)
    up = up / (np.hypot(*up) + 1e-12)
    normal = np.array([-up[1], up[0]])
    if float(normal @ towards) < 0:
        normal = -normal
    return normal
