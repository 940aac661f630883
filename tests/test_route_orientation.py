"""Routing by PatientOrientation, and how tags and the view classifier's answer combine.

The decision table tests give routing a *fixed answer* in place of the view classifier
(``FixedAnswer``): what is under test here is the decision rule (thresholds, veto, region
conflicts, fall-back), which must not depend on what a trained network happens to say. The
real classifier on real images is tested in ``tests/test_route_classifier.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from cdss.analysis.types import Laterality, ModelInfo
from cdss.analysis.view.labels import LABELS, ViewLabel, ViewPrediction
from cdss.config import Analysis, RouteRule, RouteSettings
from cdss.route import (
    DecisionRule,
    RouteEvidence,
    TagStatus,
    View,
    orientation_view,
    projection,
    projection_evidence,
    route,
)

LL = Analysis.LUMBAR_LATERAL
LAP = Analysis.LUMBAR_AP
CO = Analysis.CERVICAL_OBLIQUE
NA = Analysis.NOT_APPLICABLE


def _ds(pixels: bool = False, **tags: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality = tags.pop("Modality", "DX")
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = 8, 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = (np.arange(64, dtype=np.uint16) * 60).tobytes()
    return ds


# ------------------------------------------------------------------------------ PatientOrientation
@pytest.mark.parametrize(
    ("value", "view"),
    [
        (["P", "F"], View.LAT),
        (["A", "F"], View.LAT),
        (["A", "H"], View.LAT),
        (["p", "f"], View.LAT),  # lower case as some CR plates write it
        (["F", "P"], View.LAT),  # image turned 90°: rows along the body
        (["PF", "F"], View.LAT),  # tilted: the trailing F of the row direction is ignored
        (["R", "F"], View.AP),
        (["L", "F"], View.AP),
        (["L", "H"], View.AP),
        (["H", "R"], View.AP),
        (["AL", "F"], View.OBL),
        (["LA", "F"], View.OBL),  # either order is an oblique
        (["PR", "F"], View.OBL),
        (["RP", "FP"], View.OBL),
        (["A", "L"], None),  # no direction along the body (an axial image)
        (["F", "H"], None),  # both along the body
        (["P"], None),  # one value
        (["X", "F"], None),  # not a direction letter
        ("", None),
    ],
)
def test_patient_orientation_gives_the_view(value: Any, view: View | None) -> None:
    ds = _ds(PatientOrientation=value)
    found = orientation_view(ds)
    if view is None:
        assert found is None
    else:
        assert found is not None and found.value is view
        assert found.tag == "PatientOrientation"


def test_patient_orientation_alone_routes_a_lumbar_lateral_and_ap() -> None:
    lat = route(_ds(BodyPartExamined="LSPINE", PatientOrientation=["P", "F"]), RouteSettings())
    assert lat.analysis is LL, lat.reason
    assert "PatientOrientation='P\\F'" in lat.reason
    ap = route(_ds(BodyPartExamined="LSPINE", PatientOrientation=["R", "F"]), RouteSettings())
    assert ap.analysis is LAP, ap.reason
    obl = route(_ds(BodyPartExamined="LSPINE", PatientOrientation=["AL", "F"]), RouteSettings())
    assert obl.analysis is NA and "oblique" in obl.reason


def test_view_position_outranks_patient_orientation_and_a_description_oblique_refines_it() -> None:
    ds = _ds(ViewPosition="LL", PatientOrientation=["R", "F"])
    assert projection(ds).value is View.LAT
    assert [e.tag for e in projection_evidence(ds)] == ["ViewPosition", "PatientOrientation"]
    # a cervical oblique whose modality writes only the dominant direction (P\F)
    ds = _ds(BodyPartExamined="CSPINE", PatientOrientation=["P", "F"], SeriesDescription="C-SPINE OBL RT")
    assert projection(ds).value is View.OBL
    decision = route(ds, RouteSettings())
    assert decision.analysis is CO and decision.laterality is Laterality.RIGHT
    assert decision.evidence.tag_status is TagStatus.COMPLETE  # oblique vs P\F is no contradiction


def test_contradicting_views_without_a_classifier_fall_back_to_the_most_specific_tag() -> None:
    ds = _ds(BodyPartExamined="LSPINE", ViewPosition="AP", PatientOrientation=["P", "F"])
    decision = route(ds, RouteSettings())
    assert decision.analysis is LAP  # ViewPosition outranks PatientOrientation
    assert decision.rule is DecisionRule.TAGS_FALLBACK
    assert decision.evidence.tag_status is TagStatus.CONTRADICTORY
    assert decision.evidence.classifier.status == "not available"


# ------------------------------------------------------------------------------ decision table
class FixedAnswer:
    """Stands in for the view classifier: always gives the same probabilities (see module doc)."""

    info = ModelInfo("fixed-answer", "0", "0" * 64, "none")

    def __init__(self, **probs: float) -> None:
        full = {lab.value: 0.0 for lab in LABELS}
        full.update(probs)
        self.prediction = ViewPrediction(ViewLabel(max(full, key=full.__getitem__)), full)
        self.calls = 0

    def classify(self, display_image: np.ndarray) -> ViewPrediction:
        assert display_image.ndim == 2 and display_image.dtype == np.float32
        self.calls += 1
        return self.prediction


LAT_SURE = {"lumbar_lateral": 0.97, "lumbar_ap": 0.02, "other": 0.01}
AP_SURE = {"lumbar_ap": 0.95, "lumbar_lateral": 0.03, "other": 0.02}
OTHER_SURE = {"other": 0.96, "lumbar_lateral": 0.03, "lumbar_ap": 0.01}
CERV_LEFT = {"cervical_oblique_left": 0.9, "cervical_oblique_right": 0.08, "other": 0.02}
UNSURE = {"lumbar_lateral": 0.5, "lumbar_ap": 0.4, "other": 0.1}
#: top probability below the threshold, but clearly lateral once the header has said "lumbar spine"
LAT_GIVEN_LUMBAR = {"lumbar_lateral": 0.6, "lumbar_ap": 0.05, "other": 0.3, "cervical_oblique_left": 0.05}
#: lateral ahead, but the classifier doubts the region itself (lumbar views < half its probability)
REGION_DOUBTED = {"lumbar_lateral": 0.45, "lumbar_ap": 0.0, "other": 0.4, "cervical_oblique_left": 0.15}

# (id, tags, classifier answer, expected analysis, expected rule)
TABLE: list[tuple[str, dict[str, Any], dict[str, float], Analysis, DecisionRule]] = [
    ("complete-tags-agree", {"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, LAT_SURE, LL, DecisionRule.TAGS),
    # tags decide when complete and consistent, even if the classifier says another lumbar view
    ("complete-tags-other-view", {"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, AP_SURE, LL, DecisionRule.TAGS),
    ("chest-labelled-lspine", {"BodyPartExamined": "LSPINE", "ViewPosition": "PA"}, OTHER_SURE, NA, DecisionRule.CLASSIFIER_VETO),
    ("cervical-labelled-lspine", {"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, CERV_LEFT, NA, DecisionRule.CLASSIFIER_VETO),
    ("lateral-without-view", {"BodyPartExamined": "LSPINE"}, LAT_SURE, LL, DecisionRule.CLASSIFIER),
    ("nothing-at-all", {}, AP_SURE, LAP, DecisionRule.CLASSIFIER),
    ("contradiction-resolved", {"BodyPartExamined": "LSPINE", "ViewPosition": "AP", "PatientOrientation": ["P", "F"]}, LAT_SURE, LL, DecisionRule.CLASSIFIER),
    ("unsure-keeps-tag-reading", {"BodyPartExamined": "LSPINE"}, UNSURE, NA, DecisionRule.TAGS_FALLBACK),
    ("view-given-the-header-region", {"BodyPartExamined": "LSPINE"}, LAT_GIVEN_LUMBAR, LL, DecisionRule.CLASSIFIER),
    ("view-given-region-needs-the-region", {}, LAT_GIVEN_LUMBAR, NA, DecisionRule.TAGS_FALLBACK),
    ("view-given-region-doubted", {"BodyPartExamined": "LSPINE"}, REGION_DOUBTED, NA, DecisionRule.TAGS_FALLBACK),
    ("view-given-region-not-on-contradiction", {"BodyPartExamined": "LSPINE", "ViewPosition": "AP", "PatientOrientation": ["P", "F"]}, LAT_GIVEN_LUMBAR, LAP, DecisionRule.TAGS_FALLBACK),
    ("unsure-contradiction", {"BodyPartExamined": "LSPINE", "ViewPosition": "AP", "PatientOrientation": ["P", "F"]}, UNSURE, LAP, DecisionRule.TAGS_FALLBACK),
    ("classifier-says-other", {"BodyPartExamined": "LSPINE"}, OTHER_SURE, NA, DecisionRule.CLASSIFIER),
    ("other-spine-region", {"BodyPartExamined": "LSPINE"}, CERV_LEFT, NA, DecisionRule.CLASSIFIER_REGION_CONFLICT),
    ("generic-spine-cervical", {"BodyPartExamined": "SPINE"}, CERV_LEFT, CO, DecisionRule.CLASSIFIER),
    ("complete-non-spine", {"BodyPartExamined": "CHEST", "ViewPosition": "PA"}, LAT_SURE, NA, DecisionRule.TAGS),
    ("region-contradiction", {"BodyPartExamined": "CHEST", "SeriesDescription": "LSPINE LAT"}, LAT_SURE, LL, DecisionRule.CLASSIFIER),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tags", "answer", "analysis", "rule"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_decision_table(
    tags: dict[str, Any], answer: dict[str, float], analysis: Analysis, rule: DecisionRule
) -> None:
    clf = FixedAnswer(**answer)
    decision = route(_ds(pixels=True, **tags), RouteSettings(), "MODALITY", clf)
    assert decision.analysis is analysis, decision.reason
    assert decision.rule is rule, decision.reason
    ev = decision.evidence
    assert ev is not None and ev.rule is rule
    if clf.calls:
        assert ev.classifier.status == "used"
        assert ev.classifier.label == clf.prediction.label.value
    assert clf.calls <= 1


def test_classifier_is_not_run_when_the_tags_settle_not_applicable() -> None:
    clf = FixedAnswer(**LAT_SURE)
    decision = route(_ds(pixels=True, BodyPartExamined="KNEE", ViewPosition="AP"), RouteSettings(), None, clf)
    assert decision.analysis is NA and clf.calls == 0
    assert decision.evidence.classifier.status == "not needed"


def test_cervical_side_comes_from_the_tags_else_from_the_cervical_model() -> None:
    clf = FixedAnswer(**CERV_LEFT)
    named = route(
        _ds(pixels=True, SeriesDescription="C-SPINE RIGHT", ImageLaterality="R"), RouteSettings(), None, clf
    )
    assert named.analysis is CO and named.laterality is Laterality.RIGHT, named.reason
    unnamed = route(_ds(pixels=True, BodyPartExamined="CSPINE"), RouteSettings(), None, clf)
    assert unnamed.analysis is CO and unnamed.laterality is None, unnamed.reason
    assert "classifier's side: L" in unnamed.reason


def test_thresholds_come_from_the_settings() -> None:
    tags = {"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}
    mild = FixedAnswer(other=0.6, lumbar_lateral=0.4)
    assert route(_ds(pixels=True, **tags), RouteSettings(), None, mild).analysis is LL  # 0.6 < 0.8
    strict = RouteSettings(classifier_veto_probability=0.55)
    vetoed = route(_ds(pixels=True, **tags), strict, None, mild)
    assert vetoed.analysis is NA and vetoed.evidence.veto_probability == 0.55
    assert route(_ds(pixels=True, BodyPartExamined="LSPINE"), RouteSettings(classifier_min_probability=0.99), None, FixedAnswer(**LAT_SURE)).rule is DecisionRule.TAGS_FALLBACK  # fmt: skip


def test_classifier_can_be_switched_off() -> None:
    clf = FixedAnswer(**OTHER_SURE)
    settings = RouteSettings(view_classifier=False)
    decision = route(_ds(pixels=True, BodyPartExamined="LSPINE", ViewPosition="LL"), settings, None, clf)
    assert decision.analysis is LL and clf.calls == 0
    assert decision.evidence.classifier.status == "disabled"


def test_site_rule_analyses_are_vetoed_too() -> None:
    settings = RouteSettings(rules=[RouteRule(analysis=LL, calling_aet=["DR1"])])
    decision = route(_ds(pixels=True), settings, "DR1", FixedAnswer(**OTHER_SURE))
    assert decision.analysis is NA and decision.rule is DecisionRule.CLASSIFIER_VETO
    assert decision.reason.startswith("site rule #1 matched")


def test_header_only_dataset_routes_by_tags() -> None:
    clf = FixedAnswer(**LAT_SURE)
    decision = route(_ds(BodyPartExamined="LSPINE"), RouteSettings(), None, clf)
    assert decision.analysis is NA and clf.calls == 0
    assert decision.evidence.classifier.status == "not available: no pixel data"


def test_evidence_round_trips_through_json() -> None:
    ds = _ds(pixels=True, BodyPartExamined="LSPINE", ViewPosition="AP", PatientOrientation=["P", "F"])
    decision = route(ds, RouteSettings(), None, FixedAnswer(**LAT_SURE))
    data = decision.evidence.to_dict()
    assert data["rule"] == "classifier" and data["tag_status"] == "contradictory"
    assert {"tag": "ViewPosition", "source": "ViewPosition='AP'", "says": "AP"} in data["tags"]
    assert {"tag": "PatientOrientation", "source": "PatientOrientation='P\\F'", "says": "LAT"} in data["tags"]
    assert data["classifier"]["label"] == "lumbar_lateral" and data["classifier"]["probability"] == 0.97
    assert data["thresholds"] == {"decide": RouteSettings().classifier_min_probability, "veto": 0.8}
    assert RouteEvidence.from_dict(data).to_dict() == data
    assert RouteEvidence.from_dict({"rule": "nonsense", "tags": "x"}).rule is DecisionRule.TAGS
