"""The shipped view classifier on committed images: right class, robust to polarity, mirror,
rotation and noise; a small held-out quality gate of both synthetic families; loads once per
registry. Speed is measured by ``cdss evaluate view`` and reported in docs/models/view.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom import dcmread

from cdss.analysis.pixels import display_image
from cdss.analysis.registry import ModelRegistry
from cdss.analysis.view.classifier import MANIFEST, SHIPPED_WEIGHTS, ViewClassifier
from cdss.analysis.view.labels import ViewLabel, mirror_label
from cdss.analysis.view.preprocess import prepare
from cdss.analysis.view.weights import ViewWeightsError, file_sha256
from cdss.config import ModelSettings
from cdss.train.view import find_samples, label_from_truth

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "fixtures" / "samples"
HELDOUT = ROOT / "fixtures" / "heldout" / "view"


@pytest.fixture(scope="module")
def clf() -> ViewClassifier:
    return ViewClassifier.load(None, "cpu")


def _truth(dcm: Path) -> ViewLabel:
    return label_from_truth(json.loads(dcm.with_suffix(".json").read_text()))


def test_shipped_weights_match_their_manifest(clf: ViewClassifier) -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["sha256"] == file_sha256(SHIPPED_WEIGHTS) == clf.info.weights_sha256
    assert manifest["name"] == clf.info.name and manifest["version"] == clf.info.version
    assert manifest["labels"] == [lab.value for lab in ViewLabel]
    assert manifest["metrics"], "the manifest carries the measured figures"


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.dcm")))
def test_every_committed_sample_gets_its_class(clf: ViewClassifier, name: str) -> None:
    path = SAMPLES / name
    pred = clf.classify(display_image(dcmread(path)))
    assert pred.label is _truth(path), pred.probabilities
    assert abs(sum(pred.probabilities.values()) - 1.0) < 1e-3


def test_input_planes_are_bounded_and_letterboxed() -> None:
    img = np.random.default_rng(0).random((300, 120)).astype(np.float32)
    x = prepare(img, 128)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32
    assert x[2].sum() == pytest.approx(128 * round(120 * 128 / 300))  # mask = the image's area
    assert np.all(x[0] >= -0.5) and np.all(x[0] <= 0.5)
    assert np.all(x[:, :, :10] == 0)  # padding


def test_mirror_swaps_the_oblique_side_only(clf: ViewClassifier) -> None:
    for name in (
        "cervical_obl_left_normal.dcm",
        "cervical_obl_right_abnormal.dcm",
        "lumbar_lateral_std_a.dcm",
    ):
        path = SAMPLES / name
        img = display_image(dcmread(path))
        pred = clf.classify(img[:, ::-1].copy())
        assert pred.label is mirror_label(_truth(path)), (name, pred.probabilities)


def test_robust_to_inversion_rotation_noise_and_uint8(clf: ViewClassifier) -> None:
    rng = np.random.default_rng(1)
    for name in (
        "lumbar_lateral_std_b.dcm",
        "lumbar_ap_a.dcm",
        "cervical_obl_right_normal.dcm",
        "other_pelvis.dcm",
    ):
        path = SAMPLES / name
        want = _truth(path)
        img = display_image(dcmread(path))
        h, w = img.shape
        rotated = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))
        noisy = np.clip(img + rng.normal(0, 0.04, img.shape).astype(np.float32), 0, 1)
        for variant in (rotated, noisy, (img * 255).astype(np.uint8)):
            pred = clf.classify(variant)
            assert pred.label is want, (name, pred.probabilities)
    # A file whose polarity is wrong (a MONOCHROME1 image shown without inversion) is rarer
    # but must not become a different *spine* view
    pred = clf.classify(1.0 - display_image(dcmread(SAMPLES / "lumbar_lateral_std_a.dcm")))
    assert pred.label in (ViewLabel.LUMBAR_LATERAL, ViewLabel.OTHER), pred.probabilities


def test_registry_loads_the_classifier_once() -> None:
    reg = ModelRegistry(ModelSettings(device="cpu"))
    first = reg.view_classifier()
    assert reg.view_classifier() is first
    assert "view:shipped" in reg.loaded()


def test_missing_weights_are_reported_clearly(tmp_path: Path) -> None:
    with pytest.raises(ViewWeightsError, match="never downloads"):
        ViewClassifier.load(tmp_path / "nope.pt", "cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ViewWeightsError, match="not a cdss view classifier file"):
        ViewClassifier.load(bad, "cpu")


def _heldout_sets() -> list[Path]:
    return sorted(p for p in HELDOUT.iterdir() if (p / "labels.csv").exists())


@pytest.mark.parametrize("directory", _heldout_sets(), ids=lambda p: p.name)
def test_heldout_quality_gate(clf: ViewClassifier, directory: Path) -> None:
    """Committed held-out images of each synthetic family (seeds never trained on).

    Gate: ≥ 95 % of all images, every lateral lumbar film in the right analysis group
    (lumbar lateral), and no spine image called "other" with the veto's confidence.
    """
    with (directory / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    samples = find_samples([directory])
    assert len(samples) == len(rows) >= 20
    right = 0
    for s in samples:
        pred = clf.classify(display_image(dcmread(s.path)))
        right += pred.label is s.label
        if s.label is ViewLabel.LUMBAR_LATERAL:
            assert pred.label is ViewLabel.LUMBAR_LATERAL, (s.path.name, pred.probabilities)
        if s.label is not ViewLabel.OTHER:
            assert pred.p(ViewLabel.OTHER) < 0.8, (s.path.name, pred.probabilities)
    assert right / len(samples) >= 0.95
