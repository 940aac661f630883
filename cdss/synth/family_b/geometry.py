"""Plane geometry of family B: camera maps, vertebral-body quadrilaterals and superelliptic outlines.

Family B describes a vertebral body by the quadrilateral of its side lines (the ground-truth
corners) and a *shape* (:class:`BodyShape`) that lives in the body's own bilinear coordinates
``(s, t)`` in ``[-1, 1]²`` — ``s`` from the posterior (−1) to the anterior (+1) wall, ``t`` from
the superior (−1) to the inferior (+1) endplate. The outline is a quadrant-wise superellipse
``|U|^p + |V|^p = 1`` whose unit "square" is mapped bilinearly onto the quadrilateral, so the
underlying straight side lines still meet at the corners; endplate and wall concavities bend
``U``/``V`` inwards. Pixels are turned back into ``(s, t)`` with an exact inverse bilinear map,
so the same implicit function rasterises the body (see :mod:`cdss.synth.family_b.render`).

Points are ``(N, 2)`` float arrays ``(x, y)``: millimetres in a view's patient frame, or
``(column, row)`` pixels in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BodyShape",
    "Camera",
    "body_outline",
    "body_radius",
    "clip_polygon",
    "inverse_bilinear",
    "polygon_area",
    "rotate",
    "spline",
    "unit",
]


def unit(v: np.ndarray) -> np.ndarray:
    """Unit vector of ``v`` (shape ``(2,)``)."""
    v = np.asarray(v, float)
    n = float(np.hypot(v[0], v[1]))
    if n < 1e-12:
        raise ValueError("zero-length direction vector")
    return v / n


def rotate(v: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate vector(s) by ``angle_rad`` (positive: clockwise on screen, ``y`` pointing down)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    v = np.asarray(v, float)
    return np.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c], axis=-1)


@dataclass(frozen=True)
class Camera:
    """Patient frame (mm) → image pixels: ``px = A @ mm + b`` (a similarity, possibly mirrored).

    Attributes
    ----------
    a, b
        2×2 linear part and translation.
    """

    a: np.ndarray
    b: np.ndarray

    @staticmethod
    def make(
        *,
        aim_mm: np.ndarray,
        centre_px: np.ndarray,
        px_per_mm: float,
        rotation_deg: float,
        mirror: bool,
    ) -> Camera:
        """Map ``aim_mm`` to ``centre_px``, scale by ``px_per_mm``, mirror ``x``, rotate clockwise."""
        c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
        r = np.array([[c, -s], [s, c]])
        m = np.diag([-1.0 if mirror else 1.0, 1.0])
        a = px_per_mm * (r @ m)
        b = np.asarray(centre_px, float) - a @ np.asarray(aim_mm, float)
        return Camera(a, b)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, float) @ self.a.T + self.b

    def vec(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, float) @ self.a.T

    @property
    def px_per_mm(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.a))))

    def inverse(self) -> Camera:
        ai = np.linalg.inv(self.a)
        return Camera(ai, -ai @ self.b)


@dataclass(frozen=True)
class BodyShape:
    """Shape of one vertebral body inside its quadrilateral.

    Attributes
    ----------
    p_ant, p_post
        Superellipse exponents of the anterior and posterior halves (larger = squarer corners).
    c_sup, c_inf
        Endplate concavity: inward dip of the endplate centre as a fraction of the half height.
    c_ant, c_post
        Wall concavity ("waist"): inward bow of the wall centre as a fraction of the half depth.
    p_sup, p_inf
        Optional exponents overriding the superior / inferior half (square corners where
        sacral segments are fused).
    """

    p_ant: float = 6.0
    p_post: float = 10.0
    c_sup: float = 0.06
    c_inf: float = 0.08
    c_ant: float = 0.04
    c_post: float = 0.02
    p_sup: float | None = None  # exponent of the superior half (default: p_ant/p_post)
    p_inf: float | None = None  # exponent of the inferior half (fused sacral segments: square)


def _bounds(s: np.ndarray, t: np.ndarray, sh: BodyShape) -> tuple[np.ndarray, np.ndarray]:
    sb = 1.0 - np.where(s > 0, sh.c_ant, sh.c_post) * (1.0 - np.minimum(t * t, 1.0))
    dish = np.clip(1.0 - s * s, 0.0, 1.0) ** 1.5
    tb = 1.0 - np.where(t < 0, sh.c_sup, sh.c_inf) * dish
    return sb, tb


def _exponent(s: np.ndarray, t: np.ndarray, sh: BodyShape) -> np.ndarray:
    p = np.where(s > 0, sh.p_ant, sh.p_post)
    if sh.p_sup is not None:
        p = np.where(t < 0, sh.p_sup, p)
    if sh.p_inf is not None:
        p = np.where(t > 0, sh.p_inf, p)
    return p


def body_radius(s: np.ndarray, t: np.ndarray, sh: BodyShape) -> tuple[np.ndarray, np.ndarray]:
    """Implicit function of the outline in ``(s, t)``: ``r < 1`` inside, ``r = 1`` on the outline.

    Returns ``(r, endplate_weight)``; the weight is ~1 where the nearest part of the outline is
    an endplate and ~0 near the anterior or posterior wall.
    """
    sb, tb = _bounds(s, t, sh)
    u = np.abs(s) / sb
    v = np.abs(t) / tb
    p = _exponent(s, t, sh)
    up = u**p
    vp = v**p
    tot = up + vp + 1e-12
    return tot ** (1.0 / p), vp / tot


def bilinear(q: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Point of the quadrilateral ``q`` (SA, SP, IP, IA) at bilinear coordinates ``(s, t)``."""
    u = (np.asarray(s) + 1) / 2
    v = (np.asarray(t) + 1) / 2
    sa, sp, ip, ia = (np.asarray(p, float) for p in q)
    return (
        ((1 - u) * (1 - v))[..., None] * sp
        + (u * (1 - v))[..., None] * sa
        + ((1 - u) * v)[..., None] * ip
        + (u * v)[..., None] * ia
    )


