"""ModelRegistry: lazy, load-once, thread-safe; lumbar served by the shipped weights."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pydicom
import pytest
import torch

from cdss.analysis.lumbar.quality import GradeMargin
from cdss.analysis.registry import ModelRegistry, NotAnalysableError
from cdss.analysis.types import LevelStatus, LumbarResult, LumbarView
from cdss.config import Analysis, ModelSettings

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "lumbar"


def test_registry_loads_once_and_analyses() -> None:
    reg = ModelRegistry(ModelSettings(device="cpu", torch_threads=1))
    assert reg.loaded() == []
    models = []

    def grab() -> None:
        models.append(reg.get(Analysis.LUMBAR_LATERAL))

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in models}) == 1  # one instance for all threads
    assert reg.get(Analysis.LUMBAR_AP) is models[0]  # AP shares the model unless configured otherwise
    assert reg.loaded() == ["lumbar:shipped"]

    ds = pydicom.dcmread(sorted(HELDOUT.glob("*_standard.dcm"))[0])
    result = reg.analyse(Analysis.LUMBAR_LATERAL, ds)
    assert isinstance(result, LumbarResult) and result.view is LumbarView.LATERAL
    assert result.model.weights_sha256 == reg.model_info(Analysis.LUMBAR_LATERAL).weights_sha256
    assert result.listhesis_threshold_percent == 5.0
    assert len(result.levels) == 5
    measured = [lv for lv in result.levels if lv.status is LevelStatus.MEASURED]
    assert len(measured) >= 4  # 3.0.0 abstains on L5-S1 of this image (confidence 0.34)
    assert all(lv.reason for lv in result.levels if lv.status is not LevelStatus.MEASURED)
    ap = reg.analyse(Analysis.LUMBAR_AP, ds)
    assert ap.view is LumbarView.AP


def test_registry_threshold_and_grade_margin_come_from_settings() -> None:
    reg = ModelRegistry(
        ModelSettings(
            device="cpu", listhesis_threshold_percent=12.5, grade_margin_pp=0.5, grade_margin_fraction=0.1
        )
    )
    reg.warm_up([Analysis.LUMBAR_LATERAL, Analysis.NOT_APPLICABLE])
    assert reg.get(Analysis.LUMBAR_LATERAL).threshold_percent == 12.5
    assert reg.get(Analysis.LUMBAR_LATERAL).grade_margin == GradeMargin(0.5, 0.1)
    # the documented defaults (docs/models/lumbar.md, "Grade boundary")
    assert (ModelSettings().grade_margin_pp, ModelSettings().grade_margin_fraction) == (1.5, 0.08)


def test_not_applicable_has_no_model() -> None:
    reg = ModelRegistry(ModelSettings(device="cpu"))
    with pytest.raises(NotAnalysableError):
        reg.get(Analysis.NOT_APPLICABLE)


def test_inference_threads_share_the_cores_among_workers() -> None:
    """models.torch_threads = 0: the cores divided among jobs.workers (Ultralytics alone would
    leave one thread on two cores); a set value wins."""
    cores = os.cpu_count() or 1
    assert ModelRegistry(ModelSettings(device="cpu")).torch_threads() == cores
    assert ModelRegistry(ModelSettings(device="cpu"), workers=2).torch_threads() == max(1, cores // 2)
    assert ModelRegistry(ModelSettings(device="cpu"), workers=64).torch_threads() == 1
    assert ModelRegistry(ModelSettings(device="cpu", torch_threads=3), workers=2).torch_threads() == 3
    reg = ModelRegistry(ModelSettings(device="cpu"), workers=1)
    reg.warm_up([Analysis.LUMBAR_LATERAL])
    assert reg.get(Analysis.LUMBAR_LATERAL).torch_threads == cores
    assert torch.get_num_threads() == cores  # re-applied after Ultralytics' device selection
