"""Analysis and encoding in worker processes: they run outside the node's interpreter lock.

One Python process serves every job thread of the local backend, so the Python half of the
lumbar pipeline (mask outlines, corner fits, edge refinement) and the encoders share one GIL;
on 2 cores the node used about 1.1 of them (docs/operations.md, "Analysis throughput").
:class:`ProcessRegistry` keeps the :class:`~cdss.analysis.registry.ModelRegistry` interface
(``analyse``, ``analyse_batch``, ``model_info``, ``warm_up``, ``view_classifier``) and runs the
analyses in ``models.processes`` spawned worker processes, each with its own model copy (loaded
once, CUDA when present) and ``cores // processes`` torch threads. The job pipeline asks for
more than the analysis: :meth:`ProcessRegistry.analyse_and_encode` runs the pipeline's whole
database-free step, :func:`cdss.jobs.produce.produce` (analysis, then SEG, SR, GSPS, SC encoded
and written to Part 10 bytes), in the worker, because on the CPU the SR encoder alone took half of the node's lock time
(docs/operations.md, "Analysis throughput"). The job threads block on a future and release the
lock while they wait, so receiving, committing and sending go on.

>>> reg = ProcessRegistry(settings.models, processes=2)
>>> reg.warm_up([Analysis.LUMBAR_LATERAL])     # starts both processes and loads their models
>>> result = reg.analyse(Analysis.LUMBAR_LATERAL, ds)
>>> reg.close()

Datasets go to the workers pickled (pixel data still encoded: the worker decodes it), results
come back pickled (masks included) with their result objects as bytes
(:class:`cdss.encode.WrittenObject`). A worker ends by itself when the node that started it is
gone. A worker that dies (out of memory, a crash in native code) breaks its executor: the call raises :class:`AnalysisProcessLost`, a transient error the job
runner retries with back-off, and the next call starts a fresh set of processes. Errors raised
by the analysis itself (e.g. undecodable pixels) come back as themselves.

The view classifier that routing asks (:meth:`ProcessRegistry.view_classifier`) runs in the
worker processes too: the node sends the decoded display image and gets the prediction back.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.registry import ModelRegistry
from cdss.analysis.types import Laterality, ModelInfo
from cdss.analysis.view.labels import ViewPrediction
from cdss.config import Analysis, ModelSettings
from cdss.jobs.produce import EncodeRequest, Item, Produced, Result, produce
from cdss.logs import get_logger

__all__ = ["AnalysisProcessLost", "ProcessRegistry", "RemoteViewClassifier", "make_registry"]

log = get_logger(__name__)

#: Seconds ``warm_up`` waits for every worker process to start and load its models.
START_TIMEOUT_S = 600.0


# ---------------------------------------------------------------- inside a worker process
_worker_registry: ModelRegistry | None = None
_worker_ready: multiprocessing.synchronize.Barrier | None = None


#: Seconds between a worker's checks that the node that started it is still alive.
PARENT_CHECK_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """End this worker when its node is gone (SIGKILL, a crash): it holds nothing durable."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _init_worker(
    parent: int,
    settings: ModelSettings,
    processes: int,
    warm: tuple[Analysis, ...],
    ready: multiprocessing.synchronize.Barrier,
) -> None:
    global _worker_registry, _worker_ready
    # ``parent`` comes from the node: a node killed while this process was still importing has
    # already been replaced as our parent, and os.getppid() here would name the new one.
    threading.Thread(target=_exit_with_parent, args=(parent,), name="cdss-parent-watch", daemon=True).start()
    _worker_ready = ready
    _worker_registry = ModelRegistry(settings, workers=processes)
    _worker_registry.warm_up(list(warm))


def _registry() -> ModelRegistry:
    if _worker_registry is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("analysis worker process was started without its initializer")
    return _worker_registry


def _worker_batch(analysis: Analysis, items: list[Item]) -> list[Result]:
    return _registry().analyse_batch(analysis, items)


def _worker_produce(
    analysis: Analysis, items: list[Item], request: EncodeRequest
) -> list[Produced | BaseException]:
    return produce(_registry(), analysis, items, request)


def _worker_info(analysis: Analysis) -> ModelInfo:
    return _registry().model_info(analysis)


def _worker_view_info(weights: Path | None) -> ModelInfo:
    return _registry().view_classifier(weights).info


def _worker_classify(weights: Path | None, image: np.ndarray) -> ViewPrediction:
    return _registry().view_classifier(weights).classify(image)


def _worker_started(timeout_s: float) -> int:
    """Wait until every worker holds one of these calls: proves that all of them started."""
    if _worker_ready is not None:
        _worker_ready.wait(timeout_s)
    return os.getpid()


# ---------------------------------------------------------------- in the node
class AnalysisProcessLost(RuntimeError):
    """An analysis worker process died while it held the image (transient: the job is retried)."""


class RemoteViewClassifier:
    """The view classifier of the worker processes, for routing in the node's process.

    Same contract as :class:`~cdss.analysis.view.classifier.ViewClassifier` (``info``,
    ``classify(display_image)``); the image goes to a worker pickled.
    """

    def __init__(self, registry: ProcessRegistry, weights: Path | None) -> None:
        self._registry = registry
        self._weights = weights
        got = registry._call(_worker_view_info, weights)
        assert isinstance(got, ModelInfo)
        self.info: ModelInfo = got

    def classify(self, display_image: np.ndarray) -> ViewPrediction:
        """Classify one image (float32 in [0, 1], bone bright, ``(rows, columns)``) in a worker."""
        got = self._registry._call(_worker_classify, self._weights, display_image)
        assert isinstance(got, ViewPrediction)
        return got


