"""Secondary Capture fallback: the source image with the overlay burned in (RGB, 8 bit).

For PACS and viewers that show neither SEG nor GSPS. The pixels are the source in *display
polarity* (:func:`cdss.analysis.pixels.display_image`: modality LUT, VOI window, MONOCHROME1
inverted) with exactly the overlay the GSPS carries, drawn by :mod:`cdss.encode.draw`; the top-left
lines say "AI RESULT - <caution>" and the model, so the image is marked in its pixels as well
as in its Series Description. The SC cannot be toggled off: it is an extra series, never a
replacement of the source.

Burned In Annotation (0028,0301) and Recognizable Visual Features (0028,0302) are
de-identification flags (does the pixel data identify the patient?), not AI labels. The overlay
adds no identifying text, so both are copied from the source when it states them and left out
(Type 3 in the SC IOD) when it does not.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

from cdss.encode.common import EncodeContext, ResultKind, patient_orientation
from cdss.encode.draw import draw_overlay, source_display_u8
from cdss.encode.overlay import Overlay

__all__ = ["encode_sc"]

_PLACEHOLDER_ORIENTATION = ("P", "F")


def encode_sc(ctx: EncodeContext, overlay: Overlay) -> hd.sc.SCImage:
    """The Secondary Capture with ``overlay`` burned into the display-polarity source image."""
    src = ctx.source
    rgb = draw_overlay(source_display_u8(src), overlay)
    orientation = patient_orientation(src)
    kwargs = ctx.common_kwargs(ResultKind.SC)
    for key in ("content_date", "content_time"):
        kwargs.pop(key, None)  # SCImage sets its own content date/time
    equipment = ctx.equipment()
    sc = _build(ctx, rgb, orientation, kwargs, equipment)
    # Type 2C, empty when unknown (highdicom needs a value for the PATIENT coordinate system).
    sc.PatientOrientation = orientation if orientation is not None else []
    sc.ContentDate = DA(ctx.created.strftime("%Y%m%d"))
    sc.ContentTime = TM(ctx.created.strftime("%H%M%S"))
    sc.ManufacturerModelName = ctx.model_name_lo
    # pydicom types a multi-valued LO as str | tuple[str]; a list is what it stores
    sc.SoftwareVersions = list(equipment["software_versions"])  # type: ignore[assignment]
    sc.DeviceSerialNumber = ctx.model.short_digest
    sc.ImageComments = ctx.image_comments()
    sc.DerivationDescription = "Source image with AI overlay (outlines, measurements, labels) burned in"
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    for keyword in ("BurnedInAnnotation", "RecognizableVisualFeatures"):
        if keyword in src and src.get(keyword):
            setattr(sc, keyword, src.get(keyword))
    ctx.copy_source_attributes(sc, orientation=False)
    return sc


def _build(
    ctx: EncodeContext,
    rgb: np.ndarray,
    orientation: list[str] | None,
    kwargs: dict[str, Any],
    equipment: dict[str, str | list[str]],
) -> hd.sc.SCImage:
    common: dict[str, Any] = {
        "ref_dataset": ctx.source,
        "pixel_array": rgb,
        "photometric_interpretation": hd.PhotometricInterpretationValues.RGB,
        "bits_allocated": 8,
        "coordinate_system": hd.CoordinateSystemNames.PATIENT,
        "manufacturer": equipment["manufacturer"],
        "contributing_equipment": ctx.contributing_equipment(),
        **kwargs,
    }
    try:
        return hd.sc.SCImage.from_ref_dataset(
            patient_orientation=(orientation[0], orientation[1]) if orientation else _PLACEHOLDER_ORIENTATION,
            **common,
        )
    except ValueError:
        # Orientation values highdicom's enumeration does not accept (e.g. oblique "AL"): the
        # source's value is copied verbatim afterwards.
        return hd.sc.SCImage.from_ref_dataset(patient_orientation=_PLACEHOLDER_ORIENTATION, **common)
