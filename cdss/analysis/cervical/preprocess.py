"""Image preprocessing of the cervical analysis (seed 004, sections 3.1–3.3).

Order for one oblique view (training and inference share these functions):

1. display image (:func:`cdss.analysis.pixels.display_image`, bone bright) → 8 bit;
2. :func:`crop_roi`: the cervical-spine ROI box widened by a margin is cut out and either resized
   to the network's square input (``stretch``, seed 004; the default) or padded with black to a
   square first (``pad``; the pad is marked invalid);
3. :func:`equalize`: histogram equalisation (seed 004 eq. 1–4, OpenCV's ``equalizeHist``
   algorithm) computed over the valid (non-pad) pixels only, pad stays black;
4. :func:`to_canonical`: flip normalisation — left views are mirrored left↔right so that every
   view reaches the network in the orientation of a right view (:data:`CANONICAL`).

Coordinates are ``(column, row)`` source pixels with the origin at the centre of the top-left
pixel (see :mod:`cdss.analysis.types`). A :class:`CropWindow` maps crop pixels back to source
pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cdss.analysis.types import Laterality

__all__ = [
    "CANONICAL",
    "CROP_MODES",
    "CropWindow",
    "crop_roi",
    "crop_square",
    "crop_stretch",
    "equalize",
    "square_window",
    "to_canonical",
]

#: The orientation every view is normalised to (left views are mirrored into it).
CANONICAL = Laterality.RIGHT


@dataclass(frozen=True)
class CropWindow:
    """A window of the source image resampled to ``size`` × ``size`` crop pixels.

    Attributes
    ----------
    col0, row0
        Source column/row of the window's top-left pixel (integers; may be negative or beyond
        the image, where the crop is padding).
    width, height
        Window size in source pixels (equal for a padded square; different for a stretched ROI).
    size
        Crop side in pixels.
    """

    col0: int
    row0: int
    width: int
    height: int
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per crop pixel, ``(columns, rows)``."""
        return self.width / self.size, self.height / self.size

    @property
    def aspect(self) -> float:
        """Window height / width in source pixels (1 for a square window)."""
        return self.height / self.width

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` crop ``(column, row)`` points to source pixels (pixel-centre convention)."""
        p = np.asarray(points, dtype=np.float64)
        return (p + 0.5) * np.array(self.scale) - 0.5 + np.array([self.col0, self.row0], dtype=np.float64)

    def from_source(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_source`."""
        p = np.asarray(points, dtype=np.float64) - np.array([self.col0, self.row0], dtype=np.float64)
        return (p + 0.5) / np.array(self.scale) - 0.5


def square_window(roi: tuple[float, float, float, float], margin: float) -> tuple[int, int, int]:
    """Integer square window ``(col0, row0, side)`` centred on ``roi`` widened by ``margin``.

    Parameters
    ----------
    roi
        ``(col0, row0, col1, row1)`` source pixels (pixel-centre coordinates of the box corners).
    margin
        Fraction of the box's width/height added on *each* side before squaring (0.08 = 8 %).
    """
    c0, r0, c1, r1 = (float(v) for v in roi)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"empty ROI {roi}: expected col0 < col1 and row0 < row1")
    w = (c1 - c0) * (1.0 + 2.0 * margin)
    h = (r1 - r0) * (1.0 + 2.0 * margin)
    side = max(2, round(max(w, h)))
    cc, rc = (c0 + c1) / 2.0, (r0 + r1) / 2.0
    return round(cc - (side - 1) / 2.0), round(rc - (side - 1) / 2.0), side


def crop_square(
    image: np.ndarray, roi: tuple[float, float, float, float], margin: float, size: int
) -> tuple[np.ndarray, np.ndarray, CropWindow]:
    """Cut the ROI (plus margin) out of ``image``, pad it to a square and resample to ``size``.

    Parameters
    ----------
    image
        2-D uint8 (or float) image, ``(rows, columns)``.
    roi
        ``(col0, row0, col1, row1)`` of the cervical spine, source pixels.
    margin
        Fraction of the ROI width/height added on each side.
    size
        Output side, pixels.

    Returns
    -------
    crop, valid, window
        ``crop`` has ``image``'s dtype and shape ``(size, size)``; padding is 0. ``valid`` is a
        boolean mask of the pixels that come from the ROI-plus-margin rectangle inside the image
        (the rest is padding, excluded from histogram equalisation). ``window`` maps crop pixels
        back to source pixels.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    rows, cols = image.shape
    col0, row0, side = square_window(roi, margin)
    c0, r0, c1, r1 = (float(v) for v in roi)
    mc, mr = (c1 - c0) * margin, (r1 - r0) * margin
    # rectangle kept from the source (ROI + margin, inside the image), integer inclusive bounds
    keep_c0 = max(0, round(c0 - mc))
    keep_r0 = max(0, round(r0 - mr))
    keep_c1 = min(cols - 1, round(c1 + mc))
    keep_r1 = min(rows - 1, round(r1 + mr))
    canvas = np.zeros((side, side), dtype=image.dtype)
    mask = np.zeros((side, side), dtype=np.uint8)
    if keep_c1 >= keep_c0 and keep_r1 >= keep_r0:
        # clip the keep rectangle to the window too
        wc0, wr0 = max(keep_c0, col0), max(keep_r0, row0)
        wc1, wr1 = min(keep_c1, col0 + side - 1), min(keep_r1, row0 + side - 1)
        if wc1 >= wc0 and wr1 >= wr0:
            canvas[wr0 - row0 : wr1 - row0 + 1, wc0 - col0 : wc1 - col0 + 1] = image[
                wr0 : wr1 + 1, wc0 : wc1 + 1
            ]
            mask[wr0 - row0 : wr1 - row0 + 1, wc0 - col0 : wc1 - col0 + 1] = 255
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    crop = cv2.resize(canvas, (size, size), interpolation=interp)
    # valid = every source pixel behind the crop pixel is valid (no blend with the padding)
    valid = cv2.resize(mask, (size, size), interpolation=interp) >= 250
    crop[~valid] = 0
    return crop, valid, CropWindow(col0, row0, side, side, size)


