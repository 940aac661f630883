"""Family B projection renderer: analytic path lengths through simple 3-D solids.

Every structure is a solid whose *chord* along the beam is known in closed form at each image
pixel, so the line integral ``sum(mu * path)`` is evaluated directly instead of painting 2-D
masks:

* :meth:`Film.body` — a vertebral body: a superelliptic sagittal (or coronal) outline extruded
  along the beam with a kidney-shaped cross-section; cortical bone is the part of the chord that
  runs inside the cortical shell, so endplates and the posterior wall seen tangentially come out
  dense by themselves. Bodies are drawn as two half-slices (near and far side) that may be
  offset from each other: beam divergence, scoliotic tilt and axial rotation double the
  endplates and walls.
* :meth:`Film.capsules` — unions of tapered capsules (pedicles, laminae, ribs, long bones,
  screws) with a cortical shell; :meth:`Film.ellipsoid` — blobs and end-on tubes (pedicle rings);
* :meth:`Film.slab` — thin plates (iliac wings, scapulae) with a blurred thickness profile and
  a dense rim; :meth:`Film.line` — dense curves (calcifications, grid-free markers).

Attenuation values are *excess* over soft tissue (1/mm); the soft-tissue layer is a smooth
low-resolution map (:meth:`Film.soft_field`). Trabecular texture is a tile of random rods
(plate-and-rod model) warped into each bone along its own axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cdss.synth.family_b.geometry import BodyShape, Camera, body_radius, inverse_bilinear

__all__ = ["LR", "Capsule", "Film", "fractal_noise"]

#: Down-sampling factor of the smooth (soft-tissue) layer.
LR = 4
_TILE_MM = 0.15  # texture tile resolution (mm per tile pixel)
_TILE = 768


@dataclass(frozen=True)
class Capsule:
    """A tapered capsule from ``a`` to ``b`` (mm) with radii ``ra``/``rb`` (mm).

    ``depth`` scales the chord along the beam (1 = round cross-section, < 1 flattened plate);
    ``shell`` is the cortical thickness (mm).
    """

    a: tuple[float, float]
    b: tuple[float, float]
    ra: float
    rb: float
    depth: float = 1.0
    shell: float = 1.0
    thread: float = 0.0  # screw thread depth (mm), pitch 2.8 mm


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _wrap_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a periodic tile (OpenCV has no wrap-around border for filters)."""
    pad = int(3 * sigma) + 1
    big = np.pad(img, pad, mode="wrap")
    return cv2.GaussianBlur(big, (0, 0), sigma)[pad:-pad, pad:-pad]


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 2.6) -> np.ndarray:
    """Zero-mean, unit-variance noise with a ``1/f^beta`` power spectrum (FFT synthesis)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    return out / (out.std() + 1e-9)


class Film:
    """Projected excess attenuation on a ``rows × columns`` image, plus a soft-tissue layer.

    Parameters
    ----------
    rows, columns
        Image size (pixels).
    cam
        Patient frame (mm) → pixel map.
    rng
        Random generator (textures).
    """

    def __init__(self, rows: int, columns: int, cam: Camera, rng: np.random.Generator) -> None:
        self.rows, self.columns = rows, columns
        self.cam = cam
        self.inv = cam.inverse()
        self.ppm = cam.px_per_mm
        self.rng = rng
        self.bone = np.zeros((rows, columns), np.float32)
        self.lr_shape = ((rows + LR - 1) // LR, (columns + LR - 1) // LR)
        self.soft = np.zeros(self.lr_shape, np.float32)
        self._tile = self._make_tile()

    # ------------------------------------------------------------------ helpers
    def _make_tile(self) -> np.ndarray:
        """Rod-and-plate trabecular tile: random short rods, mostly along the tile's y axis."""
        rng = self.rng
        tile = np.zeros((_TILE, _TILE), np.float32)
        n = 14000
        vertical = rng.random(n) < 0.62
        ang = np.where(vertical, rng.normal(0, 0.3, n), np.pi / 2 + rng.normal(0, 0.4, n))
        length = np.where(vertical, rng.uniform(6, 20, n), rng.uniform(4, 10, n))
        cx = rng.uniform(0, _TILE, n)
        cy = rng.uniform(0, _TILE, n)
        val = rng.uniform(0.3, 1.0, n)
        dx = np.sin(ang) * length / 2
        dy = np.cos(ang) * length / 2
        for i in range(n):
            cv2.line(
                tile,
                (int(cx[i] - dx[i]), int(cy[i] - dy[i])),
                (int(cx[i] + dx[i]), int(cy[i] + dy[i])),
                float(val[i]),
                1,
                cv2.LINE_AA,
            )
        tile = _wrap_blur(tile, 1.6)
        # marrow spaces: a coarse mottle
        mottle = _wrap_blur(rng.standard_normal((_TILE, _TILE)).astype(np.float32), 5.0)
        tile += 0.35 * mottle / (mottle.std() + 1e-6) * tile.std()
        tile -= _wrap_blur(tile, 14.0)
        return tile / (tile.std() + 1e-6)

    def texture(self, roi: tuple[int, int, int, int], axis_angle_mm: float) -> np.ndarray:
        """Texture sampled on ``roi``, its rods along the patient-frame direction ``axis_angle_mm``.

        ``axis_angle_mm`` is the angle (rad) of the bone's long axis from the patient ``+y`` axis.
        """
        r0, r1, c0, c1 = roi
        # pixel → mm (inverse camera), mm → tile: rotate by -angle, scale, random offset
        ca, sa = np.cos(-axis_angle_mm), np.sin(-axis_angle_mm)
        rm = np.array([[ca, -sa], [sa, ca]]) / _TILE_MM
        m = rm @ self.inv.a
        off = rm @ self.inv.b + m @ np.array([c0, r0]) + self.rng.uniform(0, _TILE, 2)
        mat = np.hstack([m, off[:, None]]).astype(np.float64)
        return cv2.warpAffine(
            self._tile,
            mat,
            (c1 - c0, r1 - r0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_WRAP,
        )

    def _roi(self, px: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
        c0 = max(int(np.floor(px[:, 0].min() - margin)), 0)
        c1 = min(int(np.ceil(px[:, 0].max() + margin)) + 1, self.columns)
        r0 = max(int(np.floor(px[:, 1].min() - margin)), 0)
        r1 = min(int(np.ceil(px[:, 1].max() + margin)) + 1, self.rows)
        if c1 - c0 < 2 or r1 - r0 < 2:
            return None
        return r0, r1, c0, c1

    def _mm_grid(self, roi: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        r0, r1, c0, c1 = roi
        cc, rr = np.meshgrid(np.arange(c0, c1, dtype=np.float32), np.arange(r0, r1, dtype=np.float32))
        a, b = self.inv.a, self.inv.b
        x = a[0, 0] * cc + a[0, 1] * rr + b[0]
        y = a[1, 0] * cc + a[1, 1] * rr + b[1]
        return x.astype(np.float32), y.astype(np.float32)

    # ------------------------------------------------------------------ bodies
    def body(
        self,
        quad_mm: np.ndarray,
        shape: BodyShape,
        *,
        width_mm: float,
        slices: Sequence[tuple[np.ndarray, float]],
        mu_cortex: float,
        mu_trab: float,
        t_end: tuple[float, float] = (0.8, 0.8),
        t_wall: float = 0.5,
        t_shell: float = 0.6,
        k_front: float = 2.2,
        k_back: float = 4.5,
        texture: float = 0.12,
        sclerosis: tuple[float, float] = (0.0, 0.0),
        holes: Sequence[tuple[np.ndarray, float]] = (),
    ) -> None:
        """Add a vertebral body.

        Parameters
        ----------
        quad_mm
            (SA, SP, IP, IA) of the mid-plane body, mm.
        shape
            Outline shape inside the quadrilateral.
        width_mm
            Extent of the body along the beam at its widest (transverse width on a lateral view,
            depth on an AP view).
        slices
            ``(offset_mm, weight)`` per slice: each slice is the body shifted by ``offset_mm``
            and carries ``weight`` of the chord (weights sum to 1).
        mu_cortex, mu_trab
            Excess attenuation (1/mm) of cortical and trabecular bone.
        t_end, t_wall, t_shell
            Cortical thickness (mm) of the superior/inferior endplates, of the walls in the image
            plane, and of the shell along the beam.
        k_front, k_back
            Exponents of the cross-section chord profile ``(1-|s|^k)^(1/k)`` in front of and
            behind the body centre (round front, flat back).
        sclerosis
            ``(mm, gain)``: subchondral sclerosis band under both endplates.
        holes
            ``(polygon_mm, fraction)``: regions where the trabecular path is reduced (lytic).
        """
        q = np.asarray(quad_mm, float)
        all_px = np.vstack([self.cam(q + off) for off, _ in slices])
        roi = self._roi(all_px, 4)
        if roi is None:
            return
        r0, r1, c0, c1 = roi
        cc, rr = np.meshgrid(np.arange(c0, c1, dtype=np.float32), np.arange(r0, r1, dtype=np.float32))
        grid = np.stack([cc, rr], axis=-1).astype(np.float64)
        acc = np.zeros((r1 - r0, c1 - c0), np.float32)
        half_depth = 0.25 * (
            np.hypot(*(q[0] - q[1])) + np.hypot(*(q[3] - q[2]))
        )  # mm, mean half endplate length
        half_h = 0.25 * (np.hypot(*(q[1] - q[2])) + np.hypot(*(q[0] - q[3])))
        axis = q[2] + q[3] - q[0] - q[1]
        tex = self.texture(roi, float(np.arctan2(-axis[0], axis[1])))
        for off, weight in slices:
            qpx = self.cam(q + off)
            s, t = inverse_bilinear(grid, qpx)
            s = s.astype(np.float32)
            t = t.astype(np.float32)
            r, w_end = body_radius(s, t, shape)
            gy, gx = np.gradient(r)
            gnorm = np.sqrt(gx * gx + gy * gy) + 1e-6
            d_px = (1.0 - r) / gnorm
            cover = np.clip(d_px + 0.5, 0.0, 1.0)
            if not cover.any():
                continue
            d_mm = d_px / self.ppm
            sa = np.clip(np.abs(s), 0.0, 1.0)
            k = np.where(s > 0, k_front, k_back)
            chord = width_mm * (1.0 - sa**k) ** (1.0 / k)
            s_in = sa * half_depth / max(half_depth - t_shell, 1.0)
            inner = np.where(
                s_in < 1.0,
                (width_mm - 2 * t_shell) * (1.0 - np.minimum(s_in, 1.0) ** k) ** (1.0 / k),
                0.0,
            )
            shell = chord - inner
            t_e = np.where(t < 0, t_end[0], t_end[1])
            t_plate = t_e * w_end + t_wall * (1 - w_end)
            plate = 1.0 - _smoothstep((d_mm - t_plate) / 0.35 + 0.5)
            cort = np.maximum(plate * chord, shell)
            trab = np.maximum(chord - cort, 0.0)
            dens = mu_trab * (1.0 + texture * tex)
            if sclerosis[0] > 0 and sclerosis[1] > 0:
                d_end = (1.0 - np.abs(t)) * half_h
                dens = dens * (1.0 + sclerosis[1] * np.exp(-np.maximum(d_end, 0) / sclerosis[0]))
            val = (mu_cortex * cort + dens * trab) * cover * weight
            acc += val.astype(np.float32)
        for poly, frac in holes:
            m = np.zeros(acc.shape, np.uint8)
            pts = np.round((self.cam(poly) - [c0, r0]) * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, 4)
            mf = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.5 * self.ppm))
            acc *= 1.0 - frac * mf
        self.bone[r0:r1, c0:c1] += acc

    # ------------------------------------------------------------------ capsules
    def capsules(
        self,
        caps: Sequence[Capsule],
        *,
        mu_cortex: float,
        mu_trab: float,
        texture: float = 0.1,
        axis_angle: float = 0.0,
        union: bool = True,
    ) -> None:
        """Add the union (``union=True``: max of the chords) or the sum of capsules."""
        if not caps:
            return
        ends = np.array([p for c in caps for p in (c.a, c.b)], float)
        rad = max(max(c.ra, c.rb) + c.thread for c in caps)
        roi = self._roi(self.cam(ends), rad * self.ppm + 3)
        if roi is None:
            return
        x_all, y_all = self._mm_grid(roi)
        outer = np.zeros(x_all.shape, np.float32)
        inner = np.zeros(x_all.shape, np.float32)
        r0, r1, c0, c1 = roi
        for c in caps:
            sub = self._roi(
                self.cam(np.array([c.a, c.b], float)), (max(c.ra, c.rb) + c.thread) * self.ppm + 2
            )
            if sub is None:
                continue
            sr = slice(max(sub[0], r0) - r0, min(sub[1], r1) - r0)
            sc = slice(max(sub[2], c0) - c0, min(sub[3], c1) - c0)
            x, y = x_all[sr, sc], y_all[sr, sc]
            if x.size == 0:
                continue
            ax, ay = c.a
            bx, by = c.b
            dx, dy = bx - ax, by - ay
            ll = dx * dx + dy * dy
            h = np.zeros_like(x) if ll < 1e-9 else np.clip(((x - ax) * dx + (y - ay) * dy) / ll, 0.0, 1.0)
            px = x - ax - h * dx
            py = y - ay - h * dy
            rho2 = px * px + py * py
            r = c.ra + (c.rb - c.ra) * h
            if c.thread > 0:
                along = h * np.sqrt(ll) / 2.8
                r = r + c.thread * (np.abs(along - np.floor(along) - 0.5) * 2 - 0.5)
            o = 2 * c.depth * np.sqrt(np.maximum(r * r - rho2, 0.0))
            ri = np.maximum(r - c.shell, 0.0)
            i = 2 * c.depth * np.sqrt(np.maximum(ri * ri - rho2, 0.0))
            if union:
                np.maximum(outer[sr, sc], o, out=outer[sr, sc])
                np.maximum(inner[sr, sc], i, out=inner[sr, sc])
            else:
                outer[sr, sc] += o
                inner[sr, sc] += i
        val = mu_cortex * (outer - inner)
        if mu_trab:
            tex = self.texture(roi, axis_angle) if texture else 0.0
            val += mu_trab * inner * (1.0 + texture * tex)
        self.bone[r0:r1, c0:c1] += val.astype(np.float32)

    def ellipsoid(
        self,
        centre: np.ndarray,
        axes: tuple[float, float],
        angle: float,
        *,
        depth: float,
        mu_cortex: float,
        mu_trab: float,
        shell: float = 1.0,
        tube: bool = False,
        texture: float = 0.08,
    ) -> None:
        """An ellipsoid blob (chord ``depth·sqrt(1-r²)``) or, with ``tube``, a tube seen end-on
        (constant chord ``depth``, cortical ring: pedicles on an AP view)."""
        a, b = axes
        cx, cy = float(centre[0]), float(centre[1])
        rr_ = max(a, b)
        roi = self._roi(self.cam(np.array([[cx - rr_, cy - rr_], [cx + rr_, cy + rr_]])), 3)
        if roi is None:
            return
        x, y = self._mm_grid(roi)
        ca, sa = np.cos(angle), np.sin(angle)
        u = ((x - cx) * ca + (y - cy) * sa) / a
        v = (-(x - cx) * sa + (y - cy) * ca) / b
        r2 = u * u + v * v
        ui = u * a / max(a - shell, 0.3)
        vi = v * b / max(b - shell, 0.3)
        ri2 = ui * ui + vi * vi
        if tube:
            edge = np.clip((1.0 - np.sqrt(r2)) * min(a, b) * self.ppm + 0.5, 0, 1)
            o = depth * edge
            i = depth * np.clip((1.0 - np.sqrt(ri2)) * min(a, b) * self.ppm + 0.5, 0, 1)
        else:
            o = depth * np.sqrt(np.maximum(1.0 - r2, 0.0))
            i = max(depth - 2 * shell, 0.0) * np.sqrt(np.maximum(1.0 - ri2, 0.0))
        val = mu_cortex * (o - i) + mu_trab * i * (1.0 + texture * self.texture(roi, angle))
        r0, r1, c0, c1 = roi
        self.bone[r0:r1, c0:c1] += val.astype(np.float32)

    # ------------------------------------------------------------------ plates and lines
    def slab(
        self,
        polygon: np.ndarray,
        *,
        thickness: float,
        mu: float,
        taper_mm: float = 6.0,
        rim_mu: float = 0.0,
        rim_mm: float = 1.5,
        texture: float = 0.15,
        axis_angle: float = 0.0,
    ) -> None:
        """A plate of ``thickness`` mm along the beam inside ``polygon`` (mm), thinning towards its
        edge over ``taper_mm``, with a dense rim of excess ``rim_mu`` × ``thickness``."""
        px = self.cam(polygon)
        roi = self._roi(px, 3 + 2 * taper_mm * self.ppm)
        if roi is None:
            return
        r0, r1, c0, c1 = roi
        # work at half resolution: plates are smooth
        f = 2 if self.ppm > 3 else 1
        h, w = (r1 - r0 + f - 1) // f, (c1 - c0 + f - 1) // f
        m = np.zeros((h, w), np.uint8)
        pts = np.round((px - [c0, r0]) / f * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, 4)
        mf = m.astype(np.float32) / 255.0
        sig = max(taper_mm * self.ppm / f / 2, 0.5)
        prof = cv2.GaussianBlur(mf, (0, 0), sig) * mf
        prof = np.clip(prof * 2 - 0.2, 0, 1) ** 0.7
        val = mu * thickness * prof
        if rim_mu:
            rs = max(rim_mm * self.ppm / f, 0.6)
            rim = mf * np.clip(1.0 - cv2.GaussianBlur(mf, (0, 0), rs), 0, 1) * 2.0
            val += rim_mu * thickness * np.clip(rim, 0, 1)
        full = cv2.resize(val, (w * f, h * f), interpolation=cv2.INTER_LINEAR)[: r1 - r0, : c1 - c0]
        if texture:
            full = full * (1.0 + texture * self.texture(roi, axis_angle))
        self.bone[r0:r1, c0:c1] += full.astype(np.float32)

    def line(self, points: np.ndarray, *, width_mm: float, value: float, blur_mm: float = 0.2) -> None:
        """A dense (or, with negative ``value``, lucent) curve of ``width_mm``: excess ``value``."""
        px = self.cam(points)
        roi = self._roi(px, width_mm * self.ppm + 3 * blur_mm * self.ppm + 3)
        if roi is None:
            return
        r0, r1, c0, c1 = roi
        m: np.ndarray = np.zeros((r1 - r0, c1 - c0), np.float32)
        pts = np.round((px - [c0, r0]) * 16).astype(np.int32).reshape(-1, 1, 2)
        thick = max(1, round(width_mm * self.ppm))
        cv2.polylines(m, [pts], False, 1.0, thick, cv2.LINE_AA, 4)
        if blur_mm * self.ppm > 0.3:
            m = cv2.GaussianBlur(m, (0, 0), blur_mm * self.ppm)
        self.bone[r0:r1, c0:c1] += value * m

    # ------------------------------------------------------------------ soft tissue
    def lr_grid_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame (x, y) mm of every low-resolution pixel centre."""
        rr, cc = np.mgrid[0 : self.lr_shape[0], 0 : self.lr_shape[1]].astype(np.float32)
        cc = cc * LR + (LR - 1) / 2
        rr = rr * LR + (LR - 1) / 2
        a, b = self.inv.a, self.inv.b
        return (a[0, 0] * cc + a[0, 1] * rr + b[0]), (a[1, 0] * cc + a[1, 1] * rr + b[1])

    def soft_field(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Add ``fn(x_mm, y_mm)`` evaluated on the low-resolution grid."""
        x, y = self.lr_grid_mm()
        self.soft += np.asarray(fn(x, y), np.float32)

    def soft_blob(self, polygon: np.ndarray, value: float, blur_mm: float = 2.0) -> None:
        """Uniform ``value`` inside ``polygon`` (mm) on the low-resolution layer."""
        px = self.cam(polygon) / LR
        m = np.zeros(self.lr_shape, np.uint8)
        cv2.fillPoly(m, [np.round(px * 16).astype(np.int32).reshape(-1, 1, 2)], 255, cv2.LINE_AA, 4)
        mf: np.ndarray = m.astype(np.float32) / 255.0
        s = blur_mm * self.ppm / LR
        if s > 0.3:
            mf = cv2.GaussianBlur(mf, (0, 0), s)
        self.soft += value * mf

    def attenuation(self) -> np.ndarray:
        """Total excess attenuation over air (soft layer upsampled + bone), float32."""
        soft = cv2.resize(self.soft, (self.columns, self.rows), interpolation=cv2.INTER_CUBIC)
        return soft + self.bone
