"""ProcessRegistry: the analysis models in worker processes (``models.processes``).

Real spawned processes with the shipped model: the result equals the in-process one, a worker
killed with SIGKILL costs one transient error and the next call runs in fresh processes, the
analysis' own errors come back as themselves, and closing ends every worker.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import pydicom
import pytest

from cdss.analysis.pixels import PixelDataError, display_image
from cdss.analysis.registry import ModelRegistry
from cdss.analysis.types import LumbarResult
from cdss.config import Analysis, ModelSettings, ResultSettings, SegProfile
from cdss.encode import ResultKind
from cdss.jobs.processes import AnalysisProcessLost, ProcessRegistry, make_registry
from cdss.jobs.produce import EncodeRequest, Produced
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
    in_process = ModelRegistry(SETTINGS)
    local = in_process.analyse(Analysis.LUMBAR_LATERAL, ds)
    image = display_image(ds)
    local_view = in_process.view_classifier().classify(image)

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

        # Routing's view classifier runs in the workers too, with the same answer.
        view = pool.view_classifier()
        assert view is pool.view_classifier() and view.info == in_process.view_classifier().info
        remote_view = view.classify(image)
        assert remote_view.label == local_view.label
        assert remote_view.probabilities == pytest.approx(local_view.probabilities, abs=1e-5)

        # The analysis' own errors come back as themselves (the pipeline tells permanent ones apart).
        no_pixels = pydicom.dcmread(sorted(HELDOUT.glob("*_standard.dcm"))[0], stop_before_pixels=True)
        with pytest.raises(PixelDataError):
            pool.analyse(Analysis.LUMBAR_LATERAL, no_pixels)

        # What the job pipeline asks for: analysis and encoding in the worker, per image; a bad
        # image of a batch fails alone.
        request = EncodeRequest(ResultSettings(), include_sc=False, seg_profiles=(SegProfile.STANDARD,))
        good, bad = pool.analyse_and_encode(Analysis.LUMBAR_LATERAL, [(ds, None), (no_pixels, None)], request)
        assert isinstance(bad, PixelDataError)
        (alone,) = pool.analyse_and_encode(Analysis.LUMBAR_LATERAL, [(no_pixels, None)], request)
        assert isinstance(alone, PixelDataError)  # returned in its place, not raised
        assert isinstance(good, Produced) and _levels(good.result) == _levels(local)
        assert [o.kind for o in good.objects] == [ResultKind.SEG, ResultKind.SR, ResultKind.GSPS]
        for obj in good.objects:
            written = pydicom.dcmread(io.BytesIO(obj.to_bytes()))
            assert str(written.SOPInstanceUID) == obj.sop_instance_uid
            assert str(written.SOPClassUID) == obj.sop_class_uid
            assert written.StudyInstanceUID == ds.StudyInstanceUID
        assert good.analysis_s > 0 and good.encode_s > 0

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
