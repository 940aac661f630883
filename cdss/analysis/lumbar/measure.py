"""From per-vertebra outlines to labelled corners and level measurements (model independent).

Input: for each vertebra found, its outline polygon in source pixels (and optionally its mask).
Output: :class:`~cdss.analysis.types.VertebraSegment` with corners in the lateral (or AP) order,
and one :class:`~cdss.analysis.types.LevelMeasurement` per level of
:data:`~cdss.analysis.types.LUMBAR_LEVELS` — ``MISSING`` whenever a vertebra of the pair was
not found (never interpolated or guessed).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cdss.analysis.geometry import meyerding_grade, slip
from cdss.analysis.lumbar.corners import fit_corners, label_corners
from cdss.analysis.lumbar.orientation import AnteriorEstimate, anterior_unit
from cdss.analysis.types import (
    LUMBAR_LEVELS,
    LevelMeasurement,
    LevelStatus,
    LumbarView,
    MeyerdingGrade,
    SlipDirection,
    Vertebra,
    VertebraSegment,
)

__all__ = [
    "Found",
    "cranial_directions",
    "fill_outline",
    "measure_levels",
    "quadrilateral_fit",
    "segments_from_outlines",
]


@dataclass
class Found:
    """A vertebra found by the model: its outline (source px), confidence and optional mask."""

    label: Vertebra
    outline: np.ndarray
    confidence: float
    mask: np.ndarray | None = None


def fill_outline(outline: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of ``shape`` (rows, columns) inside the closed polygon ``outline`` (sub-pixel vertices)."""
    mask = np.zeros(shape, dtype=np.uint8)
    shift = 4
    pts = np.round(np.asarray(outline, dtype=float) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def quadrilateral_fit(mask: np.ndarray, corners: np.ndarray, outline: np.ndarray | None = None) -> float:
    """Intersection over union of a body's mask and the quadrilateral of its four corners.

    Parameters
    ----------
    mask
        Boolean ``(rows, columns)`` mask of the body, source pixels.
    corners
        ``(4, 2)`` (column, row) corners in cyclic order (any labelled order of
        :func:`~cdss.analysis.lumbar.corners.label_corners` is cyclic).
    outline
        The mask's outline ``(N, 2)`` (column, row), when known: its bounding box is then used
        instead of searching the whole mask (a full-size film has millions of pixels).

    Returns
    -------
    float
        In [0, 1]: about 0.8-0.95 for a body-shaped mask (its corners are rounded, the
        quadrilateral's are not), low when the mask has a tail, a hole or a missing part. Only
        the bounding box of the two shapes is rasterised.
    """
    m = np.asarray(mask, dtype=bool)
    c = np.asarray(corners, dtype=float).reshape(4, 2)
    if outline is not None and len(outline):
        pts = np.asarray(outline, dtype=float).reshape(-1, 2)
        cols = np.array([np.floor(pts[:, 0].min()), np.ceil(pts[:, 0].max())])
        rows = np.array([np.floor(pts[:, 1].min()), np.ceil(pts[:, 1].max())])
    else:
        rows, cols = np.nonzero(m)
    if len(rows) == 0:
        return 0.0
    pad = 2  # the outline runs through boundary pixel centres
    r0 = max(0, int(min(rows.min(), np.floor(c[:, 1].min()))) - pad)
    r1 = min(m.shape[0], int(max(rows.max(), np.ceil(c[:, 1].max()))) + 1 + pad)
    c0 = max(0, int(min(cols.min(), np.floor(c[:, 0].min()))) - pad)
    c1 = min(m.shape[1], int(max(cols.max(), np.ceil(c[:, 0].max()))) + 1 + pad)
    sub = m[r0:r1, c0:c1]
    quad = fill_outline(c - np.array([c0, r0], dtype=float), sub.shape)
    union = int(np.count_nonzero(sub | quad))
    return float(np.count_nonzero(sub & quad)) / union if union else 0.0


def _unit(vec: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*vec))
    return vec / n if n > 1e-9 else np.array([0.0, -1.0])


