"""TID 1500 Measurement Report in a Comprehensive 3D SR (IHE AIR's choice for AI results).

Content tree (codes in :mod:`cdss.encode.codes`, see ``docs/results.md``):

* Observation context: a **device observer** (TID 1004) = the model (Device Observer UID =
  :attr:`ModelInfo.device_uid`, name, manufacturer, model name, serial = weights digest prefix).
* Procedure reported: the source's Procedure Code Sequence item when present, else
  LN 43468-8 "XR unspecified body region" (CID 100).
* Image Library: the source image, when it has two Patient Orientation values and Imager Pixel
  Spacing (highdicom's projection-radiography descriptors need both).
* Lumbar, one **TID 1410 planar ROI group per detected vertebra**: outline as a closed SCOORD
  POLYLINE on the source, finding and finding site = the vertebra code (so a viewer that labels
  a region with its site, OHIF, names the vertebra), tracking UID = the SEG segment's; no number.
* Lumbar, one **TID 1501 "vertebra detection" group**: the detection confidence of each vertebra
  as DCM 111012 "Certainty of Finding" (UCUM ``1``) with the vertebra as its finding site.
* Lumbar lateral, one **TID 1501 group per level** L1-L2 … L5-S1 (tracking UID shared with the
  GSPS drawing of that level): finding SCT 274152003 Spondylolisthesis, finding site SCT "Level of
  Lx/Ly intervertebral disc"; when measured: slip percentage (magnitude, UCUM ``%``, one
  decimal) *inferred from* a SCOORD open POLYLINE through the three corners used (upper
  vertebra inferior-posterior, lower vertebra superior-posterior, superior-anterior; POLYLINE
  rather than MULTIPOINT because OHIF labels polylines with the measurement, not multipoints),
  the level's Certainty of Finding, Meyerding grade (99CDSS MEY-*) and, when graded, the slip
  direction (SCT Anterior / Posterior), and the finding in words as a DCM 121106 "Comment"
  (TID 1501 row 12, e.g. "L5-S1 anterolisthesis 38.0 % - Meyerding II": the text GSPS and SC
  show beside the level and OHIF shows on the image); when not measured after a failed check
  (``NOT_MEASURED``): measurement status 99CDSS NOT-MEASURED-CHECK, the comment "L5-S1 not
  measured: <reason>", the level's certainty inferred from its three corners, never a slip or
  grade; when a vertebra is missing (``MISSING``): measurement status "not measured: a vertebra
  of the level was not detected" and which vertebra (SCT code) was not detected.
* Lumbar, one **summary TID 1501 group**: reporting threshold (DCM 122411 Threshold Value, UCUM
  ``%``) and the assessment (SCT Present / Absent / Undetermined, CID 240; undetermined on AP
  views and when no level could be measured), each vertebra not detected, and the summary lines
  as comments. So "no finding" is stated, not implied.
* Cervical, one **TID 1410 planar ROI group**: the classifier ROI as a closed SCOORD POLYLINE,
  finding (99CDSS) foraminal stenosis, finding site SCT cervical spine with laterality,
  probability (DCM 122157, UCUM ``1``, 3 decimals), operating point (DCM 122411 Threshold Value,
  UCUM ``1``) and Normality (DCM 121402) = SCT Normal / Abnormal.
* Every group and measurement carries TID 4019 Algorithm Identification (model name, version,
  family "Artificial Intelligence", parameters: weights SHA-256, architecture, threshold).

Document: COMPLETE, PRELIMINARY (not signed off), **UNVERIFIED**; Content Qualification RESEARCH
unless ``results.research_use_only`` is false. Segmentation references from SR content
(``ReferencedSegmentationFrame``) are not used: highdicom 0.28.2 writes frame and segment numbers
that dciodvfy rejects on single-frame DX/CR sources (reference §2.2); the shared tracking UIDs
link SR groups to SEG segments instead.
"""

from __future__ import annotations

