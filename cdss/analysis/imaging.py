"""Image helpers shared by the analyses and by training (which must resample exactly like inference).

Coordinates are ``(column, row)`` source pixels; sizes are pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["level_crop_box", "resize_longest"]


def resize_longest(image: np.ndarray, max_side: int) -> np.ndarray:
    """Aspect-preserving downscale (INTER_AREA) so that the longest side is at most ``max_side``.

    Parameters
    ----------
    image
        ``(rows, columns)`` or ``(rows, columns, channels)`` array.
    max_side
        Longest side of the result, pixels. Images already that small are returned unchanged
        (never upscaled).
    """
    rows, cols = image.shape[:2]
    scale = max_side / max(rows, cols)
    if scale >= 1.0:
        return image
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def level_crop_box(
    upper: np.ndarray, lower: np.ndarray, factor: float, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float, float]:
    """Square around two adjacent vertebrae: ``(centre column, centre row, side)``, pixels.

    The side is ``factor`` × the larger extent of the two outlines (``(N, 2)`` (column, row)
    px) together; ``shift`` moves the centre by that fraction of the side. The lumbar zoom
    refinement and the level-crop training samples use the same box.
    """
    pts = np.vstack([np.asarray(upper, dtype=float), np.asarray(lower, dtype=float)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    side = float(max(hi - lo)) * factor
    centre = (lo + hi) / 2 + np.asarray(shift, dtype=float) * side
    return float(centre[0]), float(centre[1]), side
