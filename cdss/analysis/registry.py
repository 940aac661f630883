"""One place that owns the loaded analysis models of a worker process.

>>> reg = ModelRegistry(settings.models)            # nothing loaded yet
>>> reg.warm_up([Analysis.LUMBAR_LATERAL])          # load once (CUDA when present) and run a dummy pass
>>> result = reg.analyse(Analysis.LUMBAR_LATERAL, ds)
>>> reg.model_info(Analysis.LUMBAR_LATERAL)

Models load lazily on first use, exactly once per process even when several worker threads ask
at the same time (one lock per model). Lateral and AP lumbar use the lumbar segmentation model
(``models.lumbar_weights`` and ``models.lumbar_ap_weights``; when both resolve to the same file
one model is shared). Cervical oblique views are delegated to
:class:`cdss.analysis.cervical.CervicalAnalyzer`.

Every analysis is one line of :data:`ANALYSES`: how to name its model (the cache key: two
analyses with the same key share one loaded model), how to load it, and how to run it on one
image and on a batch. A new analysis adds its package under ``cdss/analysis/`` and one line
here.

The view classifier used by routing (:class:`cdss.analysis.view.classifier.ViewClassifier`)
loads the same way, once per process and weights file: ``reg.view_classifier(weights)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from cdss.analysis._ultralytics import configure as configure_ultralytics
from cdss.analysis.cervical import CervicalAnalyzer
from cdss.analysis.lumbar import LumbarAnalyzer
from cdss.analysis.lumbar.quality import GradeMargin
from cdss.analysis.types import CervicalResult, Laterality, LumbarResult, LumbarView, ModelInfo
from cdss.analysis.view.classifier import ViewClassifier
from cdss.config import Analysis, ModelSettings

__all__ = ["ANALYSES", "AnalysisSpec", "ModelRegistry", "NotAnalysableError"]

Result = LumbarResult | CervicalResult
Item = tuple[Dataset, Laterality | None]


class NotAnalysableError(ValueError):
    """The requested analysis does not exist (e.g. ``NOT_APPLICABLE``)."""


@dataclass(frozen=True)
class AnalysisSpec:
    """How the registry serves one analysis.

    Attributes
    ----------
    key
        Settings → the model's cache key (same key = one shared model).
    load
        Settings → the loaded analyzer (CUDA when present; ``settings.device``).
    batch
        ``(analyzer, [(dataset, laterality), ...])`` → one result per item, in order.
    """

    key: Callable[[ModelSettings], str]
    load: Callable[[ModelSettings], Any]
    batch: Callable[[Any, list[Item]], list[Result]]


def _lumbar_weights(settings: ModelSettings, ap: bool) -> Path | None:
    if ap and settings.lumbar_ap_weights is not None:
        return settings.lumbar_ap_weights
    return settings.lumbar_weights


def _lumbar(view: LumbarView) -> AnalysisSpec:
    ap = view is LumbarView.AP
    return AnalysisSpec(
        key=lambda s: f"lumbar:{_lumbar_weights(s, ap) or 'shipped'}",
        load=lambda s: LumbarAnalyzer.load(
            _lumbar_weights(s, ap),
            s.device,
            threshold_percent=s.listhesis_threshold_percent,
            grade_margin=GradeMargin(s.grade_margin_pp, s.grade_margin_fraction),
        ),
        batch=lambda model, items: list(model.analyse_batch([(ds, view) for ds, _ in items])),
    )


#: One line per analysis.
ANALYSES: dict[Analysis, AnalysisSpec] = {
    Analysis.LUMBAR_LATERAL: _lumbar(LumbarView.LATERAL),
    Analysis.LUMBAR_AP: _lumbar(LumbarView.AP),
    Analysis.CERVICAL_OBLIQUE: AnalysisSpec(
        key=lambda s: f"cervical:{s.cervical_weights or 'shipped'}",
        load=lambda s: CervicalAnalyzer.load(
            s.cervical_weights, s.device, operating_point=s.cervical_operating_point
        ),
        batch=lambda model, items: list(model.analyse_batch(list(items))),
    ),
}


def _spec(analysis: Analysis) -> AnalysisSpec:
    spec = ANALYSES.get(analysis)
    if spec is None:
        raise NotAnalysableError(f"no model for analysis {analysis.value!r}")
    return spec


class ModelRegistry:
    """Lazily loaded, thread-safe analysis models for one process.

    Parameters
    ----------
    settings
        The ``[models]`` settings (weights paths, device, threshold, CPU threads).
    workers
        Analysis threads of this process that share the cores (``jobs.workers``): with
        ``models.torch_threads = 0`` each inference uses ``cpu_count // workers`` threads.
    """

    def __init__(self, settings: ModelSettings, workers: int = 1) -> None:
        self.settings = settings
        self.workers = max(1, int(workers))
        configure_ultralytics(settings.ultralytics_dir)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ loading
    def _key(self, analysis: Analysis) -> str:
        return _spec(analysis).key(self.settings)

    def _load(self, analysis: Analysis) -> Any:
        model = _spec(analysis).load(self.settings)
        if hasattr(model, "torch_threads"):
            # Ultralytics' select_device resets torch's thread count: the analyzer re-applies ours.
            model.torch_threads = self.torch_threads()
        return model

    def torch_threads(self) -> int:
        """CPU threads per inference: ``models.torch_threads``, or the cores shared among workers."""
        if self.settings.torch_threads > 0:
            return int(self.settings.torch_threads)
        return max(1, (os.cpu_count() or 1) // self.workers)

    def get(self, analysis: Analysis) -> Any:
        """The loaded analyzer for ``analysis`` (loads it on first call)."""
        key = self._key(analysis)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            model = self._models.get(key)
            if model is None:
                model = self._load(analysis)
                self._models[key] = model
        return model

    def view_classifier(self, weights: Path | None = None) -> ViewClassifier:
        """The loaded view classifier for routing (loads it on first call; CUDA when present).

        Parameters
        ----------
        weights
            ``route.view_weights``; ``None`` = the shipped model.
        """
        key = f"view:{weights or 'shipped'}"
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            model = self._models.get(key)
            if model is None:
                model = ViewClassifier.load(weights, self.settings.device)
                model.warm_up()
                self._models[key] = model
        return model

    def warm_up(self, analyses: list[Analysis] | tuple[Analysis, ...]) -> None:
        """Load the models of ``analyses`` now and run one dummy inference each."""
        for analysis in analyses:
            if analysis is Analysis.NOT_APPLICABLE:
                continue
            model = self.get(analysis)
            warm = getattr(model, "warm_up", None)
            if callable(warm):
                warm()

    def loaded(self) -> list[str]:
        """Keys of the models loaded so far (for status pages and tests)."""
        return sorted(self._models)

    # ------------------------------------------------------------------ use
    def analyse(self, analysis: Analysis, ds: Dataset, laterality: Laterality | None = None) -> Result:
        """Run ``analysis`` on ``ds``.

        Parameters
        ----------
        analysis
            An analysis of :data:`ANALYSES` (``LUMBAR_LATERAL``, ``LUMBAR_AP``, ``CERVICAL_OBLIQUE``).
        ds
            The image's dataset (pixel data loaded).
        laterality
            Cervical only: the oblique's side, ``None`` to infer it.
        """
        return self.analyse_batch(analysis, [(ds, laterality)])[0]

    def analyse_batch(self, analysis: Analysis, items: list[Item]) -> list[Result]:
        """Run ``analysis`` on several images with batched forward passes (the job queue's batches).

        Parameters
        ----------
        analysis
            An analysis of :data:`ANALYSES` (one analysis per call).
        items
            ``(dataset, laterality)`` pairs; laterality is used for cervical views only.

        Returns
        -------
        list
            One result per item, in order. Raises when any image cannot be analysed; the
            caller then analyses them one by one to find which.
        """
        return _spec(analysis).batch(self.get(analysis), list(items))

    def model_info(self, analysis: Analysis) -> ModelInfo:
        """Identity of the model that serves ``analysis`` (loads it if needed)."""
        return self.get(analysis).info
