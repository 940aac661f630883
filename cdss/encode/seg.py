"""DICOM Segmentation (BINARY) of the vertebrae found on one lumbar radiograph.

* One segment per detected vertebra, in L1 … S1 order, numbered from 1. Segment label = the
  vertebra ("L4"); property category SCT 91723000 "Anatomical Structure"; property type the SCT
  vertebra code (S1: SCT 54735007 "Sacrum", see :mod:`cdss.encode.codes`); anatomic region
  lumbar spine; algorithm type AUTOMATIC with the model's Algorithm Identification; tracking
  ID ``"L4 vertebra"`` and the vertebra's tracking UID (shared with the SR and GSPS).
* BINARY, uncompressed (Explicit VR Little Endian): the highdicom FAQ advises against
  compressed and LABELMAP SEGs for viewer compatibility. Frames are bit-packed. When Rows ×
  Columns is not a multiple of 8, BINARY frames would straddle bytes (valid DICOM, but Orthanc
  1.10's DICOMweb frame retrieval and dcmjs in OHIF refuse them), so such images get a
  FRACTIONAL (PROBABILITY, maximum 255) SEG holding only 0 and 255: the same masks, one byte per
  pixel, every frame byte-aligned.
* ``results.seg_profile = "ohif"`` (opt-in) adds the shared Pixel Measures and Plane Orientation
  groups OHIF needs (:func:`_add_ohif_geometry`), which a radiograph's SEG should not claim.
* Radiographs have no Frame of Reference (CR never, DX usually) and never an Image Position /
  Orientation: highdicom writes one frame per segment on the source's pixel grid and no plane
  positions; Patient Orientation (Type 2C) is copied from the source (empty when it has none).
* Pixel Measures are written by highdicom only when the source has Pixel Spacing (Imager Pixel
  Spacing is not used).
* No SEG is produced for a result without vertebrae, nor for cervical results.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.types import LumbarResult, Vertebra
from cdss.config import SegProfile
from cdss.encode import codes as C
from cdss.encode.common import (
    SECOND_SEG_SERIES_OFFSET,
    EncodeContext,
    EncodeError,
    ResultKind,
    describe,
)

__all__ = ["VERTEBRA_RGB", "encode_seg"]

#: Recommended display colour per vertebra (also used by ``cdss render`` for SEG outlines).
VERTEBRA_RGB: dict[Vertebra, tuple[int, int, int]] = {
    Vertebra.L1: (230, 25, 75),
    Vertebra.L2: (60, 180, 75),
    Vertebra.L3: (255, 225, 25),
    Vertebra.L4: (0, 130, 200),
    Vertebra.L5: (245, 130, 48),
    Vertebra.S1: (145, 30, 180),
}


def encode_seg(ctx: EncodeContext, profile: SegProfile | None = None) -> hd.seg.Segmentation | None:
    """The Segmentation of ``ctx.result`` (a :class:`LumbarResult`), or None without vertebrae.

    Parameters
    ----------
    ctx
        The encoding context (source, result, ``results`` settings).
    profile
        How to write it; None = ``results.seg_profile``. A SEG in another profile than that
        (for a destination with its own ``seg_profile``) gets its own series: number
        ``results.series_number_base`` + 4, description naming the profile.
    """
    result = ctx.result
    if not isinstance(result, LumbarResult):
        raise EncodeError("a SEG is only encoded for lumbar results (cervical results carry no masks)")
    segments = sorted(result.vertebrae, key=lambda s: s.label.class_id)
    if not segments:
        return None
    labels = [s.label for s in segments]
    if len(set(labels)) != len(labels):
        raise EncodeError(f"result has duplicate vertebrae: {[v.value for v in labels]}")
    algorithm = ctx.algorithm_seg()
    descriptions = []
    for number, seg in enumerate(segments, start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=seg.label.value,
                segmented_property_category=C.ANATOMICAL_STRUCTURE,
                segmented_property_type=C.VERTEBRA[seg.label],
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=f"{seg.label.value} vertebra",
                tracking_uid=ctx.vertebra_uid(seg.label),
                anatomic_regions=[C.LUMBAR_SPINE],
                display_color=hd.color.CIELabColor.from_rgb(*VERTEBRA_RGB[seg.label]),
            )
        )
        if seg.label is Vertebra.S1:
            # The property type is the sacrum (the S1 code is not verified); say what is outlined.
            descriptions[-1].SegmentDescription = "S1 body (first sacral segment)"
    rows, cols = result.image_shape
    packed = byte_aligned_binary(rows, cols)
    stacked = np.zeros((1, rows, cols, len(segments)), dtype=bool if packed else np.float32)
    for i, seg in enumerate(segments):
        stacked[0, :, :, i] = np.asarray(seg.mask, dtype=bool)
    kind: dict[str, object] = {"segmentation_type": hd.seg.SegmentationTypeValues.BINARY}
    if not packed:
        # Rows x Columns not a multiple of 8: BINARY frames would straddle bytes, which DICOMweb
        # frame retrieval (Orthanc 1.10) and dcmjs (OHIF) refuse. A FRACTIONAL PROBABILITY SEG
        # with only 0 and the maximum stores the same masks one byte per pixel, byte-aligned.
        kind = {
            "segmentation_type": hd.seg.SegmentationTypeValues.FRACTIONAL,
            "fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            "max_fractional_value": 255,
        }
    seg_ds = hd.seg.Segmentation(
        source_images=[ctx.source],
        pixel_array=stacked,
        segment_descriptions=descriptions,
        **kind,  # type: ignore[arg-type]
        content_label="VERTEBRAE",
        omit_empty_frames=False,  # a (degenerate) empty mask stays a frame: one frame per segment
        content_description=f"AI vertebrae {result.view.value}"[:64],
        contributing_equipment=ctx.contributing_equipment(),
        **ctx.equipment(),  # type: ignore[arg-type]
        **ctx.common_kwargs(ResultKind.SEG),  # type: ignore[arg-type]
    )
    shared = seg_ds.SharedFunctionalGroupsSequence[0]
    # Patient Orientation is Type 2C whenever the SEG has no plane orientation, which is the case
    # for every radiograph (a DX Frame of Reference comes without Image Position/Orientation).
    ctx.copy_source_attributes(seg_ds, orientation="PlaneOrientationSequence" not in shared)
    seg_ds.ImageComments = ctx.image_comments()
    _drop_unreadable_pixel_measures(seg_ds)
    profile = ctx.settings.seg_profile if profile is None else profile
    if profile is SegProfile.OHIF:
        _add_ohif_geometry(seg_ds, ctx.source)
    if profile is not ctx.settings.seg_profile:
        seg_ds.SeriesNumber = int(ctx.settings.series_number_base) + SECOND_SEG_SERIES_OFFSET
        seg_ds.SeriesDescription = describe(f"SEG {profile.value}", ctx.model, ctx.settings)
    return seg_ds


def byte_aligned_binary(rows: int, columns: int) -> bool:
    """Whether BINARY frames of ``rows`` x ``columns`` start on byte boundaries (else FRACTIONAL is used)."""
    return (int(rows) * int(columns)) % 8 == 0


def _add_ohif_geometry(seg_ds: hd.seg.Segmentation, source: Dataset) -> None:
    """The ``results.seg_profile = "ohif"`` additions (opt-in, docs/viewer.md).

    OHIF 3.13.2 shows a SEG only with a shared Pixel Measures functional group holding Pixel
    Spacing **and** Slice Thickness (``OHIFCornerstoneSEGViewport``) and a shared Plane
    Orientation (Patient) group (cornerstone adapters ``checkOrientation``). A radiograph has no
    patient Frame of Reference, and PS3.3 A.51-2 allows these groups only with one, so this is
    not the default: Pixel Spacing is the source's (Pixel Spacing, else Imager Pixel Spacing,
    else 1\\1 mm), Slice Thickness 1 mm and the orientation the image plane [1,0,0,0,1,0], none of
    them a statement about the patient.
    """
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1.0, 1.0]
    shared = seg_ds.SharedFunctionalGroupsSequence[0]
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in spacing]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = [measures]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = [orientation]


def _drop_unreadable_pixel_measures(seg_ds: hd.seg.Segmentation) -> None:
    """Remove a Pixel Measures item that has Pixel Spacing but no Slice Thickness.

    highdicom copies the source's Pixel Spacing into a Pixel Measures Sequence without Slice
    Thickness (a projection radiograph has none), and its own reader (``segread``) then refuses
    the file. The functional group is optional for these single-frame, pixel-aligned SEGs and
    the spacing stays available in the referenced source image.
    """
    for groups in (
        seg_ds.get("SharedFunctionalGroupsSequence", []),
        seg_ds.get("PerFrameFunctionalGroupsSequence", []),
    ):
        for item in groups:
            measures = item.get("PixelMeasuresSequence")
            if measures and "SliceThickness" not in measures[0]:
                del item.PixelMeasuresSequence
