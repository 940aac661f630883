"""Training smoke test: `cdss train lumbar` on the BUU-layout sample, then the analysis loads the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cdss.analysis.lumbar import LumbarAnalyzer
from cdss.analysis.types import LevelStatus, LumbarView, Vertebra
from cdss.cli import app

BUU = Path(__file__).resolve().parent.parent / "fixtures" / "buu-sample"


@pytest.mark.slow
def test_train_one_epoch_on_buu_layout_and_load_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "lumbar",
            "--data",
            str(BUU),
            "--format",
            "buu",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--imgsz",
            "128",
            "--batch",
            "2",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--val-fraction",
            "0.34",
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    best = out / "run" / "weights" / "best.pt"
    assert best.exists() and (out / "dataset" / "data.yaml").exists()
    assert (out / "run" / "results.csv").exists()

    analyzer = LumbarAnalyzer.load(best, "cpu")
    assert analyzer.info.weights_sha256 and analyzer.imgsz == 128
    image = np.zeros((520, 400), np.float32)
    res = analyzer.analyse(image, LumbarView.LATERAL)
    assert len(res.levels) == 5
    found = {v.label for v in res.vertebrae}
    for lv in res.levels:  # a one-epoch model finds little; nothing unfound is measured
        if lv.upper not in found or lv.lower not in found:
            assert lv.status in (LevelStatus.MISSING, LevelStatus.NOT_MEASURED) and lv.reason
    assert set(res.missing) == set(Vertebra) - found

    # resume continues from last.pt (the 1-epoch run is complete, so Ultralytics reports it finished)
    again = CliRunner().invoke(
        app, ["train", "lumbar", "--data", str(BUU), "--out", str(out), "--resume", "--device", "cpu"]
    )
    assert again.exit_code in (0, 1)
    assert "no checkpoint" not in again.output


def test_resume_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "lumbar", "--data", str(BUU), "--out", str(tmp_path), "--resume"]
    )
    assert result.exit_code != 0
    assert "no checkpoint" in repr(result.exception)


def test_unknown_weights_are_refused(tmp_path: Path) -> None:
    from cdss.analysis._ultralytics import UltralyticsSetupError

    with pytest.raises(UltralyticsSetupError, match="does not exist"):
        LumbarAnalyzer.load(tmp_path / "nope.pt", "cpu")
