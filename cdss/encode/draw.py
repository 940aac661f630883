"""Draw an :class:`~cdss.encode.overlay.Overlay` on a radiograph (the Secondary Capture's pixels).

Drawing belongs to the encode layer because the Secondary Capture burns it in; read-back
rendering of DICOM files (``cdss render``, dashboard thumbnails) lives above it in
:mod:`cdss.render` and imports from here, never the reverse.

Images are ``(Rows, Columns, 3)`` uint8 RGB in display polarity (bone bright); coordinates are
``(column, row)`` source pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.pixels import display_image, to_uint8
from cdss.encode.overlay import Overlay, TextLabel

__all__ = ["DrawError", "draw_overlay", "source_display_u8"]


class DrawError(ValueError):
    """An overlay cannot be drawn on the given image; the message says why."""


def source_display_u8(source: Dataset) -> np.ndarray:
    """The source's first frame as uint8 greyscale in display polarity (decodes the pixels)."""
    return to_uint8(display_image(source))


def _line_width(shape: tuple[int, int]) -> int:
    return max(1, round(max(shape) / 900))


def _put_text(img: np.ndarray, label: TextLabel, rgb: tuple[int, int, int]) -> None:
    x0, y0, _, y1 = label.box
    box_h = max(y1 - y0, 6.0)
    scale = box_h * 0.72 / 22.0  # FONT_HERSHEY_SIMPLEX is ~22 px tall at scale 1
    thickness = max(1, round(box_h / 14))
    (tw, th), _ = cv2.getTextSize(label.text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    # Darken the background so text stays legible over bright bone.
    r0, r1 = int(max(y0 - 1, 0)), int(min(y0 + box_h + 1, img.shape[0]))
    c0, c1 = int(max(x0 - 2, 0)), int(min(x0 + tw + 3, img.shape[1]))
    if r1 > r0 and c1 > c0:
        img[r0:r1, c0:c1] = (img[r0:r1, c0:c1].astype(np.float32) * 0.35).astype(np.uint8)
    if label.anchor is not None:
        ax, ay = label.anchor
        near_x = x0 if abs(ax - x0) < abs(ax - (x0 + tw)) else x0 + tw
        cv2.line(img, (round(ax), round(ay)), (round(near_x), round(y0 + box_h / 2)), rgb, 1, cv2.LINE_AA)
    origin = (round(x0), round(y0 + (box_h + th) / 2.0))
    cv2.putText(img, label.text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, thickness, cv2.LINE_AA)


def draw_overlay(grey: np.ndarray, overlay: Overlay) -> np.ndarray:
    """Draw ``overlay`` on a display-polarity greyscale image.

    Parameters
    ----------
    grey
        ``(Rows, Columns)`` uint8 (0 = black) or float in [0, 1].
    overlay
        What to draw, in (column, row) source pixels.

    Returns
    -------
    numpy.ndarray
        ``(Rows, Columns, 3)`` uint8 RGB.

    Raises
    ------
    DrawError
        The image and the overlay have different shapes.
    """
    if grey.dtype != np.uint8:
        grey = to_uint8(np.asarray(grey, dtype=np.float32))
    if grey.shape != overlay.shape:
        raise DrawError(f"image is {grey.shape} but the overlay was made for {overlay.shape} (rows, columns)")
    img = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    lw = _line_width(overlay.shape)
    styles = overlay.layers
    order = {name: s.order for name, s in styles.items()}
    for g in sorted(overlay.graphics, key=lambda g: order.get(g.layer, 99)):
        rgb = styles[g.layer].rgb if g.layer in styles else (255, 255, 0)
        pts = np.round(np.asarray(g.points, dtype=float) * 16.0).astype(np.int32)
        if g.kind == "point":
            for x, y in pts:
                cv2.circle(img, (int(x), int(y)), int(16 * (lw * 2 + 1)), rgb, lw, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, rgb, lw, cv2.LINE_AA, shift=4)
    for t in sorted(overlay.labels, key=lambda t: order.get(t.layer, 99)):
        rgb = styles[t.layer].rgb if t.layer in styles else (255, 255, 0)
        _put_text(img, t, rgb)
    return img
