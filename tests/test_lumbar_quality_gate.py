"""Quality gate: the SHIPPED lumbar weights on the committed held-out set.

``fixtures/heldout/lumbar/`` holds 20 synthetic lateral lumbar radiographs (5 per variant:
standard, MONOCHROME1, rotated ±8…15°, doubled noise) generated with seed 9000, which the
training data never used (see its README).

Two kinds of assertions:

* **no regression** — the figures measured for the shipped model v2.0.0 on this set (see
  docs/models/lumbar.md: slip MAE 1.37 / 1.29 / 1.17 / 0.94 pp, grade accuracy 96 / 100 / 100 /
  100 %, nothing missing) with a margin; a worse model or a broken pipeline fails here;
* **project targets** — standard images: slip MAE ≤ 2.0 pp, grade accuracy ≥ 95 %; hard
  variants within a factor of two (≤ 4.0 pp, ≥ 90 %). v2.0.0 meets them (v1.0.0 did not: 2.31 pp /
  88 % on the standard images here).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cdss.analysis.lumbar.analyzer import MANIFEST, SHIPPED_WEIGHTS
from cdss.train.evaluate import evaluate_lumbar

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "lumbar"
HARD = ["monochrome1", "rotated", "noisy"]
#: Measured for v2.0.0 on this set (slip MAE pp, grade accuracy, missing rate) + margins.
FLOORS = {
    "standard": {"slip_mae": 1.9, "grade_accuracy": 0.92, "missing_rate": 0.05},
    "monochrome1": {"slip_mae": 1.8, "grade_accuracy": 0.92, "missing_rate": 0.05},
    "rotated": {"slip_mae": 1.7, "grade_accuracy": 0.92, "missing_rate": 0.05},
    "noisy": {"slip_mae": 1.5, "grade_accuracy": 0.92, "missing_rate": 0.05},
}


def test_shipped_weights_match_their_manifest() -> None:
    manifest = json.loads(MANIFEST.read_text())
    digest = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    assert manifest["file"] == SHIPPED_WEIGHTS.name
    assert manifest["classes"] == ["L1", "L2", "L3", "L4", "L5", "S1"]


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gate")
    return evaluate_lumbar(HELDOUT, weights=None, out=out, device="cpu", with_map=False, with_plots=False)


@pytest.mark.parametrize("variant", ["standard", *HARD])
def test_no_regression(metrics: dict, variant: str) -> None:
    m = metrics["variants"][variant]
    floor = FLOORS[variant]
    assert m["images"] == 5
    assert m["slip_mae"] <= floor["slip_mae"], m
    assert m["grade_accuracy"] >= floor["grade_accuracy"], m
    assert m["missing_rate"] <= floor["missing_rate"], m


def test_anterior_side_is_right_on_every_image(metrics: dict) -> None:
    assert metrics["variants"]["all"]["anterior_accuracy"] == 1.0


def test_standard_images_meet_the_targets(metrics: dict) -> None:
    std = metrics["variants"]["standard"]
    assert std["slip_mae"] <= 2.0 and std["grade_accuracy"] >= 0.95


def test_hard_variants_within_a_factor_of_two(metrics: dict) -> None:
    for variant in HARD:
        m = metrics["variants"][variant]
        assert m["slip_mae"] <= 4.0 and m["grade_accuracy"] >= 0.90, (variant, m)
