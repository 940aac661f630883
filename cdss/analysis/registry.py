"""One place that owns the loaded analysis models of a worker process.

>>> reg = ModelRegistry(settings.models)            # nothing loaded yet
>>> reg.warm_up([Analysis.LUMBAR_LATERAL])          # load once (CUDA when present) and run a dummy pass
>>> result = reg.analyse(Analysis.LUMBAR_LATERAL, ds)
>>> reg.model_info(Analysis.LUMBAR_LATERAL)

Models load lazily on first use, exactly once per process even when several worker threads ask
at the same time (one lock per model). Lateral and AP lumbar use the lumbar segmentation model
(``models.lumbar_weights`` and ``models.lumbar_ap_weights``; when both resolve to the same file
one model is shared). Cervical oblique views are delegated to
:class:`cdss.analysis.cervical.CervicalAnalyzer`, imported only when first needed.

The view classifier used by routing (:class:`cdss.analysis.view.classifier.ViewClassifier`)
loads the same way, once per process and weights file: ``reg.view_classifier(weights)``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from cdss.analysis._ultralytics import configure as configure_ultralytics
from cdss.analysis.types import CervicalResult, Laterality, LumbarResult, LumbarView, ModelInfo
from cdss.analysis.view.classifier import ViewClassifier
from cdss.config import Analysis, ModelSettings

__all__ = ["ModelRegistry", "NotAnalysableError"]


class NotAnalysableError(ValueError):
    """The requested analysis does not exist (e.g. ``NOT_APPLICABLE``)."""


class ModelRegistry:
    """Lazily loaded, thread-safe analysis models for one process.

    Parameters
    ----------
    settings
        The ``[models]`` settings (weights paths, device, threshold, CPU threads).
    """

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        configure_ultralytics(settings.ultralytics_dir)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ loading
    def _key(self, analysis: Analysis) -> str:
        if analysis is Analysis.LUMBAR_LATERAL:
            return f"lumbar:{self.settings.lumbar_weights or 'shipped'}"
        if analysis is Analysis.LUMBAR_AP:
            weights = self.settings.lumbar_ap_weights or self.settings.lumbar_weights
            return f"lumbar:{weights or 'shipped'}"
        if analysis is Analysis.CERVICAL_OBLIQUE:
            return f"cervical:{self.settings.cervical_weights or 'shipped'}"
        raise NotAnalysableError(f"no model for analysis {analysis.value!r}")

    def _load(self, analysis: Analysis) -> Any:
        if analysis in (Analysis.LUMBAR_LATERAL, Analysis.LUMBAR_AP):
            from cdss.analysis.lumbar import LumbarAnalyzer

            weights: Path | None = self.settings.lumbar_weights
            if analysis is Analysis.LUMBAR_AP and self.settings.lumbar_ap_weights is not None:
                weights = self.settings.lumbar_ap_weights
            model: Any = LumbarAnalyzer.load(
                weights, self.settings.device, threshold_percent=self.settings.listhesis_threshold_percent
            )
        else:
            from cdss.analysis.cervical import CervicalAnalyzer

            model = CervicalAnalyzer.load(
                self.settings.cervical_weights,
                self.settings.device,
                operating_point=self.settings.cervical_operating_point,
            )
        if self.settings.torch_threads > 0 and hasattr(model, "torch_threads"):
            # Ultralytics' select_device resets torch's thread count: the analyzer re-applies ours.
            model.torch_threads = self.settings.torch_threads
        return model

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
    def analyse(
        self, analysis: Analysis, ds: Dataset, laterality: Laterality | None = None
    ) -> LumbarResult | CervicalResult:
        """Run ``analysis`` on ``ds``.

        Parameters
        ----------
        analysis
            ``LUMBAR_LATERAL``, ``LUMBAR_AP`` or ``CERVICAL_OBLIQUE``.
        ds
            The image's dataset (pixel data loaded).
        laterality
            Cervical only: the oblique's side, ``None`` to infer it.
        """
        model = self.get(analysis)
        if analysis is Analysis.LUMBAR_LATERAL:
            return model.analyse(ds, LumbarView.LATERAL)
        if analysis is Analysis.LUMBAR_AP:
            return model.analyse(ds, LumbarView.AP)
        return model.analyse(ds, laterality)

    def analyse_batch(
        self, analysis: Analysis, items: list[tuple[Dataset, Laterality | None]]
    ) -> list[LumbarResult | CervicalResult]:
        """Run ``analysis`` on several images with batched forward passes (the job queue's batches).

        Parameters
        ----------
        analysis
            ``LUMBAR_LATERAL``, ``LUMBAR_AP`` or ``CERVICAL_OBLIQUE`` (one analysis per call).
        items
            ``(dataset, laterality)`` pairs; laterality is used for cervical views only.

        Returns
        -------
        list
            One result per item, in order. Raises when any image cannot be analysed; the
            caller then analyses them one by one to find which.
        """
        model = self.get(analysis)
        if analysis is Analysis.LUMBAR_LATERAL:
            return list(model.analyse_batch([(ds, LumbarView.LATERAL) for ds, _ in items]))
        if analysis is Analysis.LUMBAR_AP:
            return list(model.analyse_batch([(ds, LumbarView.AP) for ds, _ in items]))
        return list(model.analyse_batch(list(items)))

    def model_info(self, analysis: Analysis) -> ModelInfo:
        """Identity of the model that serves ``analysis`` (loads it if needed)."""
        return self.get(analysis).info
