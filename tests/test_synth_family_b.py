"""Synthetic family B (cdss.synth.family_b): ground truth, pixels, headers, DICOM validity, integration."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from cdss.analysis.geometry import meyerding_grade, slip
from cdss.analysis.pixels import display_image
from cdss.cli import app
from cdss.synth import generate, write_dataset
from cdss.synth.family_b.spine import LEVELS, build_spine, sample_slip_plan
from tests.peers import dciodvfy_errors

SMALL = 320
GT = ("L1", "L2", "L3", "L4", "L5", "S1")

# "L-SPINE" is a deliberate, recorded non-conformant BodyPartExamined spelling
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR CS")


def _b(kind: str, index: int, variant: str = "standard", seed: int = 3, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return generate(kind, seed=seed, index=index, variant=variant, family="b", **kw)


def _mask(poly, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(poly, float)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return m.astype(bool)


def _shrink(poly, f: float) -> np.ndarray:
    p = np.asarray(poly, float)
    c = p.mean(axis=0)
    return c + (p - c) * f


def test_deterministic_and_distinct_from_family_a() -> None:
    a_ds, a_gt = _b("lumbar_lateral", 4, max_side=SMALL)
    b_ds, b_gt = _b("lumbar_lateral", 4, max_side=SMALL)
    c_ds, _ = _b("lumbar_lateral", 5, max_side=SMALL)
    assert a_ds.PixelData == b_ds.PixelData and a_gt == b_gt
    assert a_ds.SOPInstanceUID == b_ds.SOPInstanceUID != c_ds.SOPInstanceUID
    fa_ds, fa_gt = generate("lumbar_lateral", seed=3, index=4, max_side=SMALL)
    assert a_gt["generator"] == "cdss.synth.family_b" and fa_gt["generator"] == "cdss.synth"
    assert fa_ds.SOPInstanceUID != a_ds.SOPInstanceUID


@pytest.mark.parametrize(
    ("index", "variant"), [(i, "standard") for i in range(6)] + [(i, "hard") for i in range(6)]
)
def test_levels_are_recomputed_from_the_stored_corners(index: int, variant: str) -> None:
    _, gt = _b("lumbar_lateral", index, variant, max_side=SMALL)
    verts = gt["vertebrae"]
    assert set(GT) <= set(verts)
    planned = gt["planned_slips"]
    assert [lv["level"] for lv in gt["levels"]] == list(LEVELS)
    for lv in gt["levels"]:
        pct, _, _ = slip(np.array(verts[lv["upper"]]["corners"]), np.array(verts[lv["lower"]]["corners"]))
        assert lv["slip_percent"] == pytest.approx(pct, abs=6e-4)
        grade, direction = meyerding_grade(pct, 5.0)
        assert (lv["grade"], lv["direction"]) == (grade.value, direction.value)
        if lv["level"] in planned:
            assert pct == pytest.approx(planned[lv["level"]], abs=0.05)
        else:
            assert abs(pct) < 5.0, lv  # no accidental listhesis
    for name, v in verts.items():
        assert len(v["corners"]) == 4 and len(v["outline"]) >= 40
        assert 0.0 <= v["visible_fraction"] <= 1.0
        if name in ("T11", "T12"):
            assert v["visible_fraction"] >= 0.6


def test_slip_distribution_of_the_spine_model() -> None:
    """Geometry only (no rendering): the realised slips follow the documented distribution."""
    rng = np.random.default_rng(0)
    n = 500
    no_slip = 0
    grades: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    for _ in range(n):
        plan = sample_slip_plan(rng, hard=False)
        spine = build_spine(rng, age=float(rng.uniform(20, 90)), sex="F", plan=plan, hard=False)
        found = False
        for up, lo in zip(("L1", "L2", "L3", "L4", "L5"), ("L2", "L3", "L4", "L5", "S1"), strict=True):
            pct, _, _ = slip(spine.verts[up].quad, spine.verts[lo].quad)
            grade, direction = meyerding_grade(pct, 5.0)
            if grade.value != "none":
                found = True
                grades[grade.value if direction.value == "anterolisthesis" else "retro"] += 1
                levels[f"{up}-{lo}"] += 1
        no_slip += not found
    assert 0.28 < no_slip / n < 0.43
    assert {"I", "II", "III", "IV", "V", "retro"} <= set(grades)
    top = [lv for lv, _ in levels.most_common(2)]
    assert set(top) == {"L4-L5", "L5-S1"}


@pytest.mark.parametrize("index", range(4))
def test_bodies_are_drawn_where_the_truth_says(index: int) -> None:
    """Inside each annotated body the image is brighter than in the disc space below it."""
    ds, gt = _b("lumbar_lateral", index, max_side=700, seed=11)
    img = display_image(ds)
    shape = img.shape
    v = gt["vertebrae"]
    for up, lo in (("L1", "L2"), ("L2", "L3"), ("L3", "L4")):
        if min(v[up]["visible_fraction"], v[lo]["visible_fraction"]) < 1.0:
            continue
        body = _mask(_shrink(v[up]["outline"], 0.7), shape)
        cu, cl = np.array(v[up]["corners"]), np.array(v[lo]["corners"])
        disc = np.array([cu[2], cu[3], cl[0], cl[1]])  # IP, IA of the upper; SA, SP of the lower
        disc_mask = (
            _mask(_shrink(disc, 0.6), shape)
            & ~_mask(v[up]["outline"], shape)
            & ~_mask(v[lo]["outline"], shape)
        )
        if disc_mask.sum() < 10:
            continue
        assert img[body].mean() > img[disc_mask].mean() + 0.02, (up, lo)
        # corners sit at the rounded corners of the outline (within a few percent of the depth)
        width = np.hypot(*(cu[0] - cu[1]))
        outline = np.array(v[up]["outline"])
        for c in cu:
            assert np.min(np.hypot(*(outline - c).T)) < 0.12 * width


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_monochrome1_and_bit_depths_decode(bits: int) -> None:
    ds, gt = _b("lumbar_lateral", 2, "monochrome1", max_side=400, bits_stored=bits)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_bytes(ds)))
    assert ds.PhotometricInterpretation == "MONOCHROME1" and gt["image"]["photometric"] == "MONOCHROME1"
    arr = ds.pixel_array
    assert int(ds.BitsStored) == bits and int(arr.max()) <= (1 << bits) - 1
    assert arr.dtype == (np.uint8 if bits == 8 else np.uint16) and int(ds.BitsAllocated) == (
        8 if bits == 8 else 16
    )
    img = display_image(ds)
    assert img.dtype == np.float32 and img.min() >= 0.0 and img.max() <= 1.0
    bodies = np.zeros(img.shape, bool)
    for n in ("L2", "L3", "L4"):
        bodies |= _mask(_shrink(gt["vertebrae"][n]["outline"], 0.7), img.shape)
    assert img[bodies].mean() > np.median(img)  # bone bright after inversion


def _bytes(ds: pydicom.Dataset) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_lateral_headers_vary_and_are_recorded() -> None:
    seen: dict[str, Counter] = {
        k: Counter() for k in ("vp", "po", "bp", "sop", "voi", "rescale", "pit", "ps")
    }
    n = 48
    for i in range(n):
        ds, gt = _b("lumbar_lateral", i, max_side=160, seed=21)
        rec = gt["dicom"]
        vp = ds.get("ViewPosition")
        assert rec["view_position"] == (None if vp is None else str(vp))
        seen["vp"][rec["view_position"]] += 1
        po = ds.get("PatientOrientation")
        seen["po"]["/".join(po) if po else ("" if po is not None else None)] += 1
        seen["bp"][rec["body_part_examined"]] += 1
        seen["sop"][rec["sop_class_uid"]] += 1
        seen["voi"][rec["voi"]] += 1
        seen["rescale"][rec["rescale_intercept"]] += 1
        seen["pit"][rec["presentation_intent_type"]] += 1
        seen["ps"]["PixelSpacing" in ds] += 1
        assert rec["voi"] == (
            "lut" if "VOILUTSequence" in ds else ("window" if "WindowCenter" in ds else "none")
        )
        assert gt["image"]["pixel_spacing_mm"] == (
            [float(x) for x in ds.PixelSpacing]
            if "PixelSpacing" in ds
            else ([float(x) for x in ds.ImagerPixelSpacing] if "ImagerPixelSpacing" in ds else None)
        )
    assert set(seen["vp"]) <= {"LL", "RL", "LATERAL", "", None}
    assert seen["vp"][None] + seen["vp"][""] >= 0.2 * n
    assert {"LL", "LATERAL"} <= set(seen["vp"])
    assert {"A/F", "P/F"} <= set(seen["po"])
    assert {"LSPINE", "LUMBAR SPINE", None} <= set(seen["bp"])
    assert {"1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1"} <= set(seen["sop"])  # DX, CR
    assert {"window", "lut"} <= set(seen["voi"])
    assert seen["ps"][True] and seen["ps"][False]


def test_other_views_and_misleading_tags() -> None:
    parts: Counter[str] = Counter()
    misleading = 0
    for i in range(16):
        ds, gt = _b("other", i, max_side=160, seed=5)
        assert gt["kind"] == "other" and "vertebrae" not in gt
        parts[gt["other"]["body_part"]] += 1
        if gt["other"]["misleading_tags"]:
            misleading += 1
            assert gt["dicom"]["body_part_examined"] in ("LSPINE", "LUMBAR SPINE", "SPINE")
    assert len(parts) >= 4 and misleading >= 1
    for part in ("chest", "chest_lateral", "abdomen", "pelvis", "hip", "tspine", "knee", "hand"):
        ds, gt = _b("other", 0, max_side=160, body_part=part)
        img = display_image(ds)
        assert img.std() > 0.05, part


@pytest.mark.parametrize("index", range(3))
def test_ap_truth(index: int) -> None:
    _, gt = _b("lumbar_ap", index, max_side=400)
    assert gt["levels"] == [] and set(GT) <= set(gt["vertebrae"])
    for n in GT:
        c = np.array(gt["vertebrae"][n]["corners"])
        assert (
            c[0, 0] < c[1, 0] and c[3, 0] < c[2, 0]
        )  # superior-left/right, inferior-right/left by image side
        assert c[0, 1] < c[3, 1] and c[1, 1] < c[2, 1]
    assert len(gt["ap"]["pedicles"]["L3"]) == 2


def test_cropped_fields_and_extra_vertebrae() -> None:
    cropped = extra = 0
    for i in range(14):
        _, gt = _b("lumbar_lateral", i, "hard", max_side=160, seed=8)
        end = gt["field"]["cropped_end"]
        if end:
            cropped += 1
            vf = gt["vertebrae"][end]["visible_fraction"]
            assert 0.25 < vf < 0.97, (end, vf)
        extra += "T12" in gt["vertebrae"]
    assert cropped >= 1 and extra >= 1


@pytest.mark.parametrize("lstv", ["lstv_sacralized_L5", "lstv_lumbarized_S1"])
def test_transitional_vertebra_is_flagged(lstv: str) -> None:
    _, gt = _b("lumbar_lateral", 1, max_side=SMALL, lstv=lstv)
    assert lstv in gt["anomalies"] and "T12" in gt["numbering"]
    assert set(GT) <= set(gt["vertebrae"])
    if lstv == "lstv_sacralized_L5":
        assert "L5-S1" not in gt["planned_slips"]


def test_hard_variant_has_implants_and_detector_effects() -> None:
    effects: Counter[str] = Counter()
    implants = 0
    for i in range(12):
        _, gt = _b("lumbar_lateral", i, "hard", max_side=160, seed=2)
        effects.update(gt["image"]["variant_effects"])
        implants += bool(gt["implants"])
        for item in gt["implants"]:
            assert item["type"] in ("pedicle_screws", "rods", "interbody_cage", "vertebroplasty_cement")
    assert implants >= 1
    assert {"heavy_collimation", "rotation", "low_dose"} <= set(effects)


def test_files_pass_dciodvfy(tmp_path: Path) -> None:
    written = []
    for kind in ("lumbar_lateral", "lumbar_ap", "other"):
        written += write_dataset(tmp_path, kind, 6, seed=4, family="b", max_side=240)
    checked: Counter[str] = Counter()
    for w in written:
        gt = json.loads(w.truth.read_text())
        if not gt["dicom"]["conformant"]:
            continue  # e.g. BodyPartExamined "L-SPINE", recorded as non-conformant
        assert dciodvfy_errors(w.dicom) == [], w.dicom
        checked[gt["dicom"]["modality"]] += 1
        checked[gt["dicom"]["voi"]] += 1
        checked[f"bits{gt['image']['bits_stored'] <= 8}"] += 1
    assert checked["DX"] and checked["CR"]


def test_cli_family_b_names_and_mixed_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "mix"
    res = runner.invoke(
        app,
        [
            "fixtures",
            "generate",
            str(out),
            "--family",
            "b",
            "-n",
            "2",
            "-s",
            "4",
            "--max-side",
            "200",
            "-t",
            "jpeg",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fixtures", "generate", str(out), "-n", "1", "-s", "4", "--max-side", "200"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("*.dcm"))
    assert names == [
        "lumbar_lateral_b_standard_s4_00000.dcm",
        "lumbar_lateral_b_standard_s4_00001.dcm",
        "lumbar_lateral_standard_s4_00000.dcm",
    ]
    for name in names[:2]:
        ds = pydicom.dcmread(out / name)
        assert "VOILUTSequence" not in ds  # JPEG baseline: the LUT became a window
        assert display_image(ds).std() > 0.05
        assert json.loads((out / name).with_suffix(".json").read_text())["generator"] == "cdss.synth.family_b"
    res = runner.invoke(app, ["fixtures", "generate", str(out), "--family", "b", "-k", "cervical_oblique"])
    assert res.exit_code != 0
