"""What the result objects contain, read back with highdicom and pydicom.

Round trips (SEG masks, SR values and coordinates, GSPS graphics), cross-object consistency
(the same tracking UID for the same vertebra / finding; the same numbers in SR, GSPS and the
burned-in text), labelling (research caution, Content Qualification, Verification Flag, Device
UID), every input kind of the corpus, and the refusals (wrong size, multi-frame, colour).
The validator gates are in ``test_encode_validators.py``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from cdss.analysis.pixels import display_image
from cdss.analysis.types import (
    CervicalResult,
    LevelStatus,
    LumbarResult,
    LumbarView,
    MeyerdingGrade,
    Normality,
    Vertebra,
)
from cdss.config import ResultSettings, SegProfile
from cdss.encode import EncodeError, ResultKind, encode_results
from cdss.encode import codes as C
from cdss.encode.common import from_image_coordinates
from cdss.encode.overlay import (
    format_percent,
    level_text,
    overlay_from_gsps,
    rounded_probability,
    summary_lines,
)
from cdss.encode.seg import byte_aligned_binary
from tests.encode_corpus import BUILDERS, Case, build_case, shared_corpus
from tests.result_factory import lumbar_result_from_gt, make_source, rasterise, synthetic_lumbar_gt

LUMBAR = [n for n in BUILDERS if "cervical" not in n]
WITH_SEG = [n for n in LUMBAR if n != "dx_no_vertebrae"]
LATERAL = [n for n in WITH_SEG if n != "dx_lumbar_ap"]
CERVICAL = [n for n in BUILDERS if "cervical" in n]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return shared_corpus(tmp_path_factory)


def _code(item: Dataset) -> tuple[str, str]:
    return str(item.CodeValue), str(item.CodingSchemeDesignator)


def _sr_report(case: Case) -> hd.sr.MeasurementReport:
    sr = hd.sr.srread(case.paths["SR"])
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return sr.content


def _comments(group: object) -> list[str]:
    """The free-text comments (DCM 121106) of a measurement group, in order."""
    items = group[0].ContentSequence  # type: ignore[index]
    return [
        str(i.TextValue)
        for i in items
        if i.ValueType == "TEXT" and _code(i.ConceptNameCodeSequence[0]) == ("121106", "DCM")
    ]


def _evaluations(group: object) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for q in group.get_qualitative_evaluations():  # type: ignore[attr-defined]
        out.setdefault(str(q.name.meaning), []).append((str(q.value.value), str(q.value.scheme_designator)))
    return out


# -- every object -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_objects_are_new_series_in_the_source_study(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    src = case.source
    expected = {ResultKind.SR, ResultKind.GSPS, ResultKind.SC}
    if name in WITH_SEG:
        expected.add(ResultKind.SEG)
    assert set(case.objects) == expected
    series = set()
    base = ResultSettings().series_number_base
    for kind in case.objects:
        ds = case.ds(kind)
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.PatientID == src.PatientID and ds.PatientName == src.PatientName
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        series.add(ds.SeriesInstanceUID)
        assert ds.SeriesNumber == base + {"SEG": 0, "SR": 1, "GSPS": 2, "SC": 3}[kind.value]
        assert ds.InstanceNumber == 1
        # Research labelling and model identity on every object.
        assert ds.ContentQualification == "RESEARCH"
        assert "RESEARCH USE ONLY" in ds.SeriesDescription and len(ds.SeriesDescription) <= 64
        assert case.result.model.name in ds.SeriesDescription
        assert case.result.model.version in ds.SeriesDescription
        model_items = [
            e
            for e in ds.ContributingEquipmentSequence
            if e.get("ManufacturerModelName") == case.result.model.name
        ]
        assert len(model_items) == 1
        eq = model_items[0]
        # Device UID in Contributing Equipment is opt-in (results.device_uid_in_contributing_equipment).
        assert "DeviceUID" not in eq
        assert eq.ManufacturerModelName == case.result.model.name
        assert eq.SoftwareVersions == case.result.model.version
        assert _code(eq.PurposeOfReferenceCodeSequence[0]) == ("109102", "DCM")
        assert case.result.model.weights_sha256 in eq.ContributionDescription
        schemes = [s.CodingSchemeDesignator for s in ds.get("CodingSchemeIdentificationSequence", [])]
        # The private scheme is declared exactly where its codes are used: in the SR only.
        assert (C.SCHEME_DESIGNATOR in schemes) == (kind is ResultKind.SR)
        if kind is not ResultKind.SR:  # General Series attribute; SR documents have no General Series
            assert ds.BodyPartExamined
    assert len(series) == len(case.objects), "each object is its own series"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_object_references_the_exact_source_instance(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    uid = case.source.SOPInstanceUID
    if ResultKind.SEG in case.objects:
        seg = case.ds(ResultKind.SEG)
        refs = {
            i.ReferencedSOPInstanceUID
            for s in seg.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence
        }
        assert refs == {uid}
        for frame in seg.PerFrameFunctionalGroupsSequence:
            src_item = frame.DerivationImageSequence[0].SourceImageSequence[0]
            assert src_item.ReferencedSOPInstanceUID == uid
    sr = case.ds(ResultKind.SR)
    evidence = {
        i.ReferencedSOPInstanceUID
        for st in sr.CurrentRequestedProcedureEvidenceSequence
        for se in st.ReferencedSeriesSequence
        for i in se.ReferencedSOPSequence
    }
    assert evidence == {uid}
    gsps = case.ds(ResultKind.GSPS)
    refs = {
        i.ReferencedSOPInstanceUID for s in gsps.ReferencedSeriesSequence for i in s.ReferencedImageSequence
    }
    assert refs == {uid}
    sc = case.ds(ResultKind.SC)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == uid


# -- SEG --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_SEG)
def test_seg_round_trip_gives_back_the_masks(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    result = case.result
    assert isinstance(result, LumbarResult)
    seg = hd.seg.segread(case.paths["SEG"])
    aligned = byte_aligned_binary(int(case.source.Rows), int(case.source.Columns))
    assert seg.SegmentationType == ("BINARY" if aligned else "FRACTIONAL")
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    numbers = list(seg.segment_numbers)
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[case.source.SOPInstanceUID], segment_numbers=numbers, combine_segments=False
    )[0]
    by_label = {s.label.value: s for s in result.vertebrae}
    assert [seg.get_segment_description(n).segment_label for n in numbers] == [
        v.value for v in Vertebra if v.value in by_label
    ]
    for i, n in enumerate(numbers):
        desc = seg.get_segment_description(n)
        vertebra = by_label[desc.segment_label]
        np.testing.assert_array_equal(
            masks[:, :, i] > 0, vertebra.mask, err_msg=f"{name} {desc.segment_label}"
        )
        assert desc.segmented_property_type == C.VERTEBRA[vertebra.label]
        assert _code(desc.SegmentedPropertyCategoryCodeSequence[0]) == ("91723000", "SCT")
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algo = desc.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == result.model.name and algo.AlgorithmVersion == result.model.version
        assert _code(algo.AlgorithmFamilyCodeSequence[0]) == ("123110", "DCM")
        assert desc.TrackingID == f"{desc.segment_label} vertebra"
    raw = pydicom.dcmread(case.paths["SEG"])
    assert raw.PatientOrientation == (case.source.get("PatientOrientation") or "")
    assert int(raw.Rows) == int(case.source.Rows) and int(raw.Columns) == int(case.source.Columns)


def test_odd_size_seg_frames_are_byte_aligned(corpus: dict[str, Case]) -> None:
    """517 x 389 is not a multiple of 8: BINARY frames would straddle bytes, so the SEG is
    FRACTIONAL (PROBABILITY) holding only 0 and 255, one byte per pixel; the round trip above
    still gives back exactly the masks."""
    seg = pydicom.dcmread(corpus["cr_bare_odd_no_findings"].paths["SEG"])
    rows, cols, frames = int(seg.Rows), int(seg.Columns), int(seg.NumberOfFrames)
    assert (rows * cols) % 8 != 0
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.BitsAllocated == 8 and seg.MaximumFractionalValue == 255
    assert len(seg.PixelData) == rows * cols * frames + (rows * cols * frames) % 2
    assert set(np.unique(seg.pixel_array)) <= {0, 255}
    even = pydicom.dcmread(corpus["dx_lateral_slips"].paths["SEG"])
    assert even.SegmentationType == "BINARY" and even.BitsAllocated == 1


def test_seg_ohif_profile_is_opt_in(tmp_path: Path, corpus: dict[str, Case]) -> None:
    """The default SEG claims no plane geometry; results.seg_profile = "ohif" adds exactly the
    shared Pixel Measures (with Slice Thickness) and Plane Orientation groups OHIF 3.13 needs."""
    shared = corpus["dx_lateral_slips"].ds(ResultKind.SEG).SharedFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" not in shared and "PixelMeasuresSequence" not in shared
    case = build_case("dx_lateral_slips", tmp_path, ResultSettings(seg_profile="ohif"))
    shared = case.ds(ResultKind.SEG).SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in case.source.ImagerPixelSpacing]
    assert float(measures.SliceThickness) == 1.0
    masks = hd.seg.segread(case.paths["SEG"]).get_pixels_by_source_instance(
        [case.source.SOPInstanceUID], combine_segments=False
    )[0]
    assert isinstance(case.result, LumbarResult)
    for i, vertebra in enumerate(sorted(case.result.vertebrae, key=lambda v: v.label.class_id)):
        np.testing.assert_array_equal(masks[:, :, i] > 0, vertebra.mask)


def test_seg_in_two_profiles_for_destinations_that_differ(corpus: dict[str, Case]) -> None:
    """seg_profiles=[standard, ohif] (a destination with its own profile): two SEGs of the same
    masks, the second in its own series (base + 4) and only it with the OHIF geometry."""
    case = corpus["dx_lateral_slips"]
    objs = encode_results(
        case.source, case.result, ResultSettings(), seg_profiles=[SegProfile.STANDARD, SegProfile.OHIF]
    )
    segs = [o for o in objs if o.kind is ResultKind.SEG]
    assert [o.seg_profile for o in segs] == [SegProfile.STANDARD, SegProfile.OHIF]
    assert [o.kind for o in objs[2:]] == [ResultKind.SR, ResultKind.GSPS]
    std, ohif = (o.dataset for o in segs)
    assert (int(std.SeriesNumber), int(ohif.SeriesNumber)) == (9000, 9004)
    assert std.SeriesInstanceUID != ohif.SeriesInstanceUID and std.SOPInstanceUID != ohif.SOPInstanceUID
    assert "ohif" in ohif.SeriesDescription and "ohif" not in std.SeriesDescription
    assert "PlaneOrientationSequence" not in std.SharedFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" in ohif.SharedFunctionalGroupsSequence[0]
    assert std.PixelData == ohif.PixelData
    # Repeats are written once; with the node-wide profile ohif the OHIF SEG is the first series.
    once = encode_results(
        case.source, case.result, ResultSettings(seg_profile="ohif"), seg_profiles=["ohif", "ohif"]
    )
    only = [o.dataset for o in once if o.kind is ResultKind.SEG]
    assert len(only) == 1 and int(only[0].SeriesNumber) == 9000
    assert "PlaneOrientationSequence" in only[0].SharedFunctionalGroupsSequence[0]


def test_no_seg_without_vertebrae_or_for_cervical(corpus: dict[str, Case]) -> None:
    for name in ["dx_no_vertebrae", *CERVICAL]:
        assert ResultKind.SEG not in corpus[name].objects


# -- SR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_sr_document_labelling_and_device_observer(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    ds = case.ds(ResultKind.SR)
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.VerificationFlag == "UNVERIFIED"
    assert ds.CompletionFlag == "COMPLETE"
    assert _code(ds.ConceptNameCodeSequence[0]) == ("126000", "DCM")  # Imaging Measurement Report
    report = _sr_report(case)
    observers = report.get_observer_contexts(observer_type=C.DEVICE_OBSERVER)
    assert len(observers) == 1
    attrs = observers[0].observer_identifying_attributes
    assert attrs.uid == case.result.model.device_uid
    assert attrs.name == case.result.model.name


@pytest.mark.parametrize("name", LATERAL)
def test_sr_levels_match_the_result(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    result = case.result
    assert isinstance(result, LumbarResult)
    report = _sr_report(case)
    groups = {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()}
    found = {s.label: s for s in result.vertebrae}
    for level in result.levels:
        group = groups[f"{level.name} spondylolisthesis"]
        assert group.finding_type == C.SPONDYLOLISTHESIS
        assert (group.finding_type.value, group.finding_type.scheme_designator) == ("274152003", "SCT")
        assert group.finding_sites[0].value == C.DISC_LEVEL[(level.upper, level.lower)]
        evaluations = _evaluations(group)
        assert ("Artificial Intelligence" in str(group)) or evaluations.get("Algorithm Family")
        comments = _comments(group)
        if level.status is LevelStatus.MISSING:
            assert not group.get_measurements()
            assert evaluations["Measurement status"] == [("NOT-MEASURED-MISSING", "99CDSS")]
            missing = {v for v in (level.upper, level.lower) if v not in found}
            assert {c for c, _ in evaluations["Vertebra not detected"]} == {
                C.VERTEBRA[v].value for v in missing
            }
            assert comments == []  # MISSING levels are encoded as before
            continue
        if level.status is LevelStatus.NOT_MEASURED:
            # Both vertebrae found, the level failed a check: never a slip or a grade.
            assert evaluations["Measurement status"] == [("NOT-MEASURED-CHECK", "99CDSS")]
            assert "Meyerding grade" not in evaluations and "Slip direction" not in evaluations
            assert not group.get_measurements(name=C.PRIVATE.SLIP_PCT)
            assert comments == [f"{level.name} not measured: {level.reason}"]
            (certainty,) = group.get_measurements(name=C.CERTAINTY_OF_FINDING)
            assert certainty.value == pytest.approx(round(level.confidence or 0.0, 3))
            (coords,) = certainty.referenced_coordinates
            assert coords.value.shape == (3, 2)
            continue
        assert comments == [level_text(level)]
        (certainty,) = group.get_measurements(name=C.CERTAINTY_OF_FINDING)
        assert certainty.unit == C.NO_UNITS
        assert certainty.value == pytest.approx(round(level.confidence or 0.0, 3))
        (slip,) = group.get_measurements(name=C.PRIVATE.SLIP_PCT)
        assert slip.unit == C.PERCENT
        assert slip.value == pytest.approx(float(format_percent(level.slip_percent or 0.0)))
        (coords,) = slip.referenced_coordinates
        assert coords.value.shape == (3, 2)
        expected = np.array(
            [found[level.upper].corners[2], found[level.lower].corners[1], found[level.lower].corners[0]]
        )
        # SCOORD puts 0\\0 at the top-left pixel's corner; cdss at its centre
        np.testing.assert_allclose(from_image_coordinates(coords.value), expected, atol=1e-3)
        assert evaluations["Meyerding grade"] == [(C.MEYERDING[level.grade].value, "99CDSS")]
        if level.grade is MeyerdingGrade.NONE:
            assert "Slip direction" not in evaluations
        else:
            assert evaluations["Slip direction"] == [(C.SLIP_DIRECTION[level.direction].value, "SCT")]


@pytest.mark.parametrize("name", LUMBAR)
def test_sr_summary_states_findings_and_absence(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    result = case.result
    assert isinstance(result, LumbarResult)
    groups = {str(g.tracking_identifier): g for g in _sr_report(case).get_image_measurement_groups()}
    summary = groups["spondylolisthesis summary"]
    (threshold,) = summary.get_measurements(name=C.THRESHOLD_VALUE)
    assert threshold.value == pytest.approx(result.listhesis_threshold_percent)
    assert threshold.unit == C.PERCENT
    (assessment,) = _evaluations(summary)["Spondylolisthesis assessment"]
    measured = [lv for lv in result.levels if lv.status is LevelStatus.MEASURED]
    present, absent, undetermined = ("52101004", "SCT"), ("272519000", "SCT"), ("373068000", "SCT")
    if result.view is LumbarView.AP or not measured:
        assert assessment == undetermined
    elif result.has_findings:
        assert assessment == present
    else:
        assert assessment == absent
    # The summary in words, as the GSPS/SC show it (top left).
    assert _comments(summary) == summary_lines(result)
    missing = {c for c, _ in _evaluations(summary).get("Vertebra not detected", [])}
    assert missing == {C.VERTEBRA[v].value for v in result.missing}


@pytest.mark.parametrize("name", WITH_SEG)
def test_vertebra_groups_are_named_by_their_vertebra_and_confidence_is_separate(
    corpus: dict[str, Case], name: str
) -> None:
    """Each vertebra region names its vertebra (finding and finding site) and carries no number,
    so a viewer labels it "L4 vertebra"; the detection confidences are one separate group."""
    case = corpus[name]
    result = case.result
    assert isinstance(result, LumbarResult)
    report = _sr_report(case)
    rois = report.get_planar_roi_measurement_groups()
    by_label = {s.label.value: s for s in result.vertebrae}
    assert sorted(str(g.tracking_identifier) for g in rois) == sorted(f"{v} vertebra" for v in by_label)
    for group in rois:
        vertebra = by_label[str(group.tracking_identifier).split()[0]]
        assert group.finding_type == C.VERTEBRA[vertebra.label]
        assert [site.value for site in group.finding_sites] == [C.VERTEBRA[vertebra.label]]
        assert not group.get_measurements()
    groups = {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()}
    detection = groups["vertebra detection"]
    certainties = detection.get_measurements(name=C.CERTAINTY_OF_FINDING)
    sites = {m.finding_sites[0].value.value: m.value for m in certainties}
    assert sites == {
        C.VERTEBRA[v.label].value: pytest.approx(round(v.confidence, 3)) for v in result.vertebrae
    }
    assert all(m.unit == C.NO_UNITS for m in certainties)


def test_not_measured_level_is_said_everywhere_and_never_graded(corpus: dict[str, Case]) -> None:
    case = corpus["dx_grades_2_4_not_measured"]
    result = case.result
    assert isinstance(result, LumbarResult)
    (level,) = [lv for lv in result.levels if lv.status is LevelStatus.NOT_MEASURED]
    text = f"{level.name} not measured: {level.reason}"
    assert level_text(level) == text
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), result.image_shape)
    labels = [t for t in ov.labels if t.tracking_id == f"{level.name} spondylolisthesis"]
    assert [t.text for t in labels] == [text]  # beside the level
    assert labels[0].anchor is not None
    assert text in [t.text for t in ov.labels if t.layer == "AI_INFO"]  # and in the summary
    assert not any("Meyerding" in t.text for t in labels)
    # Only the three corners are drawn for it (no measurement construction).
    drawn = [g for g in ov.graphics if g.tracking_id == f"{level.name} spondylolisthesis"]
    assert [g.kind for g in drawn] == ["point"] * 3
    graded = [lv for lv in result.levels if lv.grade in (MeyerdingGrade.II, MeyerdingGrade.IV)]
    assert {lv.grade for lv in graded} == {MeyerdingGrade.II, MeyerdingGrade.IV}


def test_device_uid_in_contributing_equipment_is_opt_in(tmp_path: Path) -> None:
    settings = ResultSettings(device_uid_in_contributing_equipment=True)
    case = build_case("dx_lateral_slips", tmp_path, settings)
    for kind in case.objects:
        items = [e for e in case.ds(kind).ContributingEquipmentSequence if "DeviceUID" in e]
        assert [e.DeviceUID for e in items] == [case.result.model.device_uid], kind


def test_no_findings_is_stated_in_sr_and_gsps(corpus: dict[str, Case]) -> None:
    case = corpus["cr_bare_odd_no_findings"]
    assert not case.result.has_findings
    groups = {str(g.tracking_identifier): g for g in _sr_report(case).get_image_measurement_groups()}
    assert _evaluations(groups["spondylolisthesis summary"])["Spondylolisthesis assessment"] == [
        ("272519000", "SCT")  # Absent
    ]
    texts = [t.text for t in overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape).labels]
    assert "No spondylolisthesis >= 5 % at the measured levels" in texts


def test_missing_levels_are_stated_in_gsps(corpus: dict[str, Case]) -> None:
    case = corpus["dx_jpegls_missing_l1_l2"]
    texts = [t.text for t in overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape).labels]
    assert "L1-L2: not measured (L1 and L2 not detected)" in texts
    assert "L2-L3: not measured (L2 not detected)" in texts
    assert "Not detected: L1, L2" in texts


@pytest.mark.parametrize("name", CERVICAL)
def test_cervical_sr_and_gsps(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    result = case.result
    assert isinstance(result, CervicalResult)
    (group,) = _sr_report(case).get_planar_roi_measurement_groups()
    assert group.finding_type == C.PRIVATE.FORAMINAL_STENOSIS
    site = group.finding_sites[0]
    assert site.value == C.CERVICAL_SPINE
    assert site.laterality == C.LATERALITY[result.laterality]
    (p,) = group.get_measurements(name=C.PROBABILITY)
    (op,) = group.get_measurements(name=C.THRESHOLD_VALUE)
    assert p.value == pytest.approx(rounded_probability(result.probability)) and p.unit == C.NO_UNITS
    assert op.value == pytest.approx(result.operating_point) and op.unit == C.NO_UNITS
    assert _evaluations(group)["Normality"] == [(C.NORMALITY[result.label].value, "SCT")]
    roi = from_image_coordinates(group.roi.value)
    c0, r0, c1, r1 = result.roi
    np.testing.assert_allclose(roi.min(axis=0), [c0, r0], atol=1e-3)
    np.testing.assert_allclose(roi.max(axis=0), [c1, r1], atol=1e-3)
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), result.image_shape)
    (box,) = [g for g in ov.graphics if g.tracking_uid == group.tracking_uid]
    np.testing.assert_allclose(box.points, roi, atol=1e-3)
    word = "ABNORMAL" if result.label is Normality.ABNORMAL else "NORMAL"
    assert box.layer == ("AI_FINDING" if result.label is Normality.ABNORMAL else "AI_MEASURE")
    label = [t.text for t in ov.labels if t.tracking_uid == group.tracking_uid]
    assert label == [f"{word} p={p.value:.3f} (op {op.value:.3f})"]


# -- cross-object consistency -----------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_SEG)
def test_vertebra_tracking_uids_shared_by_seg_sr_gsps(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    seg = hd.seg.segread(case.paths["SEG"])
    seg_uids = {
        seg.get_segment_description(n).segment_label: seg.get_segment_description(n).TrackingUID
        for n in seg.segment_numbers
    }
    sr_groups = _sr_report(case).get_planar_roi_measurement_groups()
    sr_uids = {str(g.tracking_identifier).split()[0]: str(g.tracking_uid) for g in sr_groups}
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape)
    gsps_outlines = {g.tracking_id.split()[0]: g for g in ov.graphics if g.layer == "AI_VERTEBRAE"}
    assert seg_uids == sr_uids
    assert {k: g.tracking_uid for k, g in gsps_outlines.items()} == seg_uids
    assert len(set(seg_uids.values())) == len(seg_uids)
    # The outline drawn in GSPS is the SR region, and it encloses the SEG mask of that segment.
    by_uid = {str(g.tracking_uid): g for g in sr_groups}
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[case.source.SOPInstanceUID], combine_segments=False
    )[0]
    for i, n in enumerate(seg.segment_numbers):
        desc = seg.get_segment_description(n)
        uid = seg_uids[desc.segment_label]
        region = from_image_coordinates(by_uid[uid].roi.value)
        np.testing.assert_allclose(gsps_outlines[desc.segment_label].points, region, atol=1e-3)
        drawn = rasterise(region, case.result.image_shape)
        stored = masks[:, :, i] > 0
        iou = (drawn & stored).sum() / (drawn | stored).sum()
        assert iou > 0.95, f"{name} {desc.segment_label}: SR outline vs SEG mask IoU {iou:.3f}"


@pytest.mark.parametrize("name", LATERAL)
def test_level_values_in_sr_equal_those_drawn_in_gsps(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    groups = {str(g.tracking_uid): g for g in _sr_report(case).get_image_measurement_groups()}
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape)
    measured = [lv for lv in case.result.levels if lv.status is LevelStatus.MEASURED]
    assert measured
    for level in measured:
        uid = next(
            u for u, g in groups.items() if str(g.tracking_identifier) == f"{level.name} spondylolisthesis"
        )
        group = groups[uid]
        (slip,) = group.get_measurements(name=C.PRIVATE.SLIP_PCT)
        points = [g.points[0] for g in ov.graphics if g.tracking_uid == uid and g.kind == "point"]
        np.testing.assert_allclose(
            np.array(points), from_image_coordinates(slip.referenced_coordinates[0].value), atol=1e-3
        )
        (label,) = [t for t in ov.labels if t.tracking_uid == uid]
        assert label.tracking_id == f"{level.name} spondylolisthesis"
        shown = float(re.search(r" (\d+\.\d) % ", label.text).group(1))  # type: ignore[union-attr]
        assert shown == pytest.approx(slip.value)
        assert label.text == level_text(level) == _comments(group)[0]
        if level.grade is not MeyerdingGrade.NONE:
            assert label.text.endswith(f"- Meyerding {level.grade.value}")
            assert level.direction.value in label.text  # anterolisthesis / retrolisthesis
            assert all(g.layer == "AI_FINDING" for g in ov.graphics if g.tracking_uid == uid)


def test_tracking_uids_are_stable_across_encodes(corpus: dict[str, Case]) -> None:
    case = corpus["dx_lateral_slips"]
    again = {o.kind: o.dataset for o in encode_results(case.source, case.result, ResultSettings())}
    first = case.objects[ResultKind.SEG].dataset
    assert [d.TrackingUID for d in first.SegmentSequence] == [
        d.TrackingUID for d in again[ResultKind.SEG].SegmentSequence
    ]
    assert again[ResultKind.SEG].SOPInstanceUID != first.SOPInstanceUID  # new instances, same tracked things


# -- input kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_gsps_presentation_lut_follows_photometric_interpretation(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    gsps = case.ds(ResultKind.GSPS)
    mono1 = case.source.PhotometricInterpretation == "MONOCHROME1"
    assert gsps.PresentationLUTShape == ("INVERSE" if mono1 else "IDENTITY")
    (voi,) = gsps.SoftcopyVOILUTSequence
    src = case.source
    if "WindowCenter" in src:  # the default (first) window of the source
        first = src.WindowCenter[0] if src["WindowCenter"].VM > 1 else src.WindowCenter
        assert float(voi.WindowCenter) == pytest.approx(float(first))
        assert "VOILUTSequence" not in voi
    elif "VOILUTSequence" in src:
        assert list(voi.VOILUTSequence[0].LUTDescriptor) == list(src.VOILUTSequence[0].LUTDescriptor)
        assert len(voi.VOILUTSequence[0].LUTData) == 2 * int(src.VOILUTSequence[0].LUTDescriptor[0])
    else:  # a window over the stored bit range
        assert float(voi.WindowWidth) == 2 ** int(src.BitsStored)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_sc_is_rgb_display_polarity_marked_and_truthful(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    sc = case.ds(ResultKind.SC)
    assert sc.PhotometricInterpretation == "RGB" and sc.BitsAllocated == 8 and sc.SamplesPerPixel == 3
    assert (sc.Rows, sc.Columns) == (case.source.Rows, case.source.Columns)
    assert "RESEARCH USE ONLY" in sc.SeriesDescription
    assert "RESEARCH USE ONLY" in sc.ImageComments
    assert sc.get("BurnedInAnnotation") == case.source.get("BurnedInAnnotation")
    rgb = sc.pixel_array
    # Away from the overlay the SC shows the source in display polarity (grey, bone bright).
    grey = np.round(display_image(case.source) * 255.0)
    untouched = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert untouched.mean() > 0.7
    diff = np.abs(rgb[..., 0][untouched].astype(float) - grey[untouched])
    assert np.median(diff) == 0  # (text backgrounds are darkened, hence not all pixels)
    assert (diff <= 1).mean() > 0.8
    # The caution line is burned in (coloured pixels in the top-left text area).
    h = max(10, round(max(case.result.image_shape) / 70))
    banner = rgb[: int(h * 1.6), : int(h * 20)]
    assert (banner[..., 0].astype(int) - banner[..., 2].astype(int) > 60).sum() > 20


def test_sc_of_monochrome1_has_bright_bone(corpus: dict[str, Case]) -> None:
    case = corpus["dx_mono1_for"]
    assert isinstance(case.result, LumbarResult)
    stored = case.source.pixel_array
    bone = np.zeros(stored.shape, bool)
    for v in case.result.vertebrae:
        bone |= v.mask
    assert stored[bone].mean() < stored[~bone].mean()  # MONOCHROME1: bone stored dark
    sc = case.ds(ResultKind.SC).pixel_array[..., 1].astype(float)
    assert sc[bone].mean() > sc[~bone].mean() + 40  # shown bright


def test_cr_without_spacing_or_orientation(corpus: dict[str, Case]) -> None:
    case = corpus["cr_bare_odd_no_findings"]
    assert "ImagerPixelSpacing" not in case.source and "PatientOrientation" not in case.source
    sr = case.ds(ResultKind.SR)
    assert "Image Library" not in str(sr.ContentSequence)  # highdicom's library needs both attributes
    assert case.ds(ResultKind.SEG).PatientOrientation == ""
    assert case.ds(ResultKind.SC).PatientOrientation == ""


def test_ap_lumbar_is_segmentation_only(corpus: dict[str, Case]) -> None:
    case = corpus["dx_lumbar_ap"]
    groups = [str(g.tracking_identifier) for g in _sr_report(case).get_image_measurement_groups()]
    assert groups == ["vertebra detection", "spondylolisthesis summary"]
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape)
    assert "AP view: vertebrae only, spondylolisthesis not assessed" in [t.text for t in ov.labels]
    assert {g.layer for g in ov.graphics} == {"AI_VERTEBRAE"}


def test_encode_never_decodes_source_pixels(corpus: dict[str, Case]) -> None:
    """SEG/SR/GSPS need the header only; the SC needs decodable pixels and says so otherwise."""
    case = corpus["dx_j2k_missing_s1"]
    header = pydicom.dcmread(case.paths["source"], stop_before_pixels=True)
    kinds = [o.kind for o in encode_results(header, case.result, ResultSettings())]
    assert kinds == [ResultKind.SEG, ResultKind.SR, ResultKind.GSPS]
    with pytest.raises(EncodeError, match=r"Secondary Capture.*Pixel Data"):
        encode_results(header, case.result, ResultSettings(), include_sc=True)


def test_research_labelling_can_be_turned_off(tmp_path: Path) -> None:
    case = build_case("dx_lateral_slips", tmp_path, ResultSettings(research_use_only=False))
    for kind in case.objects:
        ds = case.ds(kind)
        assert ds.ContentQualification == "PRODUCT"
        assert "RESEARCH" not in ds.SeriesDescription
    assert case.ds(ResultKind.SR).VerificationFlag == "UNVERIFIED"


def test_long_model_names_are_abbreviated_not_the_caution(tmp_path: Path) -> None:
    gt = synthetic_lumbar_gt(300, 240)
    src = make_source(gt)
    result = lumbar_result_from_gt(gt)
    result.model = dataclasses.replace(result.model, name="a-very-long-model-name-" * 3)
    for obj in encode_results(src, result, ResultSettings()):
        desc = obj.dataset.SeriesDescription
        assert len(desc) <= 64 and desc.endswith("RESEARCH USE ONLY") and "~" in desc


# -- refusals ---------------------------------------------------------------------------------


def test_refuses_a_source_of_another_size() -> None:
    gt = synthetic_lumbar_gt(300, 240)
    result = lumbar_result_from_gt(gt)
    other = make_source(synthetic_lumbar_gt(320, 240))
    with pytest.raises(EncodeError, match=r"320x240 .* computed on 300x240"):
        encode_results(other, result, ResultSettings())


def test_refuses_multiframe_and_colour_sources() -> None:
    gt = synthetic_lumbar_gt(300, 240)
    result = lumbar_result_from_gt(gt)
    src = make_source(gt)
    src.NumberOfFrames = 2
    with pytest.raises(EncodeError, match="2 frames"):
        encode_results(src, result, ResultSettings())
    src = make_source(gt)
    src.PhotometricInterpretation = "RGB"
    with pytest.raises(EncodeError, match="MONOCHROME"):
        encode_results(src, result, ResultSettings())
    src = make_source(gt)
    del src.SOPInstanceUID
    with pytest.raises(EncodeError, match="SOPInstanceUID"):
        encode_results(src, result, ResultSettings())


def test_private_codes_are_declared_and_stable() -> None:
    assert C.SCHEME_DESIGNATOR.startswith("99")
    assert C.PRIVATE.MEY_II.value == "MEY-II" and C.PRIVATE.MEY_II.meaning == "Meyerding grade II"
    with pytest.raises(KeyError):
        C.private("NOT-A-CODE")
    assert len(set(C.PRIVATE_CODES.values())) == len(C.PRIVATE_CODES)  # meanings are 1:1
    assert set(C.PRIVATE_CODES) >= C.RETIRED_PRIVATE_CODES  # retired values stay reserved
    with pytest.raises(KeyError, match="retired"):
        C.private("SPONDYLOLISTHESIS")
    assert set(C.MEYERDING) == set(MeyerdingGrade)
    assert C.VERTEBRA[Vertebra.S1].value == "54735007"  # sacrum: the verified code (S1 is not)


def test_refuses_degenerate_geometry() -> None:
    gt = synthetic_lumbar_gt(300, 240)
    src = make_source(gt)
    result = lumbar_result_from_gt(gt)
    result.vertebrae[2].outline = result.vertebrae[2].outline[:2]
    with pytest.raises(EncodeError, match="outline of L3"):
        encode_results(src, result, ResultSettings())
    result = lumbar_result_from_gt(gt)
    result.vertebrae[0].corners = np.full((4, 2), np.nan)
    with pytest.raises(EncodeError, match="corners of L1"):
        encode_results(src, result, ResultSettings())


def test_empty_mask_keeps_its_frame(tmp_path: Path) -> None:
    gt = synthetic_lumbar_gt(300, 240)
    src = make_source(gt)
    result = lumbar_result_from_gt(gt)
    result.vertebrae[1].mask = np.zeros_like(result.vertebrae[1].mask)
    seg = next(o.dataset for o in encode_results(src, result, ResultSettings()) if o.kind is ResultKind.SEG)
    assert int(seg.NumberOfFrames) == 6
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    masks = hd.seg.segread(path).get_pixels_by_source_instance([src.SOPInstanceUID], combine_segments=False)[
        0
    ]
    assert masks[:, :, 1].sum() == 0 and masks[:, :, 0].sum() > 0
