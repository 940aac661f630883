"""Rasterising anatomy into a projected-attenuation map (the "line integral" image).

The :class:`Canvas` holds, on the final image grid, the sum over structures of attenuation
coefficient × path length (dimensionless, ``-ln`` of the transmitted fraction). Bones are drawn
at full resolution in a small region of interest each (mask → distance to the outline → a
projected-thickness profile with a cortical rim and trabecular texture); soft tissue and other
smooth structures are drawn on a grid ``LOWRES`` times coarser and upsampled once. Shapes are
given in the view's patient frame (millimetres) and mapped with :attr:`Canvas.to_px`.
"""

from __future__ import annotations

import cv2
import numpy as np

from cdss.synth.shapes import Affine

__all__ = ["LOWRES", "Canvas"]

#: Down-sampling factor of the smooth (soft-tissue) layer.
LOWRES = 4
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_ONE = 1 << _SHIFT


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, dtype=float) * _ONE).astype(np.int32).reshape(-1, 1, 2)


class Canvas:
    """Projected attenuation on a ``rows × columns`` grid.

    Parameters
    ----------
    rows, columns
        Image size in pixels.
    to_px
        Map from the patient frame (mm) to image pixels (column, row).
    rng
        Random generator for textures.
    texture_angle_rad
        Direction (image frame, clockwise from "down") along which trabeculae are elongated.
    """

    def __init__(
        self, rows: int, columns: int, to_px: Affine, rng: np.random.Generator, texture_angle_rad: float = 0.0
    ) -> None:
        self.rows, self.columns = rows, columns
        self.to_px = to_px
        self.px_per_mm = to_px.linear_scale
        self.rng = rng
        self.bone = np.zeros((rows, columns), np.float32)
        self.lr_shape = ((rows + LOWRES - 1) // LOWRES, (columns + LOWRES - 1) // LOWRES)
        self.soft = np.zeros(self.lr_shape, np.float32)
        self.texture = self._texture(texture_angle_rad)

    # ------------------------------------------------------------------ textures
    def _texture(self, angle: float) -> np.ndarray:
        """Unit-variance anisotropic band-pass noise (trabecular pattern), full resolution."""
        # work on a grid with ~0.3 mm pixels, then upsample
        step = max(1, round(0.22 * self.px_per_mm))
        h, w = self.rows // step + 2, self.columns // step + 2
        noise = self.rng.standard_normal((h, w), dtype=np.float32)
        k = 9
        yy, xx = np.mgrid[-(k // 2) : k // 2 + 1, -(k // 2) : k // 2 + 1].astype(np.float32)
        along = xx * np.sin(angle) + yy * np.cos(angle)
        across = xx * np.cos(angle) - yy * np.sin(angle)
        kern = np.exp(-0.5 * ((along / 2.5) ** 2 + (across / 0.7) ** 2))
        kern /= kern.sum()
        fine = cv2.filter2D(noise, -1, kern, borderType=cv2.BORDER_REFLECT)
        coarse = cv2.GaussianBlur(noise, (0, 0), 4.0)
        tex = fine / (fine.std() + 1e-6) + 0.35 * coarse / (coarse.std() + 1e-6)
        # horizontal trabeculae cross the vertical ones
        kern_h = np.exp(-0.5 * ((along / 0.8) ** 2 + (across / 2.0) ** 2))
        kern_h /= kern_h.sum()
        tex += 0.5 * cv2.filter2D(self.rng.standard_normal((h, w), dtype=np.float32), -1, kern_h)
        tex = cv2.resize(tex, (w * step, h * step), interpolation=cv2.INTER_CUBIC)[
            : self.rows, : self.columns
        ]
        tex /= tex.std() + 1e-6
        return tex.astype(np.float32)

    # ------------------------------------------------------------------ bones
    def _roi(self, px: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
        c0 = int(np.floor(px[:, 0].min() - margin))
        c1 = int(np.ceil(px[:, 0].max() + margin)) + 1
        r0 = int(np.floor(px[:, 1].min() - margin))
        r1 = int(np.ceil(px[:, 1].max() + margin)) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, self.columns), min(r1, self.rows)
        if c1 - c0 < 2 or r1 - r0 < 2:
            return None
        return r0, r1, c0, c1

    def bone_shape(
        self,
        outline_mm: np.ndarray,
        *,
        density: float,
        cortex: float = 0.0,
        cortex_mm: float = 1.0,
        taper_mm: float = 4.0,
        texture: float = 0.12,
        holes: list[np.ndarray] | None = None,
        axis: tuple[np.ndarray, np.ndarray, float, float] | None = None,
    ) -> None:
        """Add a bone projected as a solid with a tapering edge and a cortical rim.

        Parameters
        ----------
        outline_mm
            Closed outline in the patient frame (mm).
        density
            Attenuation × path length of the trabecular bone well inside the outline.
        cortex
            Extra attenuation at the outline (tangential cortical shell), decaying inwards with
            length ``cortex_mm``.
        taper_mm
            Distance over which the projected thickness rises from the outline (elliptical profile).
        texture
            Relative amplitude of the trabecular texture.
        holes
            Outlines (mm) cut out of the shape (e.g. a foramen seen through a pedicle ring).
        axis
            ``(centre_mm, direction, half_width_mm, flat)``: the bone is a cylinder across this
            direction; its projected thickness follows an ellipse along it, never below ``flat``
            (e.g. a vertebral body seen laterally is thickest halfway between its walls).
        """
        px = self.to_px(outline_mm)
        s = self.px_per_mm
        roi = self._roi(px, 3)
        if roi is None:
            return
        r0, r1, c0, c1 = roi
        mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
        off = np.array([c0, r0], dtype=float)
        cv2.fillPoly(mask, [_fixed(px - off)], 255, cv2.LINE_AA, _SHIFT)
        for hole in holes or []:
            cv2.fillPoly(mask, [_fixed(self.to_px(hole) - off)], 0, cv2.LINE_AA, _SHIFT)
        binary = (mask > 127).astype(np.uint8)
        dist = cv2.distanceTransform(binary, cv2.DIST_L2, 3) / s  # mm from the outline
        alpha = mask.astype(np.float32) / 255.0
        u = np.clip(dist / max(taper_mm, 1e-3), 0.0, 1.0)
        thick = np.sqrt(u * (2.0 - u))
        if axis is not None:
            centre, direction, half, flat = axis
            inv = self.to_px.inverse().m
            d = np.asarray(direction, float) / np.hypot(*direction)
            # t = ((inv @ [c, r, 1]) - centre) . d / half, linear in (c, r)
            gc = (inv[0, 0] * d[0] + inv[1, 0] * d[1]) / half
            gr = (inv[0, 1] * d[0] + inv[1, 1] * d[1]) / half
            g0 = ((inv[0, 2] - centre[0]) * d[0] + (inv[1, 2] - centre[1]) * d[1]) / half
            cc = np.arange(c0, c1, dtype=np.float32)[None, :]
            rr = np.arange(r0, r1, dtype=np.float32)[:, None]
            t = gc * cc + gr * rr + g0
            thick = thick * (flat + (1 - flat) * np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0)))
        val = density * thick * (1.0 + texture * self.texture[r0:r1, c0:c1])
        if cortex:
            val += cortex * np.exp(-dist / max(cortex_mm, 1e-3))
        self.bone[r0:r1, c0:c1] += (val * alpha).astype(np.float32)

    def dense_polygon(self, outline_mm: np.ndarray, value: float, blur_mm: float = 0.0) -> None:
        """Add a uniform attenuation inside a polygon at full resolution (markers, calcifications)."""
        px = self.to_px(outline_mm)
        margin = 3 + 3 * blur_mm * self.px_per_mm
        roi = self._roi(px, margin)
        if roi is None:
            return
        r0, r1, c0, c1 = roi
        mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.fillPoly(mask, [_fixed(px - np.array([c0, r0]))], 255, cv2.LINE_AA, _SHIFT)
        m: np.ndarray = mask.astype(np.float32) / 255.0
        if blur_mm > 0:
            m = cv2.GaussianBlur(m, (0, 0), blur_mm * self.px_per_mm)
        self.bone[r0:r1, c0:c1] += value * m

    # ------------------------------------------------------------------ soft tissue
    def soft_polygon(self, outline_mm: np.ndarray, value: float, blur_mm: float = 2.0) -> None:
        """Add a smooth, uniform attenuation inside a polygon on the low-resolution layer."""
        px = self.to_px(outline_mm) / LOWRES
        mask = np.zeros(self.lr_shape, np.uint8)
        cv2.fillPoly(mask, [_fixed(px)], 255, cv2.LINE_AA, _SHIFT)
        m: np.ndarray = mask.astype(np.float32) / 255.0
        sigma = blur_mm * self.px_per_mm / LOWRES
        if sigma > 0.3:
            m = cv2.GaussianBlur(m, (0, 0), sigma)
        self.soft += value * m

    def soft_field(self, field: np.ndarray) -> None:
        """Add a low-resolution field (shape :attr:`lr_shape`)."""
        self.soft += field.astype(np.float32)

    def lowres_grid_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame (x, y) mm coordinates of every low-resolution pixel centre."""
        inv = self.to_px.inverse()
        rr, cc = np.mgrid[0 : self.lr_shape[0], 0 : self.lr_shape[1]].astype(np.float32)
        cc = cc * LOWRES + (LOWRES - 1) / 2
        rr = rr * LOWRES + (LOWRES - 1) / 2
        m = inv.m
        x = m[0, 0] * cc + m[0, 1] * rr + m[0, 2]
        y = m[1, 0] * cc + m[1, 1] * rr + m[1, 2]
        return x.astype(np.float32), y.astype(np.float32)

    def attenuation(self) -> np.ndarray:
        """The total projected attenuation, full resolution (float32)."""
        soft = cv2.resize(self.soft, (self.columns, self.rows), interpolation=cv2.INTER_LINEAR)
        return soft + self.bone
