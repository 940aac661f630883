"""Quality gate: the SHIPPED cervical weights on the committed held-out set meet the targets.

``fixtures/heldout/cervical/`` holds 40 synthetic cervical obliques generated with seed 901,
which no training run used (training: seeds 100-103, evaluation set: 900): 20 standard and 20
``hard`` (MONOCHROME1 and/or ±8…15° rotation and/or doubled noise), half of each abnormal,
at most 512 pixels per side, JPEG-LS lossless (see its README). The full pipeline runs as the
node runs it (ROI detection → crop → HE → flip → STN → ResNet50) with the header side given.

Targets (docs/models/cervical.md): AUC ≥ 0.95 on standard images; on the hard variants an error
(1 − AUC) at most twice the standard target's, i.e. AUC ≥ 0.90; every image analysed; the ROI
detector finds the cervical spine (IoU ≥ 0.5) and tells the side of every view.

The shipped classifier (1.0.0) does NOT meet the AUC targets: it is close to chance (AUC 0.62 /
0.59 on this set, 0.545 / 0.577 on the 300-image evaluation set; docs/models/cervical.md). Those
two tests are strict xfails, so the day a retrained model meets them the gate turns red until
the xfail is removed and the card updated. The detector, the pipeline and the manifest are
checked for real.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cdss.analysis.cervical import MANIFEST, SHIPPED_WEIGHTS
from cdss.train.cervical_eval import TARGETS, evaluate_cervical

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "cervical"

pytestmark = pytest.mark.slow


def test_shipped_weights_match_their_manifest() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["file"] == SHIPPED_WEIGHTS.name
    assert manifest["sha256"] == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert 0.0 < manifest["operating_point"] < 1.0


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return evaluate_cervical(HELDOUT, weights=None, out=tmp_path_factory.mktemp("gate"), device="cpu")


def test_every_image_is_analysed(metrics: dict) -> None:
    assert metrics["images"] == 40
    assert metrics["groups"]["all"]["failed"] == 0
    std = metrics["groups"]["standard"]["overall"]
    assert std["n"] == 20 and std["positives"] == 10
    # every probability is a number in [0, 1] and both labels occur (the operating point is inside)
    assert 0.0 < std["sensitivity"] < 1.0 or 0.0 < std["specificity"] < 1.0, std


_NOT_MET = pytest.mark.xfail(
    strict=True,
    reason="shipped cervical classifier 1.0.0 is near chance (AUC ~0.55-0.62); see docs/models/cervical.md",
)


@_NOT_MET
def test_standard_images_meet_the_auc_target(metrics: dict) -> None:
    std = metrics["groups"]["standard"]["overall"]
    assert std["n"] == 20 and std["positives"] == 10
    assert std["auc"] >= TARGETS["auc_standard"], std


@_NOT_MET
def test_hard_variants_within_a_factor_of_two(metrics: dict) -> None:
    hard = metrics["groups"]["hard"]["overall"]
    assert hard["n"] == 20
    assert hard["auc"] >= TARGETS["auc_hard"], hard


def test_roi_detector_finds_the_spine_and_the_side(metrics: dict) -> None:
    roi = metrics["roi"]
    assert roi["iou_p05"] >= 0.5, roi
    assert roi["side_accuracy"] == 1.0, roi