def _resize_axes(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` × ``size``, each axis with INTER_AREA when shrinking, INTER_LINEAR when growing."""
    rows, cols = image.shape[:2]
    if rows != size:
        image = cv2.resize(
            image, (cols, size), interpolation=cv2.INTER_AREA if rows > size else cv2.INTER_LINEAR
        )
    if cols != size:
        image = cv2.resize(
            image, (size, size), interpolation=cv2.INTER_AREA if cols > size else cv2.INTER_LINEAR
        )
    return image


def crop_stretch(
    image: np.ndarray, roi: tuple[float, float, float, float], margin: float, size: int
) -> tuple[np.ndarray, np.ndarray, CropWindow]:
    """Cut the ROI (plus margin) out of ``image`` and resize it to ``size`` × ``size`` (seed 004).

    Unlike :func:`crop_square` the aspect ratio is not kept: the tall cervical ROI is stretched
    sideways, as seed 004 resized its ROI crops to 512 × 512. Pixels of the window outside the
    image are padding (0, invalid). Returns ``crop, valid, window`` like :func:`crop_square`.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    c0, r0, c1, r1 = (float(v) for v in roi)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"empty ROI {roi}: expected col0 < col1 and row0 < row1")
    mc, mr = (c1 - c0) * margin, (r1 - r0) * margin
    col0, row0 = round(c0 - mc), round(r0 - mr)
    width = max(2, round(c1 + mc) - col0 + 1)
    height = max(2, round(r1 + mr) - row0 + 1)
    rows, cols = image.shape
    canvas = np.zeros((height, width), dtype=image.dtype)
    mask = np.zeros((height, width), dtype=np.uint8)
    a0, b0 = max(0, col0), max(0, row0)
    a1, b1 = min(cols, col0 + width), min(rows, row0 + height)
    if a1 > a0 and b1 > b0:
        canvas[b0 - row0 : b1 - row0, a0 - col0 : a1 - col0] = image[b0:b1, a0:a1]
        mask[b0 - row0 : b1 - row0, a0 - col0 : a1 - col0] = 255
    crop = _resize_axes(canvas, size)
    valid = _resize_axes(mask, size) >= 250
    crop[~valid] = 0
    return crop, valid, CropWindow(col0, row0, width, height, size)


#: Crop modes: ``stretch`` (seed 004: ROI + margin resized to a square) or ``pad`` (aspect kept,
#: padded with black to a square).
CROP_MODES = ("stretch", "pad")


def crop_roi(
    image: np.ndarray, roi: tuple[float, float, float, float], margin: float, size: int, mode: str
) -> tuple[np.ndarray, np.ndarray, CropWindow]:
    """:func:`crop_stretch` or :func:`crop_square` by ``mode`` (see :data:`CROP_MODES`)."""
    if mode == "stretch":
        return crop_stretch(image, roi, margin, size)
    if mode == "pad":
        return crop_square(image, roi, margin, size)
    raise ValueError(f"unknown crop mode {mode!r}: one of {CROP_MODES}")


def equalize(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Histogram equalisation of an 8-bit image (seed 004, eq. 1–4).

    Without ``valid`` this is :func:`cv2.equalizeHist`. With ``valid`` the histogram and its
    cumulative distribution are taken over the valid pixels only (the same algorithm as OpenCV:
    the lowest occupied grey level maps to 0, the cumulative count is scaled to 255 and rounded),
    the look-up table is applied to the valid pixels and the rest is set to 0.

    Parameters
    ----------
    image
        uint8 array ``(rows, columns)``.
    valid
        Optional boolean mask of the same shape.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"equalize expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    if valid is None:
        return cv2.equalizeHist(image)
    if valid.shape != image.shape:
        raise ValueError(f"mask shape {valid.shape} differs from image shape {image.shape}")
    values = image[valid]
    out = np.zeros_like(image)
    if values.size == 0:
        return out
    hist = np.bincount(values, minlength=256).astype(np.int64)
    first = int(np.flatnonzero(hist)[0])
    total = int(values.size)
    if hist[first] == total:  # a single grey level: OpenCV maps it to itself
        out[valid] = first
        return out
    scale = 255.0 / (total - hist[first])
    cum = np.cumsum(hist)
    lut = np.rint((cum - hist[first]) * scale)
    lut[:first] = 0
    lut = np.clip(lut, 0, 255).astype(np.uint8)
    out[valid] = lut[values]
    return out


def to_canonical(image: np.ndarray, laterality: Laterality | str) -> np.ndarray:
    """Flip normalisation: mirror views whose side is not :data:`CANONICAL` (left↔right).

    Works on ``(rows, columns)`` and ``(..., rows, columns)`` arrays (flips the last axis).
    """
    lat = Laterality(laterality)
    if lat is CANONICAL:
        return image
    return np.ascontiguousarray(image[..., ::-1])
