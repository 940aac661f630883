"""ProcessRegistry: the analysis models in worker processes (``models.processes``).

Real spawned processes with the shipped model: the result equals the in-process one, a worker
killed with SIGKILL costs one transient error and the next call runs in fresh processes, the
analysis' own errors come back as themselves, and closing ends every worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pydicom
import pytest

from cdss.analysis.pixels import PixelDataError
from cdss.analysis.pool import AnalysisProcessLost, ProcessRegistry, make_registry
from cdss.analysis.registry import ModelRegistry
from cdss.analysis.types import LumbarResult
from cdss.config import Analysis, ModelSettings
from tests.node_process import require_models

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "lumbar"
SETTINGS = ModelSettings(device="cpu", torch_threads=1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _levels(result: LumbarResult) -> list[tuple[str, str, float | None, str]]:
    return [
        (f"{lv.upper.value}-{lv.lower.value}", lv.status.value, lv.slip_percent, lv.grade.value)
        for lv in result.levels
    ]


def test_settings_choose_the_registry() -> None:
    assert isinstance(make_registry(ModelSettings(device="cpu")), ModelRegistry)
    pool = make_registry(ModelSettings(device="cpu", processes=2), workers=3)
    assert isinstance(pool, ProcessRegistry) and pool.processes == 2
    pool.close()
    with pytest.raises(ValueError, match=r"models\.processes"):
        ProcessRegistry(SETTINGS, processes=0)


@pytest.mark.slow
def test_workers_analyse_like_the_node_and_survive_a_killed_worker() -> None:
    require_models("lumbar")
    ds = pydicom.dcmread(sorted(HELDOUT.glob("*_standard.dcm"))[0])
    local = ModelRegistry(SETTINGS).analyse(Analysis.LUMBAR_LATERAL, ds)

    pool = ProcessRegistry(SETTINGS, processes=2)
    try:
        pool.warm_up([Analysis.LUMBAR_LATERAL])
        pids = pool.pids
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert all(_alive(p) for p in pids)
        assert pool.loaded() == ["process:lumbar_lateral"]

        remote = pool.analyse(Analysis.LUMBAR_LATERAL, ds)
        assert isinstance(remote, LumbarResult)
        assert _levels(remote) == _levels(local)  # the same model, the same numbers
        assert [v.label for v in remote.vertebrae] == [v.label for v in local.vertebrae]
        assert all((a.mask == b.mask).all() for a, b in zip(remote.vertebrae, local.vertebrae, strict=True))
        assert pool.model_info(Analysis.LUMBAR_LATERAL).weights_sha256 == local.model.weights_sha256

        # The analysis' own errors come back as themselves (the pipeline tells permanent ones apart).
        no_pixels = pydicom.dcmread(sorted(HELDOUT.glob("*_standard.dcm"))[0], stop_before_pixels=True)
        with pytest.raises(PixelDataError):
            pool.analyse(Analysis.LUMBAR_LATERAL, no_pixels)

        os.kill(pids[0], signal.SIGKILL)
        assert _wait_gone([pids[0]])
        with pytest.raises(AnalysisProcessLost, match="retried"):
            pool.analyse(Analysis.LUMBAR_LATERAL, ds)
        again = pool.analyse(Analysis.LUMBAR_LATERAL, ds)  # fresh processes
        assert _levels(again) == _levels(local)
        assert _wait_gone(pids)  # the survivor of the broken set was stopped too
    finally:
        pool.close()


@pytest.mark.slow
def test_close_ends_every_worker() -> None:
    require_models("lumbar")
    pool = ProcessRegistry(SETTINGS, processes=2)
    pool.warm_up([Analysis.LUMBAR_LATERAL])
    pids = pool.pids
    pool.close()
    assert _wait_gone(pids, timeout=10)
    with pytest.raises(RuntimeError, match="closed"):
        pool.analyse(Analysis.LUMBAR_LATERAL, pydicom.dcmread(sorted(HELDOUT.glob("*_standard.dcm"))[0]))