def cranial_directions(centroids: dict[Vertebra, np.ndarray]) -> dict[Vertebra, np.ndarray]:
    """Per vertebra, a unit vector towards the head, from the neighbours' centroids.

    Uses the centroid of the next vertebra up and/or down (class order L1 … S1); S1 points
    between L5 and L4 (a far-slipped L5 lies in front of it); a vertebra alone gets the image
    "up" direction ``(0, -1)``.
    """
    order = [v for v in Vertebra if v in centroids]
    result: dict[Vertebra, np.ndarray] = {}
    for i, v in enumerate(order):
        above = centroids[order[i - 1]] if i > 0 else None
        below = centroids[order[i + 1]] if i + 1 < len(order) else None
        if v is Vertebra.S1 and above is not None:
            # The sacrum faces L5: its superior endplate is the side towards L5. With a high-grade
            # slip L5 lies *in front of* S1, so the direction to L4 is averaged in: it keeps the
            # superior side superior (not the anterior wall) without losing a steep sacral slope.
            vec = _unit(above - centroids[v])
            if i >= 2:
                vec = vec + _unit(centroids[order[i - 2]] - centroids[v])
        elif above is not None and below is not None:
            vec = above - below
        elif above is not None:
            vec = above - centroids[v]
        elif below is not None:
            vec = centroids[v] - below
        else:
            vec = np.array([0.0, -1.0])
        n = float(np.hypot(*vec))
        result[v] = vec / n if n > 1e-9 else np.array([0.0, -1.0])
    return result


def segments_from_outlines(
    found: list[Found],
    image_shape: tuple[int, int],
    view: LumbarView,
    anterior: AnteriorEstimate | None,
) -> list[VertebraSegment]:
    """Corners for every vertebra found, in the order of :class:`VertebraSegment` (lateral or AP).

    Vertebrae whose outline cannot be fitted (fewer than 8 points, degenerate) are dropped:
    they become missing, not guessed. The cranial direction of each vertebra comes from its
    named neighbours (:func:`cranial_directions`), the anterior one from ``anterior`` (AP
    views: the image left, giving superior-left, superior-right, … corners).
    """
    centroids = {f.label: np.asarray(f.outline, dtype=float).mean(axis=0) for f in found if len(f.outline)}
    cranial = cranial_directions(centroids)
    global_up = np.array([0.0, -1.0])
    present = [v for v in Vertebra if v in centroids]
    if len(present) >= 2:
        vec = centroids[present[0]] - centroids[present[-1]]
        global_up = vec / (np.hypot(*vec) + 1e-12)
    if view is LumbarView.AP or anterior is None:
        front = anterior_unit("left", global_up)  # AP: superior-left, superior-right, ...
    else:
        front = anterior_unit(anterior, global_up)
    segments: list[VertebraSegment] = []
    for f in sorted(found, key=lambda x: x.label.class_id):
        try:
            fit = fit_corners(f.outline)
        except ValueError:
            continue
        corners = label_corners(fit.corners, cranial.get(f.label, global_up), front)
        outline = np.asarray(f.outline, dtype=float)
        mask = f.mask if f.mask is not None else fill_outline(outline, image_shape)
        segments.append(
            VertebraSegment(
                label=f.label,
                mask=mask,
                outline=outline,
                corners=corners,
                confidence=float(f.confidence),
            )
        )
    return segments


def measure_levels(
    segments: list[VertebraSegment], view: LumbarView, threshold_percent: float
) -> list[LevelMeasurement]:
    """One measurement per lumbar level; ``MISSING`` when either vertebra was not found.

    Lateral views: slip % and Meyerding grade (:mod:`cdss.analysis.geometry`). AP views: the
    same projection measures *lateral* translation (positive = superior vertebra displaced to
    the image left) in % of the inferior endplate width; Meyerding grading is defined on lateral
    views only, so AP levels carry no grade.
    """
    by_label = {s.label: s for s in segments}
    levels: list[LevelMeasurement] = []
    for upper, lower in LUMBAR_LEVELS:
        missing = [v.value for v in (upper, lower) if v not in by_label]
        if missing:
            levels.append(
                LevelMeasurement(
                    upper=upper,
                    lower=lower,
                    status=LevelStatus.MISSING,
                    reason=f"{' and '.join(missing)} not found",
                )
            )
            continue
        try:
            pct, disp, width = slip(by_label[upper].corners, by_label[lower].corners)
        except ValueError as exc:
            levels.append(
                LevelMeasurement(upper=upper, lower=lower, status=LevelStatus.MISSING, reason=str(exc))
            )
            continue
        if view is LumbarView.LATERAL:
            grade, direction = meyerding_grade(pct, threshold_percent)
            reason = ""
        else:
            grade, direction = MeyerdingGrade.NONE, SlipDirection.NONE
            reason = "AP view: lateral translation (positive = towards image left); no Meyerding grade"
        levels.append(
            LevelMeasurement(
                upper=upper,
                lower=lower,
                status=LevelStatus.MEASURED,
                slip_percent=float(pct),
                direction=direction,
                grade=grade,
                displacement_px=float(disp),
                endplate_width_px=float(width),
                reason=reason,
            )
        )
    return levels