def body_outline(q: np.ndarray, sh: BodyShape, n: int = 72) -> np.ndarray:
    """Closed outline (``(n, 2)``) of a body with quadrilateral ``q`` and shape ``sh``.

    Points start at the middle of the superior endplate and run anterior → inferior →
    posterior (the order of the quadrilateral's corners SA, IA, IP, SP reversed is irrelevant
    for rasterising). Corners are sampled densely (superellipse parameterisation).
    """
    th = np.linspace(-np.pi / 2, 1.5 * np.pi, n, endpoint=False)
    c, sn = np.cos(th), np.sin(th)
    s = np.zeros(n)
    t = np.zeros(n)
    for _ in range(5):  # the concavities couple s and t: a few fixed-point sweeps converge
        p = _exponent(np.where(np.abs(s) < 1e-9, c, s), np.where(np.abs(t) < 1e-9, sn, t), sh)
        u0 = np.sign(c) * np.abs(c) ** (2.0 / p)
        v0 = np.sign(sn) * np.abs(sn) ** (2.0 / p)
        sb, tb = _bounds(s, t, sh)
        s = u0 * sb
        t = v0 * tb
    return bilinear(q, s, t)


def inverse_bilinear(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear coordinates ``(s, t)`` of points ``p`` (``(..., 2)``) in the quadrilateral ``q``.

    ``q`` is (SA, SP, IP, IA); exact for any convex quadrilateral, extrapolated smoothly
    outside it. ``s``: −1 posterior … +1 anterior; ``t``: −1 superior … +1 inferior.
    """
    sa, sp, ip, ia = (np.asarray(x, float) for x in q)
    a, b, c, d = sp, sa, ia, ip  # u along a→b (posterior → anterior), v along a→d (down)
    e = b - a
    f = d - a
    g = a - b + c - d
    hx = p[..., 0] - a[0]
    hy = p[..., 1] - a[1]

    def cross(ax: float | np.ndarray, ay: float | np.ndarray, bx: float | np.ndarray, by: float | np.ndarray):
        return ax * by - ay * bx

    k2 = float(cross(g[0], g[1], f[0], f[1]))
    k1 = cross(e[0], e[1], f[0], f[1]) + cross(hx, hy, g[0], g[1])
    k0 = cross(hx, hy, e[0], e[1])
    if abs(k2) < 1e-9 * max(1.0, float(np.dot(e, e))):
        v = -k0 / k1
    else:
        w = np.sqrt(np.maximum(k1 * k1 - 4.0 * k0 * k2, 0.0))
        v1 = (-k1 - w) / (2.0 * k2)
        v2 = (-k1 + w) / (2.0 * k2)
        v = np.where(np.abs(v1 - 0.5) <= np.abs(v2 - 0.5), v1, v2)
    ex = e[0] + g[0] * v
    ey = e[1] + g[1] * v
    den = ex * ex + ey * ey
    u = ((hx - f[0] * v) * ex + (hy - f[1] * v) * ey) / np.maximum(den, 1e-12)
    return 2 * u - 1, 2 * v - 1


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned area of a simple polygon (shoelace)."""
    p = np.asarray(poly, float)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman: the part of ``subject`` inside the *convex* polygon ``clip``."""
    out = [np.asarray(p, float) for p in subject]
    c = np.asarray(clip, float)
    # orientation of the clip polygon
    sign = 1.0 if polygon_signed_area(c) > 0 else -1.0
    for i in range(len(c)):
        a, b = c[i], c[(i + 1) % len(c)]
        if not out:
            break

        def inside(p: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> bool:
            return sign * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) >= 0

        def meet(p: np.ndarray, q: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> np.ndarray:
            d1 = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
            d2 = (b[0] - a[0]) * (q[1] - a[1]) - (b[1] - a[1]) * (q[0] - a[0])
            return p + (q - p) * (d1 / (d1 - d2))

        src, out = out, []
        for j in range(len(src)):
            cur, prev = src[j], src[j - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(meet(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(meet(prev, cur))
    return np.array(out, float).reshape(-1, 2)


def polygon_signed_area(poly: np.ndarray) -> float:
    p = np.asarray(poly, float)
    x, y = p[:, 0], p[:, 1]
    return float((np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def spline(points: np.ndarray, per_segment: int = 6, closed: bool = False) -> np.ndarray:
    """Centripetal-free (uniform) Catmull–Rom curve through ``points`` (open unless ``closed``)."""
    p = np.asarray(points, float)
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
        segs = len(p)
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
        segs = len(p) - 1
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)
