"""Plane geometry for the synthetic anatomy: affine maps, rounded quadrilaterals, smooth outlines.

All shapes are ``(N, 2)`` float arrays of ``(x, y)`` points. In the *patient frame* of a view the
unit is the millimetre, ``x`` grows to the image right (before mirroring) and ``y`` downwards
(caudally); in the *image frame* the unit is the pixel and the points are ``(column, row)`` with
the origin at the centre of the top-left pixel, the cdss convention. An :class:`Affine` maps the
first onto the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Affine",
    "ellipse",
    "polyline_offset",
    "rot",
    "rounded_quad",
    "smooth_closed",
    "unit",
]


def unit(v: np.ndarray) -> np.ndarray:
    """Unit vector of ``v`` (shape ``(2,)``)."""
    v = np.asarray(v, dtype=float)
    n = float(np.hypot(v[0], v[1]))
    if n < 1e-12:
        raise ValueError("cannot normalise a zero-length vector")
    return v / n


def rot(v: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate vector(s) by ``angle_rad``; positive turns clockwise on screen (``y`` points down)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    v = np.asarray(v, dtype=float)
    return np.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c], axis=-1)


@dataclass(frozen=True)
class Affine:
    """A 2-D affine map ``p -> A @ p + b`` stored as a 2×3 matrix (the OpenCV convention)."""

    m: np.ndarray

    @staticmethod
    def identity() -> Affine:
        return Affine(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))

    @staticmethod
    def translate(dx: float, dy: float) -> Affine:
        return Affine(np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]))

    @staticmethod
    def scale(sx: float, sy: float | None = None) -> Affine:
        return Affine(np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0]]))

    @staticmethod
    def rotate(angle_rad: float, about: tuple[float, float] = (0.0, 0.0)) -> Affine:
        """Rotation by ``angle_rad`` (clockwise on screen) about the point ``about``."""
        c, s = np.cos(angle_rad), np.sin(angle_rad)
        cx, cy = about
        a = np.array([[c, -s], [s, c]])
        b = np.array([cx, cy]) - a @ np.array([cx, cy])
        return Affine(np.hstack([a, b[:, None]]))

    def then(self, other: Affine) -> Affine:
        """The map that applies ``self`` first, then ``other``."""
        a1, b1 = self.m[:, :2], self.m[:, 2]
        a2, b2 = other.m[:, :2], other.m[:, 2]
        return Affine(np.hstack([a2 @ a1, (a2 @ b1 + b2)[:, None]]))

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, dtype=float)
        return p @ self.m[:, :2].T + self.m[:, 2]

    def vector(self, v: np.ndarray) -> np.ndarray:
        """Apply the linear part only (directions, offsets)."""
        return np.asarray(v, dtype=float) @ self.m[:, :2].T

    @property
    def linear_scale(self) -> float:
        """Geometric-mean scale factor (pixels per unit for a mm→px map)."""
        return float(np.sqrt(abs(np.linalg.det(self.m[:, :2]))))

    @property
    def mirrors(self) -> bool:
        return bool(np.linalg.det(self.m[:, :2]) < 0)

    def inverse(self) -> Affine:
        a = np.linalg.inv(self.m[:, :2])
        return Affine(np.hstack([a, (-a @ self.m[:, 2])[:, None]]))


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def rounded_quad(
    corners: np.ndarray,
    *,
    radius: float,
    concavity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    per_side: int = 12,
    corner_points: int = 5,
) -> np.ndarray:
    """Outline of a quadrilateral with rounded corners and inward-bowed sides.

    Parameters
    ----------
    corners
        ``(4, 2)`` corners in drawing order (either orientation).
    radius
        Corner rounding: how far from each corner (same unit as ``corners``) the side starts to
        curve; clipped to a third of the shorter adjacent side.
    concavity
        For each side ``corners[i] -> corners[i+1]``, the maximum inward displacement of the side's
        midpoint as a fraction of the side length (positive bows the side towards the centroid).
    per_side, corner_points
        Sampling density of the straight/bowed part of each side and of each rounded corner.

    Returns
    -------
    np.ndarray
        Closed outline ``(N, 2)`` (first point not repeated). The sides' underlying straight lines
        still meet at ``corners``: the corners are the "GT corners" of the outline.
    """
    c = np.asarray(corners, dtype=float)
    centroid = c.mean(axis=0)
    sides = []
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        length = float(np.hypot(*(b - a)))
        normal = np.array([-(b - a)[1], (b - a)[0]]) / max(length, 1e-9)
        if np.dot(centroid - (a + b) / 2, normal) < 0:
            normal = -normal
        sides.append((a, b, length, normal))
    out: list[np.ndarray] = []
    for i in range(4):
        a, b, length, normal = sides[i]
        prev_len = sides[i - 1][2]
        next_len = sides[(i + 1) % 4][2]
        r0 = min(radius, length / 3, prev_len / 3)
        r1 = min(radius, length / 3, next_len / 3)
        t = np.linspace(r0 / length, 1 - r1 / length, per_side)
        bow = concavity[i] * length * 4 * t * (1 - t)
        pts = a + (b - a) * t[:, None] + normal * bow[:, None]
        out.append(pts)
        # rounded corner at b, from the end of this side to the start of the next
        na, nb, nlength, nnormal = sides[(i + 1) % 4]
        r2 = min(radius, nlength / 3, length / 3)
        tn = r2 / nlength
        start_next = na + (nb - na) * tn + nnormal * concavity[(i + 1) % 4] * nlength * 4 * tn * (1 - tn)
        arc = _bezier(pts[-1], b, start_next, corner_points + 2)[1:-1]
        out.append(arc)
    return np.vstack(out)


def smooth_closed(points: np.ndarray, samples_per_segment: int = 6) -> np.ndarray:
    """Closed Catmull-Rom spline through ``points`` (a hand-drawn polygon made smooth)."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    out = []
    for i in range(n):
        p0, p1, p2, p3 = p[i - 1], p[i], p[(i + 1) % n], p[(i + 2) % n]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    return np.vstack(out)


def ellipse(
    center: tuple[float, float], axes: tuple[float, float], angle_rad: float = 0.0, n: int = 40
) -> np.ndarray:
    """Polygon approximating an ellipse with semi-axes ``axes`` rotated by ``angle_rad``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1)
    return rot(pts, angle_rad) + np.asarray(center, dtype=float)


def polyline_offset(line: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Closed polygon of a band of total ``width`` (one value, or one per point) around an open
    polyline (for ribs, lines)."""
    p = np.asarray(line, dtype=float)
    d = np.gradient(p, axis=0)
    d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
    w = np.broadcast_to(np.asarray(width, dtype=float), (len(p),))[:, None] / 2
    return np.vstack([p + nrm * w, (p - nrm * w)[::-1]])