from typing import TypeVar

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.types import (
    CervicalResult,
    LevelMeasurement,
    LevelStatus,
    LumbarResult,
    LumbarView,
    MeyerdingGrade,
    Normality,
    Vertebra,
    VertebraSegment,
)
from cdss.encode import codes as C
from cdss.encode.common import EncodeContext, ResultKind, closed, patient_orientation, to_image_coordinates
from cdss.encode.overlay import (
    level_text,
    roi_polygon,
    rounded_probability,
    rounded_slip,
    slip_points,
    summary_lines,
)

__all__ = ["encode_sr", "procedure_reported"]

P = C.PRIVATE


#: A TID 1500 measurement group as highdicom builds it (planar ROI or image-level).
Group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
_G = TypeVar(
    "_G", hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, hd.sr.MeasurementsAndQualitativeEvaluations
)


def procedure_reported(source: Dataset) -> hd.sr.CodedConcept:
    """The analysed imaging procedure: the source's own procedure code, else LN "XR unspecified body region"."""
    for keyword in ("ProcedureCodeSequence", "RequestedProcedureCodeSequence"):
        seq = source.get(keyword)
        if seq:
            item = seq[0]
            try:
                return hd.sr.CodedConcept(
                    value=str(item.CodeValue),
                    scheme_designator=str(item.CodingSchemeDesignator),
                    meaning=str(item.CodeMeaning),
                )
            except (AttributeError, TypeError, ValueError):
                continue  # incomplete code item (e.g. Long Code Value): fall back
    return C.XR_UNSPECIFIED


def _image_library_safe(source: Dataset) -> bool:
    spacing = source.get("ImagerPixelSpacing")
    return patient_orientation(source) is not None and spacing is not None and len(spacing) == 2


def encode_sr(ctx: EncodeContext) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) for ``ctx.result``."""
    result = ctx.result
    src = ctx.source
    algo = ctx.algorithm_sr()
    region_source = hd.sr.SourceImageForRegion.from_source_image(src)
    if isinstance(result, LumbarResult):
        groups = _lumbar_groups(ctx, result, algo, region_source)
    else:
        groups = _cervical_groups(ctx, result, algo, region_source)
    observer = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=C.DEVICE_OBSERVER,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=ctx.model.device_uid,
                name=ctx.model.name,
                manufacturer_name=ctx.settings.manufacturer,
                model_name=ctx.model_name_lo,
                serial_number=ctx.model.short_digest,
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observer,
        procedure_reported=procedure_reported(src),
        imaging_measurements=groups,
        title=C.IMAGING_MEASUREMENT_REPORT,
        referenced_images=[src] if _image_library_safe(src) else None,
    )
    kwargs = ctx.common_kwargs(ResultKind.SR)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[src],
        content=report,
        manufacturer=ctx.settings.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=ctx.contributing_equipment(),
        **kwargs,  # type: ignore[arg-type]
    )
    sr.ManufacturerModelName = ctx.model_name_lo
    # pydicom types a multi-valued LO as str | tuple[str]; a list is what it stores
    sr.SoftwareVersions = list(ctx.equipment()["software_versions"])  # type: ignore[assignment]
    sr.DeviceSerialNumber = ctx.model.short_digest
    ctx.copy_source_attributes(sr, orientation=False, body_part=False)
    return sr


def _lumbar_groups(
    ctx: EncodeContext,
    result: LumbarResult,
    algo: hd.sr.AlgorithmIdentification,
    region_source: hd.sr.SourceImageForRegion,
) -> list[Group]:
    groups: list[Group] = []
    found = {s.label: s for s in result.vertebrae}
    segments = sorted(result.vertebrae, key=lambda s: s.label.class_id)
    for seg in segments:
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=ctx.vertebra_uid(seg.label), identifier=f"{seg.label.value} vertebra"
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=to_image_coordinates(closed(seg.outline)),
                    source_image=region_source,
                ),
                finding_type=C.VERTEBRA[seg.label],
                # The site names the vertebra, so a viewer that labels a region with its finding
                # site (OHIF) names it; the detection confidence is in the detection group below.
                finding_sites=[hd.sr.FindingSite(C.VERTEBRA[seg.label])],
                algorithm_id=algo,
            )
        )
    if segments:
        groups.append(_detection_group(ctx, segments, algo))
    if result.view is LumbarView.LATERAL:
        for level in result.levels:
            groups.append(_level_group(ctx, level, found, algo, region_source))
    groups.append(_lumbar_summary(ctx, result, algo, region_source))
    return groups


def _comment(text: str) -> hd.sr.TextContentItem:
    """A TID 1501 row 12 qualitative evaluation in text form (DCM 121106 "Comment")."""
    return hd.sr.TextContentItem(
        name=C.COMMENT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _with_comments(group: _G, texts: list[str]) -> _G:
    """Append free-text comments to a measurement group (highdicom takes coded evaluations only)."""
    container = group[0]
    for text in texts:
        container.ContentSequence.append(_comment(text))
    return group


def _certainty(
    value: float, coordinates: np.ndarray | None, region_source: hd.sr.SourceImageForRegion
) -> hd.sr.Measurement:
    """Certainty of Finding (DCM 111012) in [0, 1], optionally inferred from coordinates."""
    refs = None
    if coordinates is not None:
        refs = [
            hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=to_image_coordinates(coordinates),
                source_image=region_source,
            )
        ]
    return hd.sr.Measurement(
        name=C.CERTAINTY_OF_FINDING,
        value=rounded_probability(value),
        unit=C.NO_UNITS,
        referenced_coordinates=refs,
    )


def _detection_group(
    ctx: EncodeContext, segments: list[VertebraSegment], algo: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group with the detection confidence of every vertebra found.

    Each value is a Certainty of Finding (DCM 111012, UCUM ``1``) whose finding site is the
    vertebra, so the vertebra groups above stay labelled by their vertebra.
    """
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.finding_uid("vertebra-detection"), identifier="vertebra detection"
        ),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ctx.source)],
        finding_type=C.VERTEBRA_GENERIC,
        finding_sites=[hd.sr.FindingSite(C.LUMBAR_SPINE)],
        algorithm_id=algo,
        measurements=[
            hd.sr.Measurement(
                name=C.CERTAINTY_OF_FINDING,
                value=rounded_probability(seg.confidence),
                unit=C.NO_UNITS,
                finding_sites=[hd.sr.FindingSite(C.VERTEBRA[seg.label])],
            )
            for seg in segments
        ],
    )


