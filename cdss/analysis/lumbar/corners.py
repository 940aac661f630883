"""From a vertebral-body mask to its four corners (sub-pixel), and which corner is which.

Method (robust to the rounded corners a segmentation mask always has):

1. the outer contour of the mask (largest connected component) is traced with OpenCV;
2. its minimum-area rectangle gives a first guess of the four sides;
3. every contour point is assigned to the nearest rectangle side; points in the outer
   ``corner_margin`` (default 20 %) of a side's length are dropped, because that is where the mask
   rounds off the corner;
4. each side is fitted with a total-least-squares line, re-fitted twice without points whose
   residual exceeds ``max(1 px, 3 × 1.4826 × MAD)`` (iteratively trimmed least squares);
5. adjacent side lines are intersected: these intersections are the corners. An intersection
   that falls implausibly far from the rectangle (parallel lines) is replaced by the rectangle's
   corner.

The corners come out in cyclic order; :func:`label_corners` then names them from the cranial
direction (towards the next vertebra up) and the anterior direction. All points are
``(column, row)`` source pixels, float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CornerFit",
    "fit_corners",
    "fit_side_curve",
    "intersect_curves",
    "label_corners",
    "mask_outline",
    "open_mask",
]


@dataclass
class CornerFit:
    """Result of :func:`fit_corners`.

    Attributes
    ----------
    corners
        ``(4, 2)`` corners in cyclic order (side ``i`` joins corner ``i`` and ``i + 1``).
    rms
        Root-mean-square distance (px) of the inlier contour points to their side lines; a
        measure of how quadrilateral the mask is.
    inliers
        Number of contour points used per side.
    """

    corners: np.ndarray
    rms: float
    inliers: tuple[int, int, int, int]


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Outer boundary of the largest connected component of ``mask``.

    Parameters
    ----------
    mask
        Boolean or 0/1 array ``(rows, columns)``.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64 (column, row) pixel centres of the boundary, in contour order;
        empty ``(0, 2)`` when the mask is empty.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), dtype=float)
    largest = max(contours, key=cv2.contourArea)
    return largest.reshape(-1, 2).astype(float)


def open_mask(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Morphological opening with a disc of ``fraction`` × √(mask area) pixels (0: unchanged).

    Removes thin spurs a segmentation mask sometimes grows along a neighbouring structure (the
    sacrum's posterior wall, a pedicle) before the outline is fitted; a body's sides and
    corners move by less than the disc radius, and the corner fit ignores the rounded ends of
    each side anyway.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if fraction <= 0:
        return m.astype(bool)
    size = round(fraction * float(np.sqrt(m.sum())))
    if size < 3:
        return m.astype(bool)
    size += 1 - size % 2  # odd
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    opened = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    return opened.astype(bool) if opened.any() else m.astype(bool)


def _fit_side(
    u: np.ndarray, v: np.ndarray, degree: int, iterations: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``v = poly(u)`` (side-local coordinates) by iteratively trimmed least squares.

    Returns the polynomial coefficients (highest power first, :func:`numpy.polyval` order) and
    the residuals of the points kept.
    """
    keep = np.ones(len(u), dtype=bool)
    deg = degree if len(u) > degree + 3 else 1
    coef = np.polyfit(u, v, deg)
    for _ in range(iterations):
        resid = np.abs(v - np.polyval(coef, u))
        mad = float(np.median(resid[keep]))
        new_keep = resid <= max(1.0, 3.0 * 1.4826 * mad)
        if new_keep.sum() < deg + 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        coef = np.polyfit(u[keep], v[keep], deg)
    if len(coef) < degree + 1:
        coef = np.concatenate([np.zeros(degree + 1 - len(coef)), coef])
    return coef, v[keep] - np.polyval(coef, u[keep])


def _intersect_curves(
    a: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ua: float,
    ub: float,
) -> np.ndarray | None:
    """Intersection of two side curves ``P(u) = origin + u·dir + poly(u)·normal`` (Newton's method)."""
    (oa, da, na, ca), (ob, db, nb, cb) = a, b
    dca, dcb = np.polyder(ca), np.polyder(cb)
    for _ in range(20):
        pa = oa + ua * da + np.polyval(ca, ua) * na
        pb = ob + ub * db + np.polyval(cb, ub) * nb
        diff = pa - pb
        if float(np.hypot(*diff)) < 1e-6:
            return pa
        ja = da + np.polyval(dca, ua) * na
        jb = -(db + np.polyval(dcb, ub) * nb)
        jac = np.column_stack([ja, jb])
        if abs(np.linalg.det(jac)) < 1e-9:
            return None
        step = np.linalg.solve(jac, -diff)
        ua, ub = ua + float(step[0]), ub + float(step[1])
    pa = oa + ua * da + np.polyval(ca, ua) * na
    pb = ob + ub * db + np.polyval(cb, ub) * nb
    return (pa + pb) / 2 if float(np.hypot(*(pa - pb))) < 1e-3 else None


