"""One image batch from pixels to written result objects: analyse, then encode each image.

The step of the job pipeline that needs no database, so that it runs the same in a job thread
(``models.processes = 0``) and in an analysis worker process (:mod:`cdss.jobs.processes`):

>>> produced = produce(registry, Analysis.LUMBAR_LATERAL, [(ds, None)], request)

One batched model call per call when the registry offers ``analyse_batch`` and there is more
than one image; a failing batch is analysed image by image, so that one bad image fails alone.
Each image's analysis or encoding error is returned in its place, never raised: the caller
decides which errors are permanent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from pydicom.dataset import Dataset

from cdss.analysis.types import CervicalResult, Laterality, LumbarResult
from cdss.config import Analysis, ResultSettings, SegProfile
from cdss.encode import WrittenObject, encode_results
from cdss.logs import get_logger

__all__ = ["Analyser", "EncodeRequest", "Item", "Produced", "Result", "produce"]

log = get_logger(__name__)

Result = LumbarResult | CervicalResult
Item = tuple[Dataset, Laterality | None]


class Analyser(Protocol):
    """What :func:`produce` needs from :class:`cdss.analysis.registry.ModelRegistry`.

    A registry may also offer ``analyse_batch(analysis, [(ds, laterality), ...]) -> [result, ...]``
    (one batched model call); without it a batch is analysed image by image.
    """

    def analyse(self, analysis: Analysis, ds: Dataset, laterality: Laterality | None = None) -> Result: ...


@dataclass(frozen=True)
class EncodeRequest:
    """How the node wants an image's results encoded (the arguments of ``encode_results``)."""

    settings: ResultSettings
    include_sc: bool
    seg_profiles: tuple[SegProfile, ...]


@dataclass(frozen=True)
class Produced:
    """One image analysed and its results encoded and written.

    Attributes
    ----------
    analysis_s, encode_s
        Seconds of analysis (a batch's time shared equally) and of encoding plus writing.
    """

    result: Result
    objects: list[WrittenObject]
    analysis_s: float
    encode_s: float


def _analyse(
    registry: Analyser, analysis: Analysis, items: list[Item]
) -> tuple[list[Result | BaseException], list[float]]:
    """Per item its result (or error) and seconds of analysis."""
    batch = getattr(registry, "analyse_batch", None)
    if len(items) > 1 and callable(batch):
        started = time.monotonic()
        try:
            results = list(batch(analysis, items))
            if len(results) != len(items):
                raise RuntimeError(f"analyse_batch returned {len(results)} results for {len(items)} images")
        except Exception as exc:
            # One image can break the whole batch (undecodable pixels, no ROI found).
            log.warning(
                "batched analysis failed; analysing image by image",
                analysis=analysis.value,
                images=len(items),
                error_type=type(exc).__name__,
            )
        else:
            share = (time.monotonic() - started) / len(items)
            return results, [share] * len(items)
    out: list[Result | BaseException] = []
    seconds: list[float] = []
    for ds, laterality in items:
        started = time.monotonic()
        try:
            out.append(registry.analyse(analysis, ds, laterality=laterality))
        except Exception as exc:
            out.append(exc)
        seconds.append(time.monotonic() - started)
    return out, seconds


def produce(
    registry: Analyser, analysis: Analysis, items: list[Item], request: EncodeRequest
) -> list[Produced | BaseException]:
    """Analyse ``items`` and encode each image's results (see the module docstring).

    Parameters
    ----------
    registry
        The models of this process (:class:`~cdss.analysis.registry.ModelRegistry`).
    analysis
        One analysis for all items.
    items
        ``(dataset, laterality)`` pairs; each dataset is also the source its results reference.
    request
        Result settings, Secondary Capture, SEG profiles.

    Returns
    -------
    list
        One entry per item, in order: :class:`Produced`, or the exception of its analysis or
        encoding.
    """
    results, seconds = _analyse(registry, analysis, items)
    out: list[Produced | BaseException] = []
    for (ds, _), result, analysis_s in zip(items, results, seconds, strict=True):
        if isinstance(result, BaseException):
            out.append(result)
            continue
        started = time.monotonic()
        try:
            objects = encode_results(
                ds, result, request.settings, include_sc=request.include_sc, seg_profiles=request.seg_profiles
            )
            written = [obj.written() for obj in objects]
        except Exception as exc:
            out.append(exc)
            continue
        out.append(Produced(result, written, analysis_s, time.monotonic() - started))
    return out
