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

import highdicom as hd
from pydicom.dataset import Dataset

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
    sc.PatientOrientation = orientation if orientation is not None else ""
    sc.ContentDate = ctx.created.strftime("%Y%m%d")
    sc.ContentTime = ctx.created.strftime("%H%M%S")
    sc.ManufacturerModelName = ctx.model_name_lo
    sc.SoftwareVersions = list(equipment["software_versions"])
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


def _build(ctx, rgb, orientation, kwargs, equipment) -> hd.sc.SCImage:  # type: ignore[no-untyped-def]
    common = {
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
            patient_orientation=tuple(orientation) if orientation else _PLACEHOLDER_ORIENTATION, **common
        )
    except ValueError:
        # Orientation values highdicom's enumeration does not accept (e.g. oblique "AL"): the
        # source's value is copied verbatim afterwards.
        return hd.sc.SCImage.from_ref_dataset(patient_orientation=_PLACEHOLDER_ORIENTATION, **common)
