"""Synthetic radiographs: determinism, ground-truth consistency, DICOM validity, encodings."""

from __future__ import annotations

import json
import subprocess
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
from cdss.synth import Kind, TransferSyntax, Variant, generate, generate_pair, write_dataset
from cdss.synth.dataset import save
from cdss.synth.transfer import apply_transfer_syntax
from tests.peers import dciodvfy_errors, require_binary

SMALL = 320  # max image side for fast tests


def _mask(poly: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.array(poly)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return m.astype(bool)


def test_same_seed_same_image_different_index_different_image() -> None:
    a_ds, a_gt = generate(Kind.LUMBAR_LATERAL, seed=7, index=3, max_side=SMALL)
    b_ds, b_gt = generate(Kind.LUMBAR_LATERAL, seed=7, index=3, max_side=SMALL)
    c_ds, c_gt = generate(Kind.LUMBAR_LATERAL, seed=7, index=4, max_side=SMALL)
    assert a_ds.PixelData == b_ds.PixelData
    assert a_gt == b_gt
    assert a_ds.SOPInstanceUID == b_ds.SOPInstanceUID
    assert a_ds.SOPInstanceUID != c_ds.SOPInstanceUID
    assert a_ds.PixelData != c_ds.PixelData
    assert a_gt["vertebrae"] != c_gt["vertebrae"]


@pytest.mark.parametrize("index", range(6))
def test_lumbar_truth_matches_its_own_corners(index: int) -> None:
    ds, gt = generate(Kind.LUMBAR_LATERAL, seed=11, index=index, max_side=SMALL)
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert (gt["image"]["rows"], gt["image"]["columns"]) == (rows, cols)
    assert set(gt["vertebrae"]) == {"L1", "L2", "L3", "L4", "L5", "S1"}
    for v in gt["vertebrae"].values():
        c = np.array(v["corners"])
        assert c.shape == (4, 2)
        assert (c[:, 0] >= 0).all() and (c[:, 0] <= cols - 1).all()
        assert (c[:, 1] >= 0).all() and (c[:, 1] <= rows - 1).all()
        assert len(v["outline"]) > 20
    levels = {lv["level"]: lv for lv in gt["levels"]}
    assert list(levels) == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    for lv in levels.values():
        pct, _, _ = slip(
            np.array(gt["vertebrae"][lv["upper"]]["corners"]),
            np.array(gt["vertebrae"][lv["lower"]]["corners"]),
        )
        assert lv["slip_percent"] == pytest.approx(pct, abs=0.0006)
        grade, direction = meyerding_grade(pct, 5.0)
        assert (lv["grade"], lv["direction"]) == (grade.value, direction.value)
    for level, planned in gt["planned_slips"].items():  # slips land where they were planned
        assert levels[level]["slip_percent"] == pytest.approx(planned, abs=0.05)
    # anterior side: superior-anterior corners lie on the stated side of the posterior ones
    l3 = np.array(gt["vertebrae"]["L3"]["corners"])
    assert (l3[0, 0] < l3[1, 0]) == (gt["anterior"] == "left")


def test_grades_cover_none_to_IV_and_retrolisthesis() -> None:
    grades: Counter[str] = Counter()
    retro = 0
    images_without = 0
    n = 60
    for i in range(n):
        _, gt = generate(Kind.LUMBAR_LATERAL, seed=5, index=i, max_side=160)
        slipped = [lv for lv in gt["levels"] if lv["grade"] != "none"]
        images_without += not slipped
        grades.update(lv["grade"] for lv in slipped)
        retro += sum(lv["direction"] == "retrolisthesis" for lv in slipped)
    assert {"I", "II", "III", "IV"} <= set(grades), grades
    assert retro > 0
    assert 0.15 * n < images_without < 0.6 * n


def test_vertebral_bodies_are_bright_in_display_polarity_for_both_photometrics(tmp_path: Path) -> None:
    seen = set()
    for variant in (Variant.STANDARD, Variant.MONOCHROME1):
        for index in range(4):
            ds, gt = generate(Kind.LUMBAR_LATERAL, seed=2, index=index, variant=variant, max_side=600)
            seen.add(str(ds.PhotometricInterpretation))
            img = display_image(ds)
            stored = ds.pixel_array.astype(float)
            # L1-L2 is never planned to slip: its disc space is a clean quadrilateral
            body = _mask(gt["vertebrae"]["L2"]["outline"], img.shape)
            hi = np.array(gt["vertebrae"]["L1"]["corners"])
            lo = np.array(gt["vertebrae"]["L2"]["corners"])
            disc = _mask([hi[3], hi[2], lo[1], lo[0]], img.shape) & ~body
            disc &= ~_mask(gt["vertebrae"]["L1"]["outline"], img.shape)
            raw = gt["dicom"]["presentation_intent_type"] == "FOR PROCESSING"  # unprocessed: flat
            assert img[body].mean() > img[disc].mean() + (0.005 if raw else 0.04)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                assert stored[body].mean() < stored[disc].mean()
            else:
                assert stored[body].mean() > stored[disc].mean()
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def test_variants_do_what_they_say() -> None:
    for i in range(3):
        _, gt = generate(Kind.LUMBAR_LATERAL, seed=1, index=i, variant=Variant.MONOCHROME1, max_side=160)
        assert gt["image"]["photometric"] == "MONOCHROME1"
        _, gt = generate(Kind.LUMBAR_LATERAL, seed=1, index=i, variant=Variant.ROTATED, max_side=160)
        assert 5.0 <= abs(gt["image"]["rotation_deg"]) <= 15.0
        _, gt = generate(Kind.LUMBAR_LATERAL, seed=1, index=i, variant=Variant.HARD, max_side=160)
        hard = gt["image"]
        assert hard["variant_effects"], "hard images get at least one of the three effects"
        if "monochrome1" in hard["variant_effects"]:
            assert hard["photometric"] == "MONOCHROME1"
        if "rotation" in hard["variant_effects"]:
            assert 8.0 <= abs(hard["rotation_deg"]) <= 15.0


@pytest.mark.parametrize("syntax", list(TransferSyntax))
def test_transfer_syntaxes_round_trip(tmp_path: Path, syntax: TransferSyntax) -> None:
    ds, gt = generate(Kind.LUMBAR_LATERAL, seed=3, index=1, max_side=SMALL)
    reference = ds.pixel_array.copy()
    bits = int(ds.BitsStored)
    uid = str(ds.SOPInstanceUID)
    apply_transfer_syntax(ds, syntax)
    dcm, js = save(ds, gt, tmp_path, f"ts_{syntax.value}")
    back = pydicom.dcmread(dcm)
    assert back.file_meta.TransferSyntaxUID == syntax.uid
    assert json.loads(js.read_text())["image"]["transfer_syntax"] == str(syntax.uid)
    arr = back.pixel_array
    lossy = syntax is TransferSyntax.JPEG_BASELINE  # lossy compression makes a new instance
    assert (back.SOPInstanceUID != uid) == lossy
    assert json.loads(js.read_text())["dicom"]["sop_instance_uid"] == back.SOPInstanceUID
    if syntax is TransferSyntax.JPEG_BASELINE:
        expected = reference.astype(float) * 255.0 / ((1 << bits) - 1)
        assert int(back.BitsStored) == 8
        assert np.abs(arr.astype(float) - expected).mean() < 2.0
    else:
        np.testing.assert_array_equal(arr, reference)
    if syntax is TransferSyntax.DEFLATED:
        # dciodvfy cannot read deflated files: let DCMTK inflate it (which also proves DCMTK reads it)
        dcmconv = require_binary("dcmconv", "dcmtk")
        inflated = tmp_path / "inflated.dcm"
        subprocess.run([dcmconv, "+te", str(dcm), str(inflated)], check=True, capture_output=True)
        dcm = inflated
    assert dciodvfy_errors(dcm) == []


def test_files_pass_dciodvfy_for_every_sop_class(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, Kind.LUMBAR_LATERAL, 24, seed=9, max_side=200)
    classes: dict[str, Path] = {}
    for w in written:
        truth = json.loads(w.truth.read_text())
        classes.setdefault(truth["dicom"]["sop_class_uid"], w.dicom)
    assert "1.2.840.10008.5.1.4.1.1.1.1" in classes
    for path in classes.values():
        assert dciodvfy_errors(path) == [], path


def test_cli_generate_and_render_overlay(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "set"
    res = runner.invoke(
        app, ["fixtures", "generate", str(out), "-n", "2", "-s", "4", "--max-side", "256", "-t", "rle"]
    )
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 2 and all(f.with_suffix(".json").exists() for f in files)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == TransferSyntax.RLE.uid
    res = runner.invoke(app, ["fixtures", "render", str(out), "--overlay", "-o", str(tmp_path / "png")])
    assert res.exit_code == 0, res.output
    png = cv2.imread(str(tmp_path / "png" / f"{files[0].stem}.png"))
    assert png is not None and png.shape[2] == 3
    # the overlay is coloured, the radiograph is not
    assert (np.abs(png[..., 0].astype(int) - png[..., 2].astype(int)) > 60).any()


@pytest.mark.parametrize("index", range(6))
def test_cervical_truth_is_consistent(index: int) -> None:
    ds, gt = generate(Kind.CERVICAL_OBLIQUE, seed=21, index=index, max_side=400)
    rows, cols = int(ds.Rows), int(ds.Columns)
    cerv = gt["cervical"]
    c0, r0, c1, r1 = cerv["roi"]
    assert 0 <= c0 < c1 <= cols - 1 and 0 <= r0 < r1 <= rows - 1
    assert [f["level"] for f in cerv["foramina"]] == ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7"]
    for f in cerv["foramina"]:
        outline = np.array(f["outline"])
        assert (outline[:, 0] >= c0).all() and (outline[:, 0] <= c1).all()
        assert (outline[:, 1] >= r0).all() and (outline[:, 1] <= r1).all()
        area = cv2.contourArea(outline.astype(np.float32))
        assert 1 - area / f["nominal_area_px"] == pytest.approx(f["narrowing"], abs=0.01)
    worst = max(f["narrowing"] for f in cerv["foramina"])
    assert cerv["label"] == ("abnormal" if worst >= cerv["threshold"] else "normal")
    # the labels are not ambiguous: normal images stay well below the threshold
    assert worst <= 0.16 or worst >= cerv["threshold"]
    assert (
        gt["dicom"]["view_position"] in {"LAO", "RPO", None}
        if cerv["laterality"] == "L"
        else {"RAO", "LPO", None}
    )


def test_cervical_left_and_right_views_are_mirrored_and_labels_balanced() -> None:
    labels: Counter[str] = Counter()
    for i in range(16):
        _, gt = generate(Kind.CERVICAL_OBLIQUE, seed=3, index=i, max_side=160)
        labels[gt["cervical"]["label"]] += 1
    assert labels["normal"] >= 3 and labels["abnormal"] >= 3
    for lat, anterior in (("L", "right"), ("R", "left")):
        _, gt = generate(Kind.CERVICAL_OBLIQUE, seed=3, index=0, laterality=lat, max_side=300)
        assert gt["cervical"]["laterality"] == lat and gt["anterior"] == anterior
        c3 = np.array(gt["cervical"]["vertebrae"]["C3"]["corners"])
        foramen = np.array(gt["cervical"]["foramina"][1]["centre"])
        # the foramina lie behind the bodies: on the posterior side of the superior-posterior corner
        body_x = c3[:, 0].mean()
        assert (foramen[0] < body_x) == (anterior == "right")
    _, gt = generate(Kind.CERVICAL_OBLIQUE, seed=3, index=0, abnormal=False, max_side=160)
    assert gt["cervical"]["label"] == "normal"
    _, gt = generate(Kind.CERVICAL_OBLIQUE, seed=3, index=0, abnormal=True, max_side=160)
    assert gt["cervical"]["label"] == "abnormal"


def test_cervical_files_pass_dciodvfy(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, Kind.CERVICAL_OBLIQUE, 3, seed=8, max_side=300)
    for w in written:
        assert dciodvfy_errors(w.dicom) == [], w.dicom


@pytest.mark.parametrize("index", range(4))
def test_lumbar_ap_truth(index: int) -> None:
    ds, gt = generate(Kind.LUMBAR_AP, seed=13, index=index, max_side=400)
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert set(gt["vertebrae"]) == {"L1", "L2", "L3", "L4", "L5", "S1"}
    for v in gt["vertebrae"].values():
        c = np.array(v["corners"])
        assert (c >= 0).all() and (c[:, 0] <= cols - 1).all() and (c[:, 1] <= rows - 1).all()
        # superior-left, superior-right, inferior-right, inferior-left (image sides)
        assert c[0, 0] < c[1, 0] and c[3, 0] < c[2, 0]
        assert c[0, 1] < c[3, 1] and c[1, 1] < c[2, 1]
    l1, l5 = np.array(gt["vertebrae"]["L1"]["corners"]), np.array(gt["vertebrae"]["L5"]["corners"])
    assert l1[:, 1].mean() < l5[:, 1].mean()
    for name, (left, right) in gt["ap"]["pedicles"].items():
        body = np.array(gt["vertebrae"][name]["corners"])
        assert (
            body[:, 0].min()
            < np.mean(np.array(left)[:, 0])
            < np.mean(np.array(right)[:, 0])
            < body[:, 0].max()
        )


@pytest.mark.parametrize("part", ["chest", "hand", "knee", "pelvis", "skull"])
def test_other_body_parts_headers_and_dciodvfy(tmp_path: Path, part: str) -> None:
    ds, gt = generate(Kind.OTHER, seed=4, index=0, body_part=part, max_side=300)
    assert gt["kind"] == "other" and gt["other"]["body_part"] == part
    assert "vertebrae" not in gt
    if part in ("hand", "knee"):
        side = gt["other"]["side"]
        assert side in ("L", "R")
        assert ds.get("ImageLaterality", ds.get("Laterality")) == side
    dcm, _ = save(ds, gt, tmp_path, part)
    assert dciodvfy_errors(dcm) == []


def test_for_processing_and_for_presentation_pair_of_one_acquisition(tmp_path: Path) -> None:
    (proc, tp), (pres, tq) = generate_pair(Kind.LUMBAR_LATERAL, seed=6, index=2, max_side=300)
    assert (
        proc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1.1"
        and proc.PresentationIntentType == "FOR PROCESSING"
    )
    assert (
        pres.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
        and pres.PresentationIntentType == "FOR PRESENTATION"
    )
    assert proc.StudyInstanceUID == pres.StudyInstanceUID and proc.PatientID == pres.PatientID
    assert proc.SeriesInstanceUID != pres.SeriesInstanceUID and proc.SOPInstanceUID != pres.SOPInstanceUID
    assert tp["vertebrae"] == tq["vertebrae"] and tp["levels"] == tq["levels"]
    assert tp["dicom"]["pair_sop_instance_uid"] == pres.SOPInstanceUID
    assert not np.array_equal(proc.pixel_array, pres.pixel_array)
    for ds, gt in ((proc, tp), (pres, tq)):
        dcm, _ = save(ds, gt, tmp_path, gt["dicom"]["presentation_intent_type"].replace(" ", "_"))
        assert dciodvfy_errors(dcm) == []


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_committed_fixture_set_is_complete_readable_and_valid(tmp_path: Path) -> None:
    files = sorted((FIXTURES / "samples").glob("*.dcm"))
    assert len(files) >= 25
    readme = (FIXTURES / "README.md").read_text()
    syntaxes, photometrics, classes = set(), set(), set()
    for f in files:
        assert f"`{f.name}`" in readme, f"{f.name} has no provenance line in fixtures/README.md"
        truth = json.loads(f.with_suffix(".json").read_text())
        ds = pydicom.dcmread(f)
        assert ds.SOPInstanceUID == truth["dicom"]["sop_instance_uid"]
        assert ds.pixel_array.shape == (truth["image"]["rows"], truth["image"]["columns"])
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        photometrics.add(str(ds.PhotometricInterpretation))
        classes.add(str(ds.SOPClassUID))
        target = f
        if ds.file_meta.TransferSyntaxUID == TransferSyntax.DEFLATED.uid:
            target = tmp_path / f.name
            subprocess.run([require_binary("dcmconv", "dcmtk"), "+te", str(f), str(target)], check=True)
        assert dciodvfy_errors(target) == [], f.name
    assert {t.uid for t in TransferSyntax} <= syntaxes
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert classes == {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
    }