def _fit_pass(
    pts: np.ndarray, quad: np.ndarray, window: tuple[float, float], degree: int
) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """One pass: assign points to the nearest side of ``quad``, fit each side, intersect neighbours."""
    starts = quad
    ends = np.roll(quad, -1, axis=0)
    vecs = ends - starts
    lengths = np.hypot(vecs[:, 0], vecs[:, 1])
    dirs = vecs / np.maximum(lengths, 1e-9)[:, None]
    normals = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
    rel = pts[:, None, :] - starts[None, :, :]
    t = np.einsum("nkj,kj->nk", rel, dirs) / np.maximum(lengths, 1e-9)[None, :]
    dist = np.abs(np.einsum("nkj,kj->nk", rel, normals))
    dist_masked = np.where((t >= -0.05) & (t <= 1.05), dist, np.inf)
    side_of = np.argmin(dist_masked, axis=1)
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    inliers: list[int] = []
    residuals: list[np.ndarray] = []
    for k in range(4):
        tk = t[:, k]
        sel = (side_of == k) & (tk >= window[0]) & (tk <= window[1])
        coef = np.zeros(degree + 1)
        if sel.sum() >= 3:
            rel_k = pts[sel] - starts[k]
            coef, resid = _fit_side(rel_k @ dirs[k], rel_k @ normals[k], degree)
            residuals.append(resid)
            inliers.append(len(resid))
        else:
            inliers.append(0)
        curves.append((starts[k], dirs[k], normals[k], coef))
    corners = np.empty((4, 2), dtype=float)
    tolerance = 0.5 * float(min(lengths))
    for k in range(4):
        prev = (k - 1) % 4
        point = _intersect_curves(curves[prev], curves[k], float(lengths[prev]), 0.0)
        if point is None or float(np.hypot(*(point - quad[k]))) > tolerance:
            point = quad[k]
        corners[k] = point
    return corners, inliers, residuals


def fit_corners(
    outline: np.ndarray, window: tuple[float, float] = (0.12, 0.88), degree: int = 2, passes: int = 2
) -> CornerFit:
    """Fit the four sides of a vertebral outline and intersect them.

    Parameters
    ----------
    outline
        ``(N, 2)`` (column, row) boundary points (e.g. from :func:`mask_outline` or a polygon
        sampled densely), N ≥ 8.
    window
        Part of each side (fractions of its length) whose points are fitted; the ends are left
        out because the outline rounds off there.
    degree
        Degree of the polynomial fitted to each side in side-local coordinates: 2 lets a concave
        endplate or wall meet its neighbour at the rim (where the corner is), 1 fits straight lines.
    passes
        The first pass assigns points to the sides of the minimum-area rectangle; later passes
        to the sides of the quadrilateral found by the previous pass (wedge-shaped and sheared
        bodies such as L5 and S1 are far from rectangular).

    Returns
    -------
    CornerFit

    Raises
    ------
    ValueError
        Fewer than 8 points, or a degenerate (zero-area) outline.
    """
    pts = np.asarray(outline, dtype=float).reshape(-1, 2)
    if len(pts) < 8:
        raise ValueError(f"need at least 8 outline points to fit corners, got {len(pts)}")
    rect = cv2.minAreaRect(pts.astype(np.float32))
    if min(rect[1]) < 1e-3:
        raise ValueError("outline is degenerate (zero-area minimum rectangle)")
    quad = cv2.boxPoints(rect).astype(float)  # 4 corners, cyclic
    inliers: list[int] = [0, 0, 0, 0]
    residuals: list[np.ndarray] = []
    for _ in range(max(1, passes)):
        quad, inliers, residuals = _fit_pass(pts, quad, window, degree)
    rms = float(np.sqrt(np.mean(np.concatenate(residuals) ** 2))) if residuals else float("nan")
    return CornerFit(corners=quad, rms=rms, inliers=(inliers[0], inliers[1], inliers[2], inliers[3]))


def label_corners(corners: np.ndarray, cranial: np.ndarray, anterior: np.ndarray) -> np.ndarray:
    """Order cyclic corners as superior-anterior, superior-posterior, inferior-posterior, inferior-anterior.

    Parameters
    ----------
    corners
        ``(4, 2)`` corners in cyclic order (either orientation).
    cranial
        Vector pointing towards the head (towards the next vertebra up), image frame.
    anterior
        Vector pointing to the patient's front, image frame. For an AP view pass the image
        "left" vector ``(-1, 0)`` to obtain superior-left, superior-right, inferior-right,
        inferior-left.

    Returns
    -------
    numpy.ndarray
        ``(4, 2)`` corners in the lateral order used by :mod:`cdss.analysis.geometry`.
    """
    c = np.asarray(corners, dtype=float).reshape(4, 2)
    up = np.asarray(cranial, dtype=float)
    front = np.asarray(anterior, dtype=float)
    centre = c.mean(axis=0)
    mids = (c + np.roll(c, -1, axis=0)) / 2.0  # side k joins corner k and k+1
    outward = mids - centre
    outward /= np.linalg.norm(outward, axis=1, keepdims=True) + 1e-12
    s = int(np.argmax(outward @ up))
    before, after = (s - 1) % 4, (s + 1) % 4
    if float(outward[after] @ front) >= float(outward[before] @ front):
        # anterior side joins corners s+1 and s+2
        sa, sp, ip, ia = c[(s + 1) % 4], c[s], c[(s + 3) % 4], c[(s + 2) % 4]
    else:
        sa, sp, ip, ia = c[s], c[(s + 1) % 4], c[(s + 2) % 4], c[(s + 3) % 4]
    return np.array([sa, sp, ip, ia], dtype=float)


#: Public names of the side-curve helpers (the edge refinement fits its edge points the same way).
fit_side_curve = _fit_side
intersect_curves = _intersect_curves
