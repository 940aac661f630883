"""Grayscale Softcopy Presentation State: the overlay as toggleable graphics on the source image.

* One graphic layer per colour (GSPS colours are per layer; highdicom writes no line styles):
  ``AI_VERTEBRAE`` outlines and labels, ``AI_MEASURE`` level constructions without listhesis /
  normal cervical ROI, ``AI_FINDING`` levels with listhesis / abnormal ROI, ``AI_INFO`` model
  identification, caution and summary text (including "No spondylolisthesis >= 5 % …").
* Graphic and text objects carry tracking IDs/UIDs: the vertebra UID on outlines and vertebra
  labels (= SEG segment and SR group), the level-finding UID on the level construction (endplate
  lines, the three corner points, the perpendicular from the slipped corner) and its label
  (= SR level group).
* PIXEL units on the single referenced source image. Text is plain ASCII (``>=`` not ``≥``).
* Presentation LUT: INVERSE for MONOCHROME1 sources (PS3.4 N.2.1.4: the presentation state
  overrides the image's photometric interpretation), IDENTITY otherwise. The Modality LUT is
  copied by highdicom; the VOI is the source's default (first) window, else its first VOI LUT,
  else a window over the stored bit range (no pixel decoding needed).
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cdss.encode.common import EncodeContext, ResultKind, to_image_coordinates
from cdss.encode.overlay import Overlay

__all__ = ["encode_gsps"]


def _floats(value: object) -> list[float]:
    if value is None:
        return []
    items: list[Any] = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [float(v) for v in items]


def _window(src: Dataset) -> hd.pr.SoftcopyVOILUTTransformation | None:
    """The source's first (default) window, or None."""
    centers, widths = _floats(src.get("WindowCenter")), _floats(src.get("WindowWidth"))
    if not centers or not widths or widths[0] <= 0:
        return None
    explanations = src.get("WindowCenterWidthExplanation")
    explanation = None
    if explanations:
        explanation = str(explanations[0] if isinstance(explanations, MultiValue) else explanations) or None
    function = str(src.get("VOILUTFunction", "") or "") or None
    if function not in (None, "LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = None
    # One-element lists: highdicom 0.28.2 splits a plain-string explanation into characters.
    return hd.pr.SoftcopyVOILUTTransformation(
        window_center=[centers[0]],
        window_width=[widths[0]],
        window_explanation=[explanation] if explanation else None,
        voi_lut_function=function,
    )


def _voi_lut(src: Dataset) -> hd.pr.SoftcopyVOILUTTransformation | None:
    """The source's first VOI LUT, whatever VR its LUT Data was read with, or None."""
    seq = src.get("VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    data = item.LUTData
    if isinstance(data, bytes):
        # OW: 16-bit words, also for 8-bit entries (PS3.3 C.11.2.1.1); OB-like 8-bit data otherwise.
        dtype = np.uint16 if len(data) >= 2 * entries else np.uint8
        values = np.frombuffer(data, dtype=dtype)[:entries]
    else:
        values = np.asarray(_floats(data))[:entries]
    lut = values.astype(np.uint8 if bits <= 8 else np.uint16)
    explanation = str(item.get("LUTExplanation", "") or "") or None
    return hd.pr.SoftcopyVOILUTTransformation(
        voi_luts=[hd.VOILUT(first_mapped_value=first, lut_data=lut, lut_explanation=explanation)]
    )


def _bit_range_window(src: Dataset) -> hd.pr.SoftcopyVOILUTTransformation:
    """A window over the stored bit range after the modality rescale (no pixel decoding)."""
    bits = int(src.get("BitsStored", 12))
    signed = int(src.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = float(src.get("RescaleSlope", 1) or 1)
    intercept = float(src.get("RescaleIntercept", 0) or 0)
    a, b = sorted((lo * slope + intercept, hi * slope + intercept))
    return hd.pr.SoftcopyVOILUTTransformation(
        window_center=(a + b + 1) / 2.0, window_width=max(b - a + 1, 2.0)
    )


def _voi(ctx: EncodeContext) -> list[hd.pr.SoftcopyVOILUTTransformation]:
    """The VOI transformation of the GSPS: the source's default window, else its first VOI LUT,
    else a window over the stored range. Built here rather than copied by highdicom, which fails
    on LUT Data read as US values and on images that carry both a window and a VOI LUT."""
    src = ctx.source
    for make in (_window, _voi_lut):
        try:
            voi = make(src)
        except (ValueError, TypeError, AttributeError, IndexError):
            voi = None  # malformed VOI attributes in the source: fall through
        if voi is not None:
            return [voi]
    return [_bit_range_window(src)]


def _shifted_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A text box in DICOM image coordinates (0\\0 = the top-left pixel's corner)."""
    x0, y0 = _shifted_point((box[0], box[1]))
    x1, y1 = _shifted_point((box[2], box[3]))
    return x0, y0, x1, y1


def _shifted_point(point: tuple[float, float]) -> tuple[float, float]:
    c, r = to_image_coordinates(np.array(point, dtype=float))
    return float(c), float(r)


def encode_gsps(ctx: EncodeContext, overlay: Overlay) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """The GSPS that draws ``overlay`` over ``ctx.source``."""
    src = ctx.source
    layers = {
        style.name: hd.pr.GraphicLayer(
            layer_name=style.name,
            order=style.order,
            description=style.description,
            display_color=hd.color.CIELabColor.from_rgb(*style.rgb),
        )
        for style in overlay.used_layers()
    }
    annotations = []
    for name, layer in layers.items():
        graphics = [
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POINT
                if g.kind == "point"
                else hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=to_image_coordinates(g.points),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                tracking_id=g.tracking_id,
                tracking_uid=g.tracking_uid,
            )
            for g in overlay.graphics
            if g.layer == name
        ]
        texts = [
            hd.pr.TextObject(
                text_value=t.text,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                bounding_box=_shifted_box(t.box),
                anchor_point=None if t.anchor is None else _shifted_point(t.anchor),
                tracking_id=t.tracking_id,
                tracking_uid=t.tracking_uid,
            )
            for t in overlay.labels
            if t.layer == name
        ]
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[src],
                graphic_layer=layer,
                graphic_objects=graphics or None,
                text_objects=texts or None,
            )
        )
    extra: dict[str, object] = {}
    if str(src.PhotometricInterpretation).upper() == "MONOCHROME1":
        extra["presentation_lut_transformation"] = hd.PresentationLUTTransformation(
            presentation_lut_shape=hd.PresentationLUTShapeValues.INVERSE
        )
    extra["voi_lut_transformations"] = _voi(ctx)
    kwargs = ctx.common_kwargs(ResultKind.GSPS)
    # GSPS has Presentation State Identification instead of content date/time arguments.
    for key in ("content_date", "content_time"):
        kwargs.pop(key, None)
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[src],
        content_label="AI_SPINE",
        content_description=f"AI overlay {ctx.model.name}"[:64],
        graphic_layers=list(layers.values()),
        graphic_annotations=annotations,
        contributing_equipment=ctx.contributing_equipment(),
        **ctx.equipment(),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    ctx.copy_source_attributes(gsps, orientation=False)
    return gsps
