"""Corner extraction, corner naming, anterior side, levels and missing levels on drawn shapes."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from cdss.analysis.geometry import slip
from cdss.analysis.lumbar.corners import fit_corners, label_corners, mask_outline
from cdss.analysis.lumbar.measure import Found, fill_outline, measure_levels, segments_from_outlines
from cdss.analysis.lumbar.orientation import (
    AnteriorEstimate,
    anterior_from_lordosis,
    anterior_from_patient_orientation,
    anterior_from_posterior_elements,
)
from cdss.analysis.types import LevelStatus, LumbarView, MeyerdingGrade, SlipDirection, Vertebra


def rounded_bowed_quad(corners: np.ndarray, radius: float, bow: float, per_side: int = 40) -> np.ndarray:
    """Outline whose sides' underlying lines meet at ``corners``: rounded corners, sides bowed inwards."""
    c = np.asarray(corners, float)
    centre = c.mean(axis=0)
    out = []
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        length = np.hypot(*(b - a))
        d = (b - a) / length
        n = np.array([-d[1], d[0]])
        if np.dot(centre - (a + b) / 2, n) < 0:
            n = -n
        r = min(radius, length / 3)
        for t in np.linspace(r / length, 1 - r / length, per_side):
            out.append(a + t * (b - a) + n * bow * length * 4 * t * (1 - t))
        # rounded corner at b: a quadratic Bezier from the end of this side to the start of the next
        nxt = c[(i + 2) % 4]
        d2 = (nxt - b) / np.hypot(*(nxt - b))
        p0, p2 = b - d * r, b + d2 * r
        for s in np.linspace(0, 1, 8)[1:-1]:
            out.append((1 - s) ** 2 * p0 + 2 * (1 - s) * s * b + s**2 * p2)
    return np.array(out)


