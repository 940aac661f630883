"""Smoke test of ``cdss train cervical`` / ``cdss evaluate cervical`` on a handful of tiny images.

Trains every stage for one epoch on 12 small synthetic obliques (64-pixel classifier input),
exports the bundle, loads it with :class:`CervicalAnalyzer` and evaluates it. It checks that
the pipeline runs end to end and produces consistent artefacts, not model quality (that is the
quality gate in ``test_cervical_quality.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from cdss.analysis.cervical import CervicalAnalyzer
from cdss.analysis.cervical.bundle import file_sha256, load_bundle
from cdss.analysis.types import Laterality, Normality
from cdss.cli import app
from cdss.synth.dataset import write_dataset
from cdss.synth.generator import Kind

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cervical-data")
    write_dataset(out, Kind.CERVICAL_OBLIQUE, 12, seed=4242, max_side=320)
    return out


def test_train_export_load_and_evaluate(tiny_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    args = [
        "train", "cervical", "--data", str(tiny_data), "--out", str(run), "--device", "cpu",
        "--epochs", "1", "--imgsz", "64", "--batch", "4", "--stn-epochs", "1",
        "--roi-epochs", "1", "--roi-imgsz", "64", "--val-fraction", "0.25",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bundle = run / "cdss-cervical.pt"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["sha256"] == file_sha256(bundle)
    assert 0.0 < manifest["operating_point"] < 1.0
    blob = load_bundle(bundle)
    assert blob["roi_detector"] and blob["stn"] is not None
    assert blob["meta"]["imgsz"] == 64

    # resume after completion is a no-op that keeps the checkpoints usable
    again = runner.invoke(app, [*args, "--resume", "--stage", "classifier"])
    assert again.exit_code == 0, again.output

    analyzer = CervicalAnalyzer.load(bundle, "cpu")
    dcm = sorted(tiny_data.glob("*.dcm"))[0]
    truth = json.loads(dcm.with_suffix(".json").read_text())
    ds = pydicom.dcmread(dcm)
    gt_roi = tuple(truth["cervical"]["roi"])
    res = analyzer.analyse_batch([(ds, Laterality(truth["cervical"]["laterality"]))], rois=[gt_roi])[0]
    assert 0.0 <= res.probability <= 1.0
    assert res.label is (Normality.ABNORMAL if res.probability >= res.operating_point else Normality.NORMAL)
    assert res.roi == pytest.approx(gt_roi)
    assert res.image_shape == (int(ds.Rows), int(ds.Columns))
    assert res.model.weights_sha256 == manifest["sha256"]
    # an operating point override wins over the stored one
    assert CervicalAnalyzer.load(bundle, "cpu", operating_point=0.9).operating_point == 0.9

    ev = runner.invoke(
        app,
        [
            "evaluate",
            "cervical",
            "--data",
            str(tiny_data),
            "--weights",
            str(bundle),
            "--out",
            str(tmp_path / "ev"),
            "--device",
            "cpu",
        ],
    )
    assert ev.exit_code == 0, ev.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["images"] == 12
    assert metrics["model"]["sha256"] == manifest["sha256"]
    assert (tmp_path / "ev" / "roc_all.png").stat().st_size > 1000
    assert "roi" in metrics and 0.0 <= (metrics["roi"]["map50"] or 0.0) <= 1.0
    n_ok = metrics["groups"]["all"].get("overall", {}).get("n", 0)
    assert n_ok + metrics["groups"]["all"]["failed"] == 12
    assert np.isfinite(metrics["operating_point"])