def _level_group(
    ctx: EncodeContext,
    level: LevelMeasurement,
    found: dict[Vertebra, VertebraSegment],
    algo: hd.sr.AlgorithmIdentification,
    region_source: hd.sr.SourceImageForRegion,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    tracking = hd.sr.TrackingIdentifier(
        uid=ctx.level_uid(level.upper, level.lower), identifier=f"{level.name} spondylolisthesis"
    )
    site = [hd.sr.FindingSite(C.DISC_LEVEL[(level.upper, level.lower)])]
    source_images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ctx.source)]
    both = level.upper in found and level.lower in found
    points = slip_points(found[level.upper], found[level.lower]) if both else None
    measured = level.status is LevelStatus.MEASURED and level.slip_percent is not None and both
    text = level_text(level)
    if not measured:
        checked = level.status is LevelStatus.NOT_MEASURED and both
        status = P.NOT_MEASURED_CHECK if checked else P.NOT_MEASURED_MISSING
        evaluations = [hd.sr.QualitativeEvaluation(P.MEAS_STATUS, status)]
        for v in (level.upper, level.lower):
            if v not in found:
                evaluations.append(hd.sr.QualitativeEvaluation(P.VERT_NOT_DETECTED, C.VERTEBRA[v]))
        measurements = None
        if checked and level.confidence is not None:
            # The corners the failed check was made on: a viewer draws them with the comment.
            measurements = [_certainty(level.confidence, points, region_source)]
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            source_images=source_images,
            finding_type=C.SPONDYLOLISTHESIS,
            finding_sites=site,
            algorithm_id=algo,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
        # MISSING levels keep their coded status only (as before); NOT_MEASURED ones say why.
        return _with_comments(group, [text] if checked else [])
    assert points is not None  # measured implies both vertebrae, hence their corners
    slip = hd.sr.Measurement(
        name=P.SLIP_PCT,
        value=rounded_slip(level),
        unit=C.PERCENT,
        referenced_coordinates=[
            hd.sr.CoordinatesForMeasurement(
                # An open path through the three corners (OHIF 3.13 shows "Slip percentage: x %"
                # beside a POLYLINE but draws MULTIPOINT without a label; see docs/viewer.md).
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=to_image_coordinates(points),
                source_image=region_source,
            )
        ],
    )
    measurements = [slip]
    if level.confidence is not None:
        measurements.append(_certainty(level.confidence, None, region_source))
    evaluations = [hd.sr.QualitativeEvaluation(P.MEY, C.MEYERDING[level.grade])]
    if level.grade is not MeyerdingGrade.NONE and level.direction in C.SLIP_DIRECTION:
        evaluations.append(hd.sr.QualitativeEvaluation(P.SLIP_DIR, C.SLIP_DIRECTION[level.direction]))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        source_images=source_images,
        finding_type=C.SPONDYLOLISTHESIS,
        finding_sites=site,
        algorithm_id=algo,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    # The finding in words (level, direction, slip %, grade): the line a viewer shows beside it.
    return _with_comments(group, [text])


