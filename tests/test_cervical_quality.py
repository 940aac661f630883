"""Quality gate: the SHIPPED cervical weights on the committed held-out set meet the targets.

``fixtures/heldout/cervical/`` holds 40 synthetic cervical obliques generated with seed 901,
which no training run used (training: seeds 100-103, evaluation set: 900): 20 standard and 20
``hard`` (MONOCHROME1 and/or ±8…15° rotation and/or doubled noise), half of each abnormal,
at most 512 pixels per side, JPEG-LS lossless (see its README). The full pipeline runs as the
node runs it (ROI detection → crop → HE → flip → STN → classifier) with the header side given.

Targets (docs/models/cervical.md): AUC ≥ 0.95 on standard images; on the hard variants an error
(1 − AUC) at most twice the standard target's, i.e. AUC ≥ 0.90; every image analysed; the ROI
detector finds the cervical spine (IoU ≥ 0.5) and tells the side of every view.

The shipped bundle 2.0.0 (compact CNN classifier) measures AUC 1.000 / 1.000 on this set and
0.990 / 0.973 on the 300-image evaluation set (docs/models/cervical.md); 1.0.0 (ResNet18) was at
chance. A retrained bundle that falls below the targets turns this gate red.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cdss.analysis.cervical import MANIFEST, SHIPPED_WEIGHTS
from cdss.train.cervical.evaluate import TARGETS, evaluate_cervical

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "cervical"

pytestmark = pytest.mark.slow


def test_shipped_weights_match_their_manifest() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["file"] == SHIPPED_WEIGHTS.name
    assert manifest["sha256"] == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert 0.0 < manifest["operating_point"] < 1.0
    # the card's figures are the manifest's: a retrained bundle must be re-evaluated before it ships
    assert manifest["evaluation"]["auc_standard"] >= TARGETS["auc_standard"]
    assert manifest["evaluation"]["auc_hard"] >= TARGETS["auc_hard"]


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return evaluate_cervical(HELDOUT, weights=None, out=tmp_path_factory.mktemp("gate"), device="cpu")


def test_every_image_is_analysed(metrics: dict) -> None:
    assert metrics["images"] == 40
    assert metrics["groups"]["all"]["failed"] == 0
    std = metrics["groups"]["standard"]["overall"]
    assert std["n"] == 20 and std["positives"] == 10
    # both labels are called (the operating point lies inside the range of the probabilities)
    assert std["tp"] + std["fp"] > 0 and std["tn"] + std["fn"] > 0, std


def test_standard_images_meet_the_auc_target(metrics: dict) -> None:
    std = metrics["groups"]["standard"]["overall"]
    assert std["n"] == 20 and std["positives"] == 10
    assert std["auc"] >= TARGETS["auc_standard"], std


def test_hard_variants_within_a_factor_of_two(metrics: dict) -> None:
    hard = metrics["groups"]["hard"]["overall"]
    assert hard["n"] == 20
    assert hard["auc"] >= TARGETS["auc_hard"], hard


def test_roi_detector_finds_the_spine_and_the_side(metrics: dict) -> None:
    roi = metrics["roi"]
    assert roi["iou_p05"] >= 0.5, roi
    assert roi["side_accuracy"] == 1.0, roi