def body(cx: float, cy: float, w: float, h: float, angle_deg: float, shear: float = 0.0) -> np.ndarray:
    """Corners superior-left, superior-right, inferior-right, inferior-left of a rotated (sheared) box."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    local = np.array([[-w / 2 + shear, -h / 2], [w / 2 + shear, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return local @ rot.T + [cx, cy]


@pytest.mark.parametrize("angle", [0.0, 12.0, -15.0, 33.0])
@pytest.mark.parametrize("bow", [0.0, 0.04])
def test_fit_corners_recovers_the_underlying_quadrilateral(angle: float, bow: float) -> None:
    corners = body(300, 250, 200, 140, angle, shear=15)
    outline = rounded_bowed_quad(corners, radius=14, bow=bow)
    fit = fit_corners(outline)
    # each true corner has a fitted corner within half a pixel
    dist = np.hypot(*(fit.corners[:, None, :] - corners[None, :, :]).transpose(2, 0, 1))
    assert dist.min(axis=0).max() < 0.5, dist.min(axis=0)


def test_fit_corners_on_a_rasterised_mask_is_subpixel() -> None:
    corners = body(410.3, 377.8, 230, 150, 9.0, shear=-12)
    mask = fill_outline(rounded_bowed_quad(corners, radius=12, bow=0.03), (800, 800))
    fit = fit_corners(mask_outline(mask))
    dist = np.hypot(*(fit.corners[:, None, :] - corners[None, :, :]).transpose(2, 0, 1))
    assert dist.min(axis=0).max() < 1.5


def test_fit_corners_rejects_degenerate_outlines() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        fit_corners(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        fit_corners(np.column_stack([np.arange(20.0), np.arange(20.0)]))


def test_mask_outline_of_empty_mask_is_empty() -> None:
    assert mask_outline(np.zeros((10, 10), bool)).shape == (0, 2)


@pytest.mark.parametrize("anterior_side", ["left", "right"])
def test_label_corners_orders_superior_anterior_first(anterior_side: str) -> None:
    sl, sr, ir, il = body(0, 0, 100, 60, 5.0)
    cyclic = np.array([ir, il, sl, sr])  # any cyclic start and orientation
    for candidate in (cyclic, cyclic[::-1]):
        front = np.array([1.0, 0.0]) if anterior_side == "right" else np.array([-1.0, 0.0])
        labelled = label_corners(candidate, cranial=np.array([0.0, -1.0]), anterior=front)
        expected = [sr, sl, il, ir] if anterior_side == "right" else [sl, sr, ir, il]
        np.testing.assert_allclose(labelled, expected)


def test_patient_orientation_decides_anterior_side() -> None:
    ds = Dataset()
    ds.PatientOrientation = ["A", "F"]
    assert anterior_from_patient_orientation(ds) == AnteriorEstimate(
        "right", "PatientOrientation", "row direction 'A'"
    )
    ds.PatientOrientation = ["P", "F"]
    assert anterior_from_patient_orientation(ds).side == "left"
    ds.PatientOrientation = ["L", "F"]  # an AP-type value says nothing about anterior
    assert anterior_from_patient_orientation(ds) is None
    ds.PatientOrientation = ""
    assert anterior_from_patient_orientation(ds) is None
    assert anterior_from_patient_orientation(Dataset()) is None
    # a film turned by a quarter: the head is along the rows, the front along the columns
    ds.PatientOrientation = ["H", "A"]
    assert anterior_from_patient_orientation(ds).side == "down"
    ds.PatientOrientation = ["F", "P"]
    assert anterior_from_patient_orientation(ds).side == "up"


@pytest.mark.parametrize("facing", ["left", "right"])
@pytest.mark.parametrize("turn", [1, 3])
def test_a_quarter_turned_film_measures_like_the_upright_one(facing: str, turn: int) -> None:
    """Slips do not depend on how the film lies: the same spine turned by 90 or 270 degrees."""
    bodies = _spine(facing, slips={"L4-L5": 18.0, "L5-S1": 30.0, "L2-L3": -7.0})
    centre = np.array([600.0, 800.0])
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees clockwise on screen (rows down)
    mat = np.linalg.matrix_power(rot, turn)
    turned = {v: (c - centre) @ mat.T + centre for v, c in bodies.items()}
    front = np.array([1.0 if facing == "right" else -1.0, 0.0]) @ mat.T
    est = AnteriorEstimate("right", "test", vector=(float(front[0]), float(front[1])))
    segs = segments_from_outlines(_found(turned), (1600, 1600), LumbarView.LATERAL, est)
    levels = {lv.name: lv for lv in measure_levels(segs, LumbarView.LATERAL, 5.0)}
    for name, lv in levels.items():
        upper, lower = (Vertebra(x) for x in name.split("-"))
        assert lv.slip_percent == pytest.approx(slip(bodies[upper], bodies[lower])[0], abs=0.5), name
    # and the anatomical cue finds the front of the turned spine by itself
    cents = [turned[v].mean(axis=0) for v in list(Vertebra)[:5]]
    lordosis = anterior_from_lordosis(cents, [200.0] * 5)
    assert lordosis is not None and float(lordosis.direction @ front) > 0.9


def _spine(
    facing: str, slips: dict[str, float] | None = None, lordosis: bool = True
) -> dict[Vertebra, np.ndarray]:
    """Lateral spine with lordosis (apex anterior), corners in (SA, SP, IP, IA) order."""
    sign = 1.0 if facing == "right" else -1.0
    slips = slips or {}
    bodies: dict[Vertebra, np.ndarray] = {}
    offsets = [0.0, 25.0, 38.0, 35.0, 20.0, -15.0] if lordosis else [0.0] * 6  # anterior centroid offsets
    for k, vert in enumerate(Vertebra):
        shift_here = offsets[k]
        w, h = 200.0, 130.0
        cx = 600 + sign * shift_here
        cy = 200 + 190 * k
        sl, sr, ir, il = body(cx, cy, w, h, 0.0)
        corners = np.array([sr, sl, il, ir]) if facing == "right" else np.array([sl, sr, ir, il])
        bodies[vert] = corners
    # apply slips bottom-up: translate everything above the level anteriorly by pct of width
    order = list(Vertebra)
    for level, pct in slips.items():
        upper = Vertebra(level.split("-")[0])
        for v in order[: order.index(upper) + 1]:
            bodies[v] = bodies[v] + np.array([sign * pct / 100 * 200.0, 0.0])
    return bodies


@pytest.mark.parametrize("facing", ["left", "right"])
def test_lordosis_gives_the_anterior_side(facing: str) -> None:
    spine = _spine(facing)
    lumbar = [spine[v].mean(axis=0) for v in list(Vertebra)[:5]]
    est = anterior_from_lordosis(lumbar, [200.0] * 5)
    assert est is not None and est.side == facing and est.method == "lordosis"
    flat = [np.array([600.0, 200 + 190 * k]) for k in range(5)]
    assert anterior_from_lordosis(flat, [200.0] * 5) is None  # undecided, never guessed


@pytest.mark.parametrize("facing", ["left", "right"])
def test_posterior_elements_give_the_anterior_side(facing: str) -> None:
    image = np.full((1400, 1200), 0.2, np.float32)
    cents, widths, heights = [], [], []
    for k in range(4):
        cx, cy = 600.0, 250.0 + 250 * k
        cents.append(np.array([cx, cy]))
        widths.append(200.0)
        heights.append(130.0)
        post = -1 if facing == "right" else 1  # posterior elements behind the body
        x0 = int(cx + post * 100)
        x1 = int(cx + post * 260)
        image[int(cy - 60) : int(cy + 60), min(x0, x1) : max(x0, x1)] = 0.7
    est = anterior_from_posterior_elements(image, cents, widths, heights)
    assert est is not None and est.side == facing


def _found(bodies: dict[Vertebra, np.ndarray], drop: tuple[Vertebra, ...] = ()) -> list[Found]:
    return [
        Found(v, rounded_bowed_quad(c, radius=10, bow=0.02), 0.9) for v, c in bodies.items() if v not in drop
    ]


@pytest.mark.parametrize("facing", ["left", "right"])
def test_levels_match_the_geometry_definition(facing: str) -> None:
    bodies = _spine(facing, slips={"L4-L5": 18.0, "L5-S1": 30.0, "L2-L3": -7.0}, lordosis=False)
    segs = segments_from_outlines(
        _found(bodies), (1600, 1200), LumbarView.LATERAL, AnteriorEstimate(facing, "test")
    )
    assert [s.label for s in segs] == list(Vertebra)
    for s in segs:
        np.testing.assert_allclose(s.corners, bodies[s.label], atol=0.6)
        assert s.mask.shape == (1600, 1200) and s.mask.any()
    levels = {lv.name: lv for lv in measure_levels(segs, LumbarView.LATERAL, 5.0)}
    for name, lv in levels.items():
        upper, lower = (Vertebra(x) for x in name.split("-"))
        expected = slip(bodies[upper], bodies[lower])[0]
        assert lv.status is LevelStatus.MEASURED
        assert lv.slip_percent == pytest.approx(expected, abs=0.5)
    assert levels["L4-L5"].grade is MeyerdingGrade.I and levels["L4-L5"].direction is SlipDirection.ANTERIOR
    assert levels["L5-S1"].grade is MeyerdingGrade.II
    assert levels["L2-L3"].direction is SlipDirection.POSTERIOR and levels["L2-L3"].grade is MeyerdingGrade.I
    assert levels["L1-L2"].grade is MeyerdingGrade.NONE


def test_missing_vertebrae_give_missing_levels_never_guesses() -> None:
    bodies = _spine("right")
    segs = segments_from_outlines(
        _found(bodies, drop=(Vertebra.L3,)),
        (1600, 1200),
        LumbarView.LATERAL,
        AnteriorEstimate("right", "test"),
    )
    levels = {lv.name: lv for lv in measure_levels(segs, LumbarView.LATERAL, 5.0)}
    for name in ("L2-L3", "L3-L4"):
        assert levels[name].status is LevelStatus.MISSING
        assert levels[name].slip_percent is None and levels[name].grade is MeyerdingGrade.NONE
        assert "L3 not found" in levels[name].reason
    assert levels["L1-L2"].status is LevelStatus.MEASURED
    assert levels["L4-L5"].status is LevelStatus.MEASURED


def test_ap_view_measures_translation_without_grade() -> None:
    bodies = _spine("right", slips={"L4-L5": 20.0}, lordosis=False)
    segs = segments_from_outlines(_found(bodies), (1600, 1200), LumbarView.AP, None)
    levels = {lv.name: lv for lv in measure_levels(segs, LumbarView.AP, 5.0)}
    assert levels["L4-L5"].status is LevelStatus.MEASURED
    assert abs(levels["L4-L5"].slip_percent) == pytest.approx(20.0, abs=0.5)
    assert all(lv.grade is MeyerdingGrade.NONE for lv in levels.values())
    assert "AP view" in levels["L4-L5"].reason


def test_mask_opening_removes_a_thin_spur_and_keeps_the_corners() -> None:
    from cdss.analysis.lumbar.corners import open_mask

    corners = np.array([[40, 40], [200, 50], [195, 150], [45, 140]], float)
    body = fill_outline(corners, (220, 260))
    spurred = body.copy()
    spurred[140:210, 185:192] = True  # a 7 px wide spur down the posterior wall
    opened = open_mask(spurred, 0.1)
    assert not opened[180:210, 185:192].any()
    fit = fit_corners(mask_outline(opened))
    assert np.abs(np.sort(fit.corners, axis=0) - np.sort(corners, axis=0)).max() < 2.5
    np.testing.assert_array_equal(open_mask(spurred, 0.0), spurred)