def _lumbar_summary(
    ctx: EncodeContext,
    result: LumbarResult,
    algo: hd.sr.AlgorithmIdentification,
    region_source: hd.sr.SourceImageForRegion,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measured = [lv for lv in result.levels if lv.status is LevelStatus.MEASURED]
    if result.view is not LumbarView.LATERAL:
        assessment = C.UNDETERMINED  # not assessed on an AP view (the comment says so)
    elif any(lv.grade is not MeyerdingGrade.NONE for lv in measured):
        assessment = C.PRESENT
    elif measured:
        assessment = C.ABSENT
    else:
        assessment = C.UNDETERMINED  # no level could be measured (the comment says why)
    evaluations = [hd.sr.QualitativeEvaluation(P.LISTHESIS_ASSESSMENT, assessment)]
    evaluations += [hd.sr.QualitativeEvaluation(P.VERT_NOT_DETECTED, C.VERTEBRA[v]) for v in result.missing]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.finding_uid("spondylolisthesis-summary"), identifier="spondylolisthesis summary"
        ),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ctx.source)],
        finding_type=C.SPONDYLOLISTHESIS,
        finding_sites=[hd.sr.FindingSite(C.LUMBAR_SPINE)],
        algorithm_id=algo,
        measurements=[
            hd.sr.Measurement(
                name=C.THRESHOLD_VALUE,  # the smallest slip reported as a listhesis
                value=float(result.listhesis_threshold_percent),
                unit=C.PERCENT,
            )
        ],
        qualitative_evaluations=evaluations,
    )
    return _with_comments(group, summary_lines(result))


def _cervical_groups(
    ctx: EncodeContext,
    result: CervicalResult,
    algo: hd.sr.AlgorithmIdentification,
    region_source: hd.sr.SourceImageForRegion,
) -> list[Group]:
    rect = roi_polygon(result)
    lat = result.laterality
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.finding_uid(f"foraminal-stenosis-{lat.value}"),
            identifier=f"foraminal stenosis {lat.value}",
        ),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=to_image_coordinates(rect),
            source_image=region_source,
        ),
        finding_type=P.FORAMINAL_STENOSIS,
        finding_sites=[hd.sr.FindingSite(C.CERVICAL_SPINE, laterality=C.LATERALITY[lat])],
        algorithm_id=algo,
        measurements=[
            hd.sr.Measurement(
                name=C.PROBABILITY,
                value=rounded_probability(result.probability),
                unit=C.NO_UNITS,
            ),
            hd.sr.Measurement(
                name=C.THRESHOLD_VALUE,
                value=rounded_probability(result.operating_point),
                unit=C.NO_UNITS,
            ),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(C.NORMALITY_CONCEPT, C.NORMALITY[Normality(result.label)]),
        ],
    )
    return [group]
