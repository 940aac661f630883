"""Corner refinement at full resolution: a local edge fit around the mask's sides.

The segmentation model sees the spine at ~640 px and its mask head works at a quarter of
that, so on a 2000-px radiograph a mask boundary can sit several source pixels off the
cortical edge — and a few pixels at a posterior corner are a few percent of slip. This step
moves each side of a vertebra's quadrilateral onto the edge that the source pixels show:

1. the display image (bone bright) is smoothed with a Gaussian of σ = 0.8 % of the body size
   (at least 1 px);
2. along the middle 70 % of each side, 24 intensity profiles are sampled on the side's outward
   normal, ±``search`` (8 % of the body size, at least 3 px) around the mask's side;
3. on each profile the edge is the steepest bright-to-dark transition going outwards (bone →
   disc or soft tissue), weighted mildly towards the mask's position, located to sub-pixel
   precision by a parabola through the derivative's minimum; weak profiles (a derivative
   below a third of the side's median strength) are dropped;
4. the edge points are fitted like the mask outline (:mod:`cdss.analysis.lumbar.corners`: a
   quadratic in side-local coordinates, iteratively trimmed least squares), and adjacent
   curves are intersected;
5. a side is only moved when at least half of its profiles found an edge and the fit is
   tight (RMS ≤ 25 % of the search range); a corner only when it moved less than the search
   range. Anything else keeps the mask's corner — the refinement never makes a level
   unmeasurable.

Coordinates are ``(column, row)`` source pixels; corners in the lateral order superior-anterior,
superior-posterior, inferior-posterior, inferior-anterior (AP: superior-left, superior-right,
inferior-right, inferior-left — the method does not depend on the names).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cdss.analysis.lumbar.corners import fit_side_curve, intersect_curves

__all__ = ["EdgeRefinement", "refine_corners", "smoothed_for_edges"]

_PROFILES = 24
_WINDOW = (0.15, 0.85)
_SEARCH_FRACTION = 0.08
_MIN_SEARCH_PX = 3.0
_STEP_PX = 0.5
_MIN_SHARE = 0.5
_MAX_RMS_FRACTION = 0.25


@dataclass
class EdgeRefinement:
    """Result of :func:`refine_corners`.

    Attributes
    ----------
    corners
        ``(4, 2)`` refined corners, same order as the input.
    sides_moved
        How many of the four sides were moved onto an image edge.
    max_shift_px
        Largest corner displacement applied, source pixels.
    """

    corners: np.ndarray
    sides_moved: int
    max_shift_px: float


def smoothed_for_edges(display: np.ndarray, body_size_px: float) -> np.ndarray:
    """The display image (float [0, 1]) smoothed for edge search on bodies of ``body_size_px``."""
    sigma = max(1.0, 0.008 * float(body_size_px))
    return cv2.GaussianBlur(np.asarray(display, dtype=np.float32), (0, 0), sigma)


def _sample(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at ``pts`` (..., 2) (column, row); outside → NaN."""
    flat = pts.reshape(-1, 2).astype(np.float32)
    rows, cols = image.shape
    vals = cv2.remap(
        image,
        flat[:, 0].reshape(-1, 1),
        flat[:, 1].reshape(-1, 1),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=np.nan,
    ).reshape(pts.shape[:-1])
    inside = (flat[:, 0] >= 0) & (flat[:, 0] <= cols - 1) & (flat[:, 1] >= 0) & (flat[:, 1] <= rows - 1)
    vals = vals.astype(np.float64)
    vals.reshape(-1)[~inside] = np.nan
    return vals


def _side_edges(
    smooth: np.ndarray, p0: np.ndarray, p1: np.ndarray, outward: np.ndarray, search: float
) -> np.ndarray:
    """Edge points (K, 2) found on the profiles across the side ``p0 → p1``."""
    s = np.linspace(*_WINDOW, _PROFILES)
    base = p0[None, :] + s[:, None] * (p1 - p0)[None, :]
    offsets = np.arange(-search, search + 1e-9, _STEP_PX)
    grid = base[:, None, :] + offsets[None, :, None] * outward[None, None, :]
    prof = _sample(smooth, grid)
    deriv = np.gradient(prof, _STEP_PX, axis=1)  # going outwards
    prior = np.exp(-0.5 * (offsets / (0.7 * search)) ** 2)
    score = -deriv * prior[None, :]
    score[~np.isfinite(score)] = -np.inf
    best = np.argmax(score, axis=1)
    strength = score[np.arange(len(best)), best]
    ok = np.isfinite(strength) & (strength > 0) & (best > 0) & (best < len(offsets) - 1)
    if ok.sum() == 0:
        return np.empty((0, 2))
    med = float(np.median(strength[ok]))
    ok &= strength >= med / 3.0
    pts = []
    for i in np.flatnonzero(ok):
        b = int(best[i])
        y0, y1, y2 = score[i, b - 1], score[i, b], score[i, b + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if np.isfinite(denom) and abs(denom) > 1e-12 else 0.0
        off = offsets[b] + float(np.clip(frac, -0.5, 0.5)) * _STEP_PX
        pts.append(base[i] + off * outward)
    return np.asarray(pts, dtype=float)


def refine_corners(smooth: np.ndarray, corners: np.ndarray, body_size_px: float) -> EdgeRefinement:
    """Move the sides of a vertebra's quadrilateral onto the edges of the source image.

    Parameters
    ----------
    smooth
        :func:`smoothed_for_edges` of the display image (bone bright), source grid.
    corners
        ``(4, 2)`` corners (column, row) px in cyclic order (any of the lateral/AP orders).
    body_size_px
        √(area) of the body, pixels: sets the search range and the smoothing.

    Returns
    -------
    EdgeRefinement
    """
    c = np.asarray(corners, dtype=float).reshape(4, 2)
    centre = c.mean(axis=0)
    search = max(_MIN_SEARCH_PX, _SEARCH_FRACTION * float(body_size_px))
    curves = []
    moved = []
    for k in range(4):
        p0, p1 = c[k], c[(k + 1) % 4]
        vec = p1 - p0
        length = float(np.hypot(*vec))
        if length < 4:
            return EdgeRefinement(c.copy(), 0, 0.0)
        d = vec / length
        n = np.array([-d[1], d[0]])
        if float(n @ ((p0 + p1) / 2 - centre)) < 0:
            n = -n
        edges = _side_edges(smooth, p0, p1, n, search)
        curve = (p0, d, n, np.zeros(3))
        ok = False
        if len(edges) >= _MIN_SHARE * _PROFILES:
            rel = edges - p0
            coef, resid = fit_side_curve(rel @ d, rel @ n, 2)
            rms = float(np.sqrt(np.mean(resid**2))) if len(resid) else np.inf
            if len(resid) >= _MIN_SHARE * _PROFILES and rms <= _MAX_RMS_FRACTION * search:
                curve, ok = (p0, d, n, coef), True
        curves.append((curve, length))
        moved.append(ok)
    out = c.copy()
    for k in range(4):
        prev = (k - 1) % 4
        if not (moved[prev] or moved[k]):
            continue
        (cp, lp), (ck, _) = curves[prev], curves[k]
        point = intersect_curves(cp, ck, lp, 0.0)
        if point is not None and float(np.hypot(*(point - c[k]))) <= search:
            out[k] = point
    shift = float(np.max(np.hypot(*(out - c).T)))
    return EdgeRefinement(out, int(sum(moved)), shift)
