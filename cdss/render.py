"""Read-back rendering: result overlays drawn on radiographs for ``cdss render`` and dashboard thumbnails.

This module sits above :mod:`cdss.encode` and imports from it (never the reverse). The one
drawing routine is :func:`cdss.encode.draw.draw_overlay` (what the Secondary Capture burns in),
re-exported here:

* :func:`render_overlay` — from result dataclasses (what the SC burns in; dashboard thumbnails);
* :func:`render_files` — from DICOM files: a source image plus the SEG and/or GSPS cdss (or
  anyone else) produced; the GSPS graphics and text are drawn as stored, SEG segments as
  outlines in their recommended display colours with their segment labels.

Images are returned as ``(Rows, Columns, 3)`` uint8 RGB in display polarity (bone bright).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.imaging import resize_longest
from cdss.analysis.types import CervicalResult, LumbarResult
from cdss.config import ResultSettings
from cdss.encode.api import overlay_for_context
from cdss.encode.common import EncodeContext
from cdss.encode.draw import DrawError, draw_overlay, source_display_u8
from cdss.encode.overlay import Graphic, LayerStyle, Overlay, TextLabel, overlay_from_gsps, text_height

__all__ = [
    "DrawError",
    "RenderError",
    "draw_overlay",
    "overlay_for_result",
    "overlay_from_seg",
    "render_files",
    "render_overlay",
    "source_display_u8",
    "write_png",
]


class RenderError(ValueError):
    """The files given cannot be drawn together; the message says which and why."""


def overlay_for_result(
    source: Dataset, result: LumbarResult | CervicalResult, settings: ResultSettings | None = None
) -> Overlay:
    """The overlay the GSPS/SC of ``result`` carry (pure: no pixel decoding)."""
    return overlay_for_context(EncodeContext(source, result, settings or ResultSettings()))


def render_overlay(
    source_ds: Dataset,
    result: LumbarResult | CervicalResult,
    settings: ResultSettings | None = None,
) -> np.ndarray:
    """The source image with the result's overlay, ``(Rows, Columns, 3)`` uint8 RGB.

    The same pixels as the Secondary Capture (caution lines included).
    """
    return draw_overlay(source_display_u8(source_ds), overlay_for_result(source_ds, result, settings))


def _references(ds: Dataset) -> set[str]:
    """SOP Instance UIDs a SEG or GSPS references (Referenced Series / Source Image sequences)."""
    uids: set[str] = set()
    for series in ds.get("ReferencedSeriesSequence", []):
        for item in series.get("ReferencedInstanceSequence", []) or series.get("ReferencedImageSequence", []):
            uids.add(str(item.ReferencedSOPInstanceUID))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for der in frame.get("DerivationImageSequence", []):
            for item in der.get("SourceImageSequence", []):
                uids.add(str(item.ReferencedSOPInstanceUID))
    return uids


def overlay_from_seg(seg: Dataset, source: Dataset) -> Overlay:
    """SEG segments drawn as outlines (recommended display colour) with their segment labels."""
    shape = (int(source.Rows), int(source.Columns))
    uid = str(source.SOPInstanceUID)
    if uid not in _references(seg):
        raise RenderError(
            f"the SEG {seg.get('SOPInstanceUID', '?')} does not reference the source instance {uid}"
        )
    s = hd.seg.Segmentation.from_dataset(seg, copy=False)
    numbers = list(s.segment_numbers)
    masks = s.get_pixels_by_source_instance(
        source_sop_instance_uids=[uid], segment_numbers=numbers, combine_segments=False
    )[0]
    ov = Overlay(shape=shape, layers={})
    h = text_height(shape)
    for i, number in enumerate(numbers):
        desc = s.get_segment_description(number)
        name = f"SEG_{number}"
        lab = desc.get("RecommendedDisplayCIELabValue")
        rgb = (
            hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
            if lab
            else (0, 200, 255)
        )
        ov.layers[name] = LayerStyle(name, number, str(desc.segment_label), rgb)
        mask = np.asarray(masks[:, :, i] > 0, dtype=np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        tid, tuid = desc.get("TrackingID"), desc.get("TrackingUID")
        for c in contours:
            pts = c.reshape(-1, 2).astype(float)
            ov.graphics.append(Graphic("polyline", np.vstack([pts, pts[:1]]), name, tid, tuid))
        if contours:
            big = max(contours, key=cv2.contourArea).reshape(-1, 2)
            x, y = float(big[:, 0].max()) + h * 0.6, float(big[:, 1].mean())
            text = str(desc.segment_label)
            box = (x, y - h / 2, x + len(text) * 0.62 * h, y + h / 2)
            ov.labels.append(TextLabel(text, box, name, None, tid, tuid))
    return ov


def _merge(base: Overlay, other: Overlay) -> Overlay:
    base.graphics.extend(other.graphics)
    base.labels.extend(other.labels)
    base.layers.update(other.layers)
    return base


def render_files(
    source: Dataset, *, segs: Sequence[Dataset] = (), gsps: Sequence[Dataset] = ()
) -> np.ndarray:
    """The source with the given SEG outlines and GSPS annotations drawn over it (RGB uint8).

    Raises
    ------
    RenderError
        Nothing to draw, or an object does not reference ``source``.
    """
    if not segs and not gsps:
        raise RenderError("give at least one SEG or GSPS to draw over the source image")
    shape = (int(source.Rows), int(source.Columns))
    ov = Overlay(shape=shape, layers={})
    for seg in segs:
        _merge(ov, overlay_from_seg(seg, source))
    for pr in gsps:
        if str(source.SOPInstanceUID) not in _references(pr):
            raise RenderError(
                f"the GSPS {pr.get('SOPInstanceUID', '?')} does not reference the source instance "
                f"{source.SOPInstanceUID}"
            )
        _merge(ov, overlay_from_gsps(pr, shape))
    return draw_overlay(source_display_u8(source), ov)


def write_png(rgb: np.ndarray, path: Path | str, *, max_size: int | None = None) -> Path:
    """Write an RGB image as PNG, downscaled (area interpolation) so its longer side is <= ``max_size``."""
    path = Path(path)
    img = rgb if max_size is None else resize_longest(rgb, max_size)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise RenderError(f"could not write PNG {path}")
    return path