class ProcessRegistry:
    """Analysis models in ``processes`` worker processes (see the module docstring).

    Parameters
    ----------
    settings
        The ``[models]`` settings, passed to every worker's registry.
    processes
        Worker processes (≥ 1). With ``models.torch_threads = 0`` each uses ``cores // processes``
        torch threads.
    """

    def __init__(self, settings: ModelSettings, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"models.processes must be ≥ 1 for a process pool, got {processes}")
        self.settings = settings
        self.processes = int(processes)
        self._ctx = multiprocessing.get_context("spawn")
        self._executor: ProcessPoolExecutor | None = None
        self._warm: tuple[Analysis, ...] = ()
        self._guard = threading.Lock()
        self._info: dict[Analysis, ModelInfo] = {}
        self._views: dict[str, RemoteViewClassifier] = {}
        self._pids: list[int] = []
        self._closed = False

    # ------------------------------------------------------------------ processes
    def _pool(self) -> ProcessPoolExecutor:
        with self._guard:
            if self._closed:
                raise RuntimeError("the analysis process pool was closed")
            if self._executor is None:
                ready = self._ctx.Barrier(self.processes)
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=self._ctx,
                    initializer=_init_worker,
                    initargs=(os.getpid(), self.settings, self.processes, self._warm, ready),
                )
            return self._executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._guard:
            if self._executor is broken:
                self._executor = None
                self._pids = []
        broken.shutdown(wait=False, cancel_futures=True)

    def _call(self, fn: object, *args: object) -> object:
        pool = self._pool()
        try:
            future: Future[object] = pool.submit(fn, *args)  # type: ignore[arg-type]
            return future.result()
        except BrokenProcessPool as exc:
            self._discard(pool)
            log.error("analysis worker process died; starting new ones", processes=self.processes)
            raise AnalysisProcessLost(
                "an analysis worker process died while analysing (out of memory? see the system log); "
                "the job is retried in a fresh process"
            ) from exc

    def start(self, timeout_s: float = START_TIMEOUT_S) -> list[int]:
        """Start every worker process now and wait until each has loaded its models.

        Returns
        -------
        list of int
            The worker processes' ids.
        """
        pool = self._pool()
        futures = [pool.submit(_worker_started, timeout_s) for _ in range(self.processes)]
        try:
            pids = sorted(int(f.result(timeout=timeout_s)) for f in futures)
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise AnalysisProcessLost(
                "an analysis worker process died while loading the models; run `cdss serve` with "
                "models.processes = 0 to see the error in this process"
            ) from exc
        self._pids = pids
        return pids

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (empty before :meth:`start` / :meth:`warm_up`)."""
        return list(self._pids)

    def close(self) -> None:
        """Stop the worker processes (waits for the images they hold)."""
        with self._guard:
            self._closed = True
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ registry interface
    def warm_up(self, analyses: list[Analysis] | tuple[Analysis, ...]) -> None:
        """Start the worker processes; each loads the models of ``analyses`` and runs a dummy pass."""
        with self._guard:
            self._warm = tuple(a for a in analyses if a is not Analysis.NOT_APPLICABLE)
        self.start()

    def loaded(self) -> list[str]:
        """The analyses the worker processes load at start, as ``process:<analysis>``."""
        return [f"process:{a.value}" for a in self._warm]

    def analyse(self, analysis: Analysis, ds: Dataset, laterality: Laterality | None = None) -> Result:
        """Run ``analysis`` on ``ds`` in a worker process (as :meth:`ModelRegistry.analyse`)."""
        return self.analyse_batch(analysis, [(ds, laterality)])[0]

    def analyse_batch(self, analysis: Analysis, items: list[Item]) -> list[Result]:
        """Run ``analysis`` on several images in one worker process (one batched model call)."""
        out = self._call(_worker_batch, analysis, list(items))
        assert isinstance(out, list)
        return out

    def analyse_and_encode(
        self, analysis: Analysis, items: list[Item], request: EncodeRequest
    ) -> list[Produced | BaseException]:
        """:func:`produce` in one worker process: results and their encoded objects, per item.

        Raises
        ------
        AnalysisProcessLost
            The worker died (every item of the call is to be retried).
        """
        out = self._call(_worker_produce, analysis, list(items), request)
        assert isinstance(out, list) and len(out) == len(items)
        return out

    def model_info(self, analysis: Analysis) -> ModelInfo:
        """Identity of the model that serves ``analysis`` (asked once from a worker, then cached)."""
        info = self._info.get(analysis)
        if info is None:
            got = self._call(_worker_info, analysis)
            assert isinstance(got, ModelInfo)
            info = self._info.setdefault(analysis, got)
        return info

    def view_classifier(self, weights: Path | None = None) -> RemoteViewClassifier:
        """The view classifier for routing; it runs in the worker processes (loaded there once).

        Parameters
        ----------
        weights
            ``route.view_weights``; ``None`` = the shipped model.
        """
        key = str(weights or "shipped")
        view = self._views.get(key)
        if view is None:
            view = self._views.setdefault(key, RemoteViewClassifier(self, weights))
        return view


def make_registry(settings: ModelSettings, workers: int = 1) -> ModelRegistry | ProcessRegistry:
    """The registry the settings ask for: in this process (``models.processes = 0``) or a pool.

    Parameters
    ----------
    settings
        ``[models]``; ``processes`` chooses.
    workers
        Job threads that call the registry (``jobs.workers``): they share the cores of an
        in-process registry; a pool sizes its workers' threads by ``processes`` instead.
    """
    if settings.processes > 0:
        return ProcessRegistry(settings, settings.processes)
    return ModelRegistry(settings, workers=workers)
