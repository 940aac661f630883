"""Names from anatomy, abstention and edge refinement of the lumbar analysis (pure units, no model).

The chain tests build lateral spines of body outlines in image pixels (anterior = image left,
head up) the way a detector reports them: every body (T12 included) as an unnamed candidate,
and the sacrum. The names must come from counting up from the sacrum, whatever else is in
the field, and the analysis must say so when the chain cannot be trusted.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cdss.analysis.geometry import slip
from cdss.analysis.lumbar.analyzer import Candidate, LumbarAnalyzer
from cdss.analysis.lumbar.classes import ClassScheme, LumbarClassError, class_scheme
from cdss.analysis.lumbar.measure import quadrilateral_fit
from cdss.analysis.lumbar.quality import (
    AbstainRule,
    GradeMargin,
    LevelEvidence,
    apply_abstention,
    apply_grade_margin,
    level_confidence,
)
from cdss.analysis.lumbar.refine import refine_corners, smoothed_for_edges
from cdss.analysis.types import LevelMeasurement, LevelStatus, MeyerdingGrade, SlipDirection, Vertebra


def _body(centre: tuple[float, float], width: float, height: float, angle_deg: float = 0.0) -> np.ndarray:
    """A dense rectangular outline (column, row) around ``centre``."""
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    w, h = width / 2, height / 2
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    pts = []
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        for s in np.linspace(0, 1, 20, endpoint=False):
            pts.append(a + s * (b - a))
    return np.asarray(pts) @ rot.T + np.asarray(centre, dtype=float)


def _spine(
    *, with_t12: bool = True, skip: str | None = None, extra: bool = False
) -> tuple[list[Candidate], dict[int, str]]:
    """Candidates for a lordotic lateral spine; returns them and the true name of each."""
    names = ["S1", "L5", "L4", "L3", "L2", "L1"] + (["T12"] if with_t12 else [])
    centres = {
        "S1": (300.0, 860.0),
        "L5": (250.0, 760.0),
        "L4": (215.0, 650.0),
        "L3": (200.0, 535.0),
        "L2": (205.0, 420.0),
        "L1": (225.0, 307.0),
        "T12": (255.0, 200.0),
    }
    angles = {"S1": -35.0, "L5": -15.0, "L4": -8.0, "L3": 0.0, "L2": 6.0, "L1": 10.0, "T12": 14.0}
    cands: list[Candidate] = []
    truth: dict[int, str] = {}
    for n in names:
        if n == skip:
            continue
        w, h = (130.0, 85.0) if n != "T12" else (110.0, 75.0)
        cands.append(Candidate(_body(centres[n], w, h, angles[n]), 0.9, sacrum=(n == "S1")))
        truth[len(cands) - 1] = n
    if extra:  # a femoral head / iliac false positive beside the sacrum
        cands.append(Candidate(_body((520.0, 900.0), 120.0, 110.0), 0.6, sacrum=False))
    return cands, truth


def _named(cands: list[Candidate]) -> dict[str, np.ndarray]:
    naming = LumbarAnalyzer.name_bodies(cands)
    return {f.label.value: f.outline.mean(axis=0) for f in naming.found}


def test_names_are_counted_from_the_sacrum_with_t12_in_the_field() -> None:
    cands, truth = _spine(with_t12=True)
    naming = LumbarAnalyzer.name_bodies(cands)
    got = {f.label.value: f.outline.mean(axis=0) for f in naming.found}
    for idx, name in truth.items():
        if name == "T12":
            continue
        np.testing.assert_allclose(got[name], cands[idx].outline.mean(axis=0))
    assert naming.above_l1 == ["T12"]  # found, named, not reported as a lumbar body
    assert naming.chain is not None and not naming.chain.stop_reason and not naming.chain.problems


def test_detection_order_and_confidence_do_not_change_the_names() -> None:
    cands, truth = _spine()
    rng = np.random.default_rng(3)
    order = rng.permutation(len(cands))
    shuffled = [cands[i] for i in order]
    for c in shuffled:
        c.confidence = float(rng.uniform(0.5, 1.0))
    got = _named(shuffled)
    for new_idx, old_idx in enumerate(order):
        name = truth[int(old_idx)]
        if name in got:
            np.testing.assert_allclose(got[name], shuffled[new_idx].outline.mean(axis=0))


def test_a_missed_body_stops_the_names_instead_of_shifting_them() -> None:
    cands, _ = _spine(skip="L3")
    naming = LumbarAnalyzer.name_bodies(cands)
    names = {f.label.value for f in naming.found}
    assert names == {"S1", "L5", "L4"}  # L2 is not called L3
    assert naming.chain is not None and "not detected" in naming.chain.stop_reason


def test_a_body_off_the_spine_is_ignored() -> None:
    cands, _ = _spine(extra=True)
    naming = LumbarAnalyzer.name_bodies(cands)
    got = {f.label.value for f in naming.found}
    assert got == {"S1", "L5", "L4", "L3", "L2", "L1"}
    assert naming.chain is not None and any("off the spine chain" in n for n in naming.chain.notes)


def test_a_far_slipped_l5_low_on_the_sacral_slope_is_still_l5() -> None:
    """Grade IV: L5 slid forward (image left) and down the sacral slope."""
    cands, truth = _spine()
    l5 = next(i for i, n in truth.items() if n == "L5")
    for i, c in enumerate(cands):  # the whole column above S1 moves with L5
        if truth.get(i) != "S1":
            c.outline = c.outline + np.array([-110.0, 45.0])
    got = _named(cands)
    np.testing.assert_allclose(got["L5"], cands[l5].outline.mean(axis=0))
    assert set(got) == {"S1", "L5", "L4", "L3", "L2", "L1"}


def test_without_a_sacrum_nothing_is_named() -> None:
    cands, _ = _spine()
    cands = [c for c in cands if not c.sacrum]
    naming = LumbarAnalyzer.name_bodies(cands)
    assert naming.found == [] and "sacrum" in naming.reason


def test_an_irregular_spacing_flags_the_bodies_it_concerns() -> None:
    cands, truth = _spine()
    l2 = next(i for i, n in truth.items() if n == "L2")
    cands[l2].outline = cands[l2].outline + np.array([0.0, 50.0])  # L2 crowds L3
    naming = LumbarAnalyzer.name_bodies(cands)
    assert naming.chain is not None
    assert {"L2", "L3"} <= set(naming.chain.problems) or {"L1", "L2"} <= set(naming.chain.problems)


def test_class_schemes() -> None:
    assert class_scheme({0: "vertebra", 1: "sacrum"}, "x.pt") is ClassScheme.ANATOMICAL
    levels = class_scheme({i: v.value for i, v in enumerate(Vertebra)}, "x.pt")
    assert levels is ClassScheme.LEVELS and levels.is_sacrum(5) and levels.is_body(0)
    assert ClassScheme.ANATOMICAL.is_sacrum(1) and not ClassScheme.ANATOMICAL.is_sacrum(0)
    with pytest.raises(LumbarClassError, match=r"bad\.pt.*neither"):
        class_scheme({0: "cat", 1: "dog"}, "bad.pt")


def _level(slip_pct: float = 12.0) -> LevelMeasurement:
    return LevelMeasurement(
        Vertebra.L4,
        Vertebra.L5,
        LevelStatus.MEASURED,
        slip_percent=slip_pct,
        direction=SlipDirection.ANTERIOR,
        grade=MeyerdingGrade.I,
    )


@pytest.mark.parametrize(
    ("evidence", "check"),
    [
        (LevelEvidence(0.9, 1.0, 0.5, "spacing L4-L5 is 1.80 × the chain's median"), "anatomy"),
        (LevelEvidence(0.3, 1.0, 0.5), "detection"),
        (LevelEvidence(0.9, 9.0, 0.5), "mirror"),
        (LevelEvidence(0.9, 1.0, 12.0), "edges"),
        (LevelEvidence(0.55, 5.0, 5.0), "confidence"),
        (LevelEvidence(0.9, 1.0, 0.5, shape_fit=0.6, shape_body="S1"), "shape"),
    ],
)
def test_a_failed_check_reports_not_measured_without_grade(evidence: LevelEvidence, check: str) -> None:
    levels, fired = apply_abstention([_level()], {"L4-L5": evidence}, AbstainRule())
    assert fired == {"L4-L5": check}
    lv = levels[0]
    assert lv.status is LevelStatus.NOT_MEASURED
    assert lv.grade is MeyerdingGrade.NONE and lv.slip_percent is None and lv.reason


def test_consistent_evidence_keeps_the_measurement_with_its_confidence() -> None:
    rule = AbstainRule()
    ev = LevelEvidence(0.92, 0.8, 0.6)
    levels, fired = apply_abstention([_level()], {"L4-L5": ev}, rule)
    assert fired == {}
    assert levels[0].status is LevelStatus.MEASURED and levels[0].grade is MeyerdingGrade.I
    assert levels[0].confidence == pytest.approx(level_confidence(ev, rule), abs=1e-4)
    assert 0.8 < levels[0].confidence <= 0.92
    # more disagreement, less confidence
    assert level_confidence(LevelEvidence(0.92, 3.0, 0.6), rule) < levels[0].confidence


@pytest.mark.parametrize(
    ("slip_pct", "graded", "boundary"),
    [
        (5.9, False, "the listhesis threshold (5 %)"),  # could be a normal level
        (-4.2, False, "the listhesis threshold (5 %)"),  # could be a grade I retrolisthesis
        (7.5, True, ""),
        (2.5, True, ""),
        (26.1, False, "the grade I/II limit (25 %)"),
        (48.4, False, "the grade II/III limit (50 %)"),
        (60.0, True, ""),
        (101.0, False, "the grade IV/V limit (100 %)"),
    ],
)
def test_no_grade_within_the_margin_of_a_grade_boundary(slip_pct: float, graded: bool, boundary: str) -> None:
    lv = LevelMeasurement(
        Vertebra.L4, Vertebra.L5, LevelStatus.MEASURED, slip_percent=slip_pct, confidence=0.8
    )
    other = LevelMeasurement(Vertebra.L1, Vertebra.L2, LevelStatus.MISSING)
    levels, fired = apply_grade_margin([lv, other], threshold_percent=5.0, margin=GradeMargin(2.0, 0.0))
    assert levels[1] is other
    if graded:
        assert fired == {} and levels[0] == lv
        return
    assert fired == {"L4-L5": "grade boundary"}
    out = levels[0]
    assert out.status is LevelStatus.NOT_MEASURED and out.slip_percent is None
    assert out.grade is MeyerdingGrade.NONE and out.direction is SlipDirection.NONE
    assert boundary in out.reason and out.confidence == 0.8
    # margin 0 turns the rule off; the threshold moves the first boundary
    assert apply_grade_margin([lv], 5.0, GradeMargin.off()) == ([lv], {})


def test_grade_margin_follows_the_listhesis_threshold() -> None:
    lv = LevelMeasurement(Vertebra.L5, Vertebra.S1, LevelStatus.MEASURED, slip_percent=9.0)
    margin = GradeMargin(2.0, 0.0)
    assert apply_grade_margin([lv], threshold_percent=10.0, margin=margin)[1] == {"L5-S1": "grade boundary"}
    assert apply_grade_margin([lv], threshold_percent=5.0, margin=margin)[1] == {}


@pytest.mark.parametrize(
    ("slip_pct", "graded", "band"),
    [
        (7.2, True, 2.076),  # 2.2 pp above the threshold, band 1.5 + 0.08 × 7.2
        (6.8, False, 2.044),
        (28.0, False, 3.74),  # 3 pp above the grade I/II limit: graded with a constant 2 pp, not here
        (29.5, True, 3.86),
        (80.0, False, 7.9),  # a grade IV at 80 %: a 7 % error in the endplate width makes it 75 %
        (86.0, True, 8.38),
    ],
)
def test_grade_margin_grows_with_the_slip(slip_pct: float, graded: bool, band: float) -> None:
    """The band is pp + fraction × |slip|: slip % divides by the endplate width, so a relative width
    error moves a large slip by more points than a small one."""
    margin = GradeMargin(1.5, 0.08)
    assert margin.band_pp(slip_pct) == pytest.approx(band)
    assert margin.band_pp(-slip_pct) == pytest.approx(band)
    lv = LevelMeasurement(Vertebra.L5, Vertebra.S1, LevelStatus.MEASURED, slip_percent=slip_pct)
    levels, fired = apply_grade_margin([lv], threshold_percent=5.0, margin=margin)
    assert (fired == {}) is graded
    if not graded:
        assert f"within {band:.1f} pp of" in levels[0].reason
    # a constant margin of the same size at the threshold grades the large slips
    if slip_pct > 25:
        assert apply_grade_margin([lv], 5.0, GradeMargin(2.0, 0.0))[1] == {}


def test_shape_fit_tells_a_body_shaped_mask_from_a_malformed_one() -> None:
    """A mask with rounded corners still fits its corner quadrilateral; one with a tail (a sacrum
    mask that runs down the sacral body) or with a missing half does not, and the level says why."""
    shape = (400, 500)
    corners = np.array([[100.0, 100.0], [400.0, 100.0], [400.0, 300.0], [100.0, 300.0]])
    body = np.zeros(shape, dtype=np.uint8)
    cv2.rectangle(body, (100, 100), (400, 300), 1, thickness=-1)
    rounded = cv2.erode(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    rounded = cv2.dilate(rounded, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41))).astype(bool)
    assert quadrilateral_fit(body.astype(bool), corners) > 0.98
    assert 0.95 < quadrilateral_fit(rounded, corners) < 1.0
    tail = rounded.copy()
    tail[300:400, 40:300] = True  # a tail below the body, 0.43 × its area
    half = rounded.copy()
    half[:, 250:] = False  # the posterior half missing
    assert quadrilateral_fit(tail, corners) < 0.75
    assert quadrilateral_fit(half, corners) < 0.75
    assert quadrilateral_fit(np.zeros(shape, dtype=bool), corners) == 0.0
    ev = LevelEvidence(0.9, 1.0, 0.5, shape_fit=quadrilateral_fit(half, corners), shape_body="S1")
    levels, fired = apply_abstention([_level()], {"L4-L5": ev}, AbstainRule())
    assert fired == {"L4-L5": "shape"} and "S1 outline does not fit its four corners" in levels[0].reason
    # off when the weights' metadata says so
    assert apply_abstention([_level()], {"L4-L5": ev}, AbstainRule(min_shape_fit=0.0))[1] == {}


def test_abstain_rule_from_weights_metadata() -> None:
    rule = AbstainRule.from_mapping({"max_flip_delta_pp": 4.0, "unknown": 1.0})
    assert rule.max_flip_delta_pp == 4.0 and rule.min_detection == AbstainRule().min_detection


def _rendered_body(shape: tuple[int, int], corners: np.ndarray, blur: float) -> np.ndarray:
    img = np.full(shape, 0.2, dtype=np.float32)
    cv2.fillPoly(img, [np.round(corners * 16).astype(np.int32)], 0.8, shift=4, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), blur)


def test_edge_refinement_moves_offset_corners_back_onto_the_body() -> None:
    true = np.array([[100.0, 120.0], [330.0, 110.0], [335.0, 270.0], [98.0, 280.0]])
    img = _rendered_body((400, 440), true, 2.0)
    rng = np.random.default_rng(0)
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    # the mask's corners: the quadrilateral shrunk by ~4 px and shifted, as a coarse mask would be
    centre = true.mean(axis=0)
    coarse = centre + (true - centre) * 0.97 + np.array([2.5, -1.5])
    size = float(np.sqrt(cv2.contourArea(true.astype(np.float32))))
    ref = refine_corners(smoothed_for_edges(img, size), coarse, size)
    before = np.abs(coarse - true).max()
    after = np.abs(ref.corners - true).max()
    assert ref.sides_moved == 4
    assert after < 1.0 < before
    # and the slip measured on it follows: a level made of this body over a copy of itself
    lower = true + np.array([0.0, 200.0])
    ordered = lambda c: c[[1, 0, 3, 2]]  # noqa: E731 - anterior = image right here
    exact = slip(ordered(true), ordered(lower))[0]
    assert abs(slip(ordered(ref.corners), ordered(lower))[0] - exact) < abs(
        slip(ordered(coarse), ordered(lower))[0] - exact
    )


def test_edge_refinement_keeps_the_mask_corners_where_there_is_no_edge() -> None:
    flat = np.full((300, 300), 0.5, dtype=np.float32)
    corners = np.array([[80.0, 80.0], [220.0, 80.0], [220.0, 200.0], [80.0, 200.0]])
    ref = refine_corners(smoothed_for_edges(flat, 130.0), corners, 130.0)
    assert ref.sides_moved == 0
    np.testing.assert_array_equal(ref.corners, corners)


def test_a_level_the_mirror_pass_did_not_confirm_is_not_measured() -> None:
    levels, fired = apply_abstention(
        [_level()], {"L4-L5": LevelEvidence(0.9, None, 0.5, "", mirror_confirmed=False)}, AbstainRule()
    )
    assert fired == {"L4-L5": "mirror"} and levels[0].status is LevelStatus.NOT_MEASURED


def test_an_image_whose_levels_mostly_fail_is_not_trusted_on_the_rest() -> None:
    names = [
        (Vertebra.L1, Vertebra.L2),
        (Vertebra.L2, Vertebra.L3),
        (Vertebra.L3, Vertebra.L4),
        (Vertebra.L4, Vertebra.L5),
    ]
    levels = [LevelMeasurement(u, lo, LevelStatus.MEASURED, slip_percent=3.0) for u, lo in names]
    bad, good = LevelEvidence(0.9, 12.0, None), LevelEvidence(0.95, 0.5, None)
    evidence = {"L1-L2": bad, "L2-L3": bad, "L3-L4": bad, "L4-L5": good}
    out, fired = apply_abstention(levels, evidence, AbstainRule())
    assert fired == {"L1-L2": "mirror", "L2-L3": "mirror", "L3-L4": "mirror", "L4-L5": "image"}
    assert all(lv.status is LevelStatus.NOT_MEASURED for lv in out)
    assert "3 of 4 levels" in out[3].reason
    kept, fired = apply_abstention(levels, {**evidence, "L3-L4": good}, AbstainRule())
    assert [lv.status for lv in kept][2:] == [LevelStatus.MEASURED] * 2  # two failures: the rest stand
