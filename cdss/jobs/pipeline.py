"""What one analysis job does: route → pick the reference image → analyse → encode → store → deliver.

Transactions (DESIGN.md invariant 3), all fenced by the job's lease:

1. the routing decision is stored on the job (``analysis``, ``route_reason``);
2. one final transaction adds the Result rows, a Delivery per destination, the job's
   ``succeeded`` state with its findings ``summary`` and the audit event — or, for an image no
   analysis applies to, the ``not_applicable`` state and a "not applicable" audit event.

Batches: :func:`process_jobs` takes the jobs a worker claimed together (``jobs.batch_size``):
each is routed on its own, the images to analyse are analysed with one batched model call per
analysis, and each job then gets its own final transaction as above. A failing batch is
repeated image by image, so one unreadable image fails only its own job.

Idempotency: result files are written to the spool *before* the final transaction, but nothing
refers to them until it commits, and only the worker that still holds the lease can commit
(:func:`cdss.jobs.states.finish_job`). A retry after a crash therefore produces one new set of
results (new UIDs), never a second set next to the first; the dispatcher only sends committed
deliveries. Files of a discarded attempt are deleted when the lease was lost, and are
unreferenced (harmless) after a crash.

Reference image (FOR PRESENTATION / FOR PROCESSING)
--------------------------------------------------
Some detectors send each acquisition twice: a *FOR PROCESSING* (raw) and a *FOR PRESENTATION*
(processed) DX image. Viewers show the FOR PRESENTATION one, so that is the image the node
analyses and the one its results reference. Two images are the same acquisition when they are
in the same study, have the same Rows and Columns, and either one lists the other in its Source
Image Sequence, or both have the same Acquisition Number and the same acquisition date/time
(AcquisitionDateTime, else AcquisitionDate + AcquisitionTime; at least one of these must be present).

* A FOR PRESENTATION image (or one without Presentation Intent Type) is analysed as it is.
* A FOR PROCESSING image whose FOR PRESENTATION twin is already stored is *not applicable*
  ("superseded"); the twin's own job produces the results.
* A FOR PROCESSING image without a twin waits ``jobs.for_processing_wait_s`` after receipt
  (the twin usually arrives in the same association); if none came, the FOR PROCESSING image is
  analysed and referenced itself.
* A FOR PRESENTATION twin that arrives *after* its FOR PROCESSING image was analysed is analysed
  too, so that viewers get results on the image they display; its summary names the earlier job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from cdss.analysis.cervical.analyzer import CervicalAnalysisError
from cdss.analysis.pixels import PixelDataError
from cdss.analysis.registry import NotAnalysableError
from cdss.analysis.view.weights import ViewWeightsError
from cdss.audit import Action, Outcome
from cdss.config import Analysis, Settings
from cdss.db import Database, Instance, Job, JobState, Series, utcnow
from cdss.encode import EncodeError
from cdss.jobs.produce import Analyser, EncodeRequest, Produced, produce
from cdss.jobs.results import StoredResult, record_results
from cdss.jobs.states import ClaimedJob, LeaseLost, audit_job, defer_job, finish_job, guard_lease
from cdss.jobs.summary import JobSummary, ResultRef
from cdss.logs import get_logger
from cdss.metrics import ANALYSIS_SECONDS, BATCH_SIZE, JOBS_FINISHED
from cdss.route import RouteDecision, ViewClassifying, route
from cdss.route.destinations import seg_profiles_wanted

__all__ = [
    "Analyser",
    "PipelineContext",
    "PipelineProcessor",
    "ReferenceChoice",
    "UnanalysableImage",
    "make_processor",
    "process_job",
    "process_jobs",
    "same_acquisition",
]

log = get_logger(__name__)

FOR_PRESENTATION = "FOR PRESENTATION"
FOR_PROCESSING = "FOR PROCESSING"


class UnanalysableImage(RuntimeError):
    """The image cannot be decoded, analysed or referenced; retrying will not change that.

    The job becomes dead at once (``final``), with the reason; it can still be re-run (e.g.
    after a model update).
    """

    final = True


#: Failures that retrying cannot cure: the job is dead at once (:class:`UnanalysableImage`).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    PixelDataError,
    NotAnalysableError,
    EncodeError,
    CervicalAnalysisError,
)


class SpoolLike(Protocol):
    def path(self, key: str) -> Any: ...

    def store_result(self, data: bytes) -> Any: ...

    def delete(self, key: str) -> bool: ...


@dataclass
class PipelineContext:
    """Everything a worker needs to process jobs (one per worker process; shared by its threads).

    Attributes
    ----------
    on_results
        Called with the job id after results and deliveries committed (wakes the dispatcher).
    """

    settings: Settings
    db: Database
    spool: SpoolLike
    registry: Analyser
    on_results: Callable[[int], None] | None = None
    clock: Callable[[], dt.datetime] = field(default=utcnow)


@dataclass(frozen=True)
class _Source:
    instance_id: int
    sop_instance_uid: str
    spool_key: str
    calling_ae_title: str
    received_at: dt.datetime
    study_id: int


@dataclass(frozen=True)
class ReferenceChoice:
    """Which image a job analyses and references (see the module docstring)."""

    action: str  # "analyse", "superseded", "wait"
    reason: str
    twin_job_id: int | None = None
    twin_sop_instance_uid: str | None = None


class PipelineProcessor:
    """The job processor of :class:`cdss.jobs.runner.JobRunner` and the backends.

    Calling it processes one job (:func:`process_job`); :meth:`process_many` processes a batch
    (:func:`process_jobs`), which the runner uses when ``jobs.batch_size`` > 1.
    """

    #: ``jobs.batch_size = 0`` (auto) on a GPU; the CPU analyses one image at a time.
    GPU_BATCH_SIZE = 8

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx

    @property
    def auto_batch_size(self) -> int:
        """8 when the models run on CUDA (``models.device`` auto with a GPU, or cuda[:N]), else 1."""
        device = str(self.ctx.settings.models.device).strip().lower()
        if device == "cpu":
            return 1
        return self.GPU_BATCH_SIZE if torch.cuda.is_available() else 1

    def __call__(self, job: ClaimedJob) -> None:
        process_job(job, self.ctx)

    def process_many(self, jobs: list[ClaimedJob]) -> dict[int, BaseException | None]:
        return process_jobs(jobs, self.ctx)


def make_processor(ctx: PipelineContext) -> PipelineProcessor:
    """The job processor for :class:`cdss.jobs.runner.JobRunner` / the backends."""
    return PipelineProcessor(ctx)


# ---------------------------------------------------------------------------------------- helpers
def _intent(ds: Dataset) -> str:
    return str(ds.get("PresentationIntentType", "") or "").strip().upper()


def _source_refs(ds: Dataset) -> set[str]:
    refs: set[str] = set()
    for item in ds.get("SourceImageSequence", []) or []:
        uid = item.get("ReferencedSOPInstanceUID")
        if uid:
            refs.add(str(uid))
    return refs


def _acq_time(ds: Dataset) -> str:
    value = str(ds.get("AcquisitionDateTime", "") or "").strip()
    if value:
        return value.split(".")[0]
    date = str(ds.get("AcquisitionDate", "") or "").strip()
    tm = str(ds.get("AcquisitionTime", "") or "").strip().split(".")[0]
    return f"{date}{tm}" if (date or tm) else ""


def same_acquisition(a: Dataset, b: Dataset) -> bool:
    """True when ``a`` and ``b`` are the same acquisition (rule in the module docstring)."""
    if str(a.get("StudyInstanceUID", "")) != str(b.get("StudyInstanceUID", "")):
        return False
    if (a.get("Rows"), a.get("Columns")) != (b.get("Rows"), b.get("Columns")):
        return False
    if str(b.SOPInstanceUID) in _source_refs(a) or str(a.SOPInstanceUID) in _source_refs(b):
        return True
    num_a, num_b = a.get("AcquisitionNumber"), b.get("AcquisitionNumber")
    if num_a in (None, "") or num_b in (None, "") or str(num_a) != str(num_b):
        return False
    time_a, time_b = _acq_time(a), _acq_time(b)
    return bool(time_a) and time_a == time_b


def _load_source(db: Database, instance_id: int) -> _Source:
    with db.session() as session:
        row = session.execute(
            select(
                Instance.id,
                Instance.sop_instance_uid,
                Instance.spool_key,
                Instance.calling_ae_title,
                Instance.received_at,
                Series.study_id,
            )
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.id == instance_id)
        ).first()
    if row is None:
        raise LookupError(f"instance {instance_id} of the job is not in the database")
    return _Source(row[0], row[1], row[2], row[3], row[4], row[5])


def _twins(
    ctx: PipelineContext, src: _Source, ds: Dataset, want_intent: str
) -> list[tuple[int, str, int | None]]:
    """(instance id, SOP Instance UID, job id) of stored images of the same acquisition with ``want_intent``."""
    rows = ds.get("Rows")
    cols = ds.get("Columns")
    with ctx.db.session() as session:
        candidates = session.execute(
            select(Instance.id, Instance.sop_instance_uid, Instance.spool_key, Instance.presentation_intent)
            .join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == src.study_id, Instance.id != src.instance_id)
            .where(Instance.rows == rows, Instance.columns == cols)
        ).all()
        jobs = {
            iid: jid
            for iid, jid in session.execute(
                select(Job.instance_id, Job.id)
                .where(Job.instance_id.in_([c.id for c in candidates]))
                .order_by(Job.id)
            ).all()
        }
    found = []
    for cand in candidates:
        if (cand.presentation_intent or "").strip().upper() != want_intent:
            continue
        try:
            other = dcmread(ctx.spool.path(cand.spool_key), stop_before_pixels=True)
        except Exception as exc:  # a damaged companion must not break this job
            log.warning("companion image unreadable", instance_id=cand.id, error_type=type(exc).__name__)
            continue
        if same_acquisition(ds, other):
            found.append((cand.id, cand.sop_instance_uid, jobs.get(cand.id)))
    return found


def choose_reference(ctx: PipelineContext, src: _Source, ds: Dataset) -> ReferenceChoice:
    """Apply the FOR PRESENTATION / FOR PROCESSING rule (module docstring) to this job's image."""
    intent = _intent(ds)
    if intent == FOR_PROCESSING:
        twins = _twins(ctx, src, ds, FOR_PRESENTATION)
        if twins:
            _, uid, job_id = twins[0]
            return ReferenceChoice(
                "superseded",
                f"FOR PROCESSING image superseded by the FOR PRESENTATION image {uid} of the same "
                f"acquisition (job {job_id}), which is analysed and referenced instead",
                job_id,
                uid,
            )
        waited = (ctx.clock() - src.received_at).total_seconds()
        if waited < ctx.settings.jobs.for_processing_wait_s:
            return ReferenceChoice("wait", "waiting for the FOR PRESENTATION image of the same acquisition")
        return ReferenceChoice(
            "analyse",
            f"FOR PROCESSING image analysed itself: no FOR PRESENTATION image of the same acquisition "
            f"arrived within {ctx.settings.jobs.for_processing_wait_s:g} s",
        )
    if intent == FOR_PRESENTATION:
        earlier = [t for t in _twins(ctx, src, ds, FOR_PROCESSING) if t[2] is not None]
        if earlier:
            with ctx.db.session() as session:
                state = session.execute(select(Job.state).where(Job.id == earlier[0][2])).scalar_one()
            if state is JobState.SUCCEEDED:
                return ReferenceChoice(
                    "analyse",
                    f"FOR PRESENTATION image arrived after its FOR PROCESSING twin {earlier[0][1]} was "
                    f"analysed (job {earlier[0][2]}); analysed again so results reference the displayed image",
                    earlier[0][2],
                    earlier[0][1],
                )
    return ReferenceChoice("analyse", "")


# ---------------------------------------------------------------------------------------- pipeline
def process_job(job: ClaimedJob, ctx: PipelineContext) -> None:
    """Process one claimed job to its end state (see the module docstring).

    Parameters
    ----------
    job
        The job, claimed by ``job.owner`` (its lease is kept alive by the runner's heartbeat).
    ctx
        Settings, database, spool, model registry.

    Raises
    ------
    LeaseLost
        The lease was lost; everything this attempt did was rolled back.
    Exception
        Any failure (unreadable file, analysis or encoding error, database error): the runner
        records a failed attempt (retry with back-off, then dead).
    """
    error = process_jobs([job], ctx)[job.id]
    if error is not None:
        raise error


def process_jobs(jobs: list[ClaimedJob], ctx: PipelineContext) -> dict[int, BaseException | None]:
    """Process several claimed jobs with one batched model call per analysis.

    Each job is routed and its reference image chosen on its own (finishing it at once when it
    is not applicable, superseded or has to wait); the jobs left to analyse are grouped by
    analysis and each group analysed and encoded by :func:`cdss.jobs.produce.produce` (one
    batched model call when the registry has ``analyse_batch``; a failing batch is repeated image
    by image, so that one bad image fails alone), in this thread or in the registry's worker
    processes; then each job's results are stored and committed in its own final transaction,
    exactly as for a single job.

    Returns
    -------
    dict
        Per job id: ``None`` when the job was ended (or deferred), else the exception that ended
        this attempt (:class:`LeaseLost`, :class:`UnanalysableImage`, ...), for the runner to
        record. Never raises for one job's failure.
    """
    errors: dict[int, BaseException | None] = {}
    pending: list[_Pending] = []
    for job in jobs:
        try:
            item = _route_and_choose(job, ctx)
        except Exception as exc:
            errors[job.id] = exc
            continue
        if item is None:
            errors[job.id] = None
        else:
            pending.append(item)
    outcomes = _analyse_all(pending, ctx)
    for item in pending:
        outcome = outcomes[item.job.id]
        if isinstance(outcome, BaseException):
            errors[item.job.id] = outcome
            continue
        try:
            _complete(item, outcome, ctx)
        except Exception as exc:
            errors[item.job.id] = exc
        else:
            errors[item.job.id] = None
    return errors


@dataclass
class _Pending:
    """A routed job whose image is to be analysed."""

    job: ClaimedJob
    src: _Source
    ds: Dataset
    decision: RouteDecision
    analysis: Analysis
    choice: ReferenceChoice


def _route_and_choose(job: ClaimedJob, ctx: PipelineContext) -> _Pending | None:
    """Route the job and choose its reference image; ``None`` when the job was ended or deferred."""
    settings = ctx.settings
    src = _load_source(ctx.db, job.instance_id)
    ds = dcmread(ctx.spool.path(src.spool_key))

    decision = route(ds, settings.route, src.calling_ae_title, _view_classifier(ctx))
    analysis = Analysis(decision.analysis)
    evidence = decision.evidence_or_default()
    with ctx.db.session() as session:
        j = guard_lease(session, job.id, job.owner)
        j.analysis = analysis.value
        j.route_reason = decision.reason

    if analysis is Analysis.NOT_APPLICABLE:
        _finish_not_applicable(
            ctx, job, JobSummary.not_applicable(analysis.value, decision.reason, route=evidence)
        )
        return None

    choice = choose_reference(ctx, src, ds)
    if choice.action == "wait":
        until = src.received_at + dt.timedelta(seconds=settings.jobs.for_processing_wait_s)
        if not defer_job(
            ctx.db, job.id, job.owner, max(until, ctx.clock()), f"{decision.reason}; {choice.reason}"
        ):
            raise LeaseLost(f"job {job.id}: lease lost while deferring")
        log.info("job waits for the FOR PRESENTATION image", job_id=job.id, until=until.isoformat())
        return None
    if choice.action == "superseded":
        _finish_not_applicable(
            ctx,
            job,
            JobSummary.not_applicable(
                analysis.value,
                choice.reason,
                superseded_by_job_id=choice.twin_job_id,
                superseded_by_sop_instance_uid=choice.twin_sop_instance_uid,
                route=evidence,
            ),
        )
        return None
    return _Pending(job, src, ds, decision, analysis, choice)


#: Per job: its analysis result and written result objects, or the error that ended the attempt.
_Analysed = Produced | BaseException


def _permanent(exc: BaseException) -> BaseException:
    """An analysis failure that retrying cannot cure becomes :class:`UnanalysableImage` (dead at once)."""
    if isinstance(exc, PERMANENT_ERRORS):
        err = UnanalysableImage(f"{type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
    return exc


def encode_request(settings: Settings) -> EncodeRequest:
    """How this node encodes results: its result settings, Secondary Capture and SEG profiles.

    A Secondary Capture is made whenever a target will receive one: a destination that asks for
    it (send_sc), or the calling AE when results.secondary_capture (cdss.route.destinations).
    """
    include_sc = any(d.send_sc for d in settings.destinations) or (
        settings.dispatch.return_to_calling_ae and settings.results.secondary_capture
    )
    return EncodeRequest(settings.results, include_sc, tuple(seg_profiles_wanted(settings)))


def _analyse_all(pending: list[_Pending], ctx: PipelineContext) -> dict[int, _Analysed]:
    """Analyse the pending jobs and encode their results, one :func:`produce` call per analysis.

    In the registry's worker processes when it has them (``analyse_and_encode``, see
    :mod:`cdss.jobs.processes`), else in this thread. Returns per job id what was produced, or
    the exception of its analysis or encoding (permanent ones as :class:`UnanalysableImage`).
    """
    out: dict[int, _Analysed] = {}
    groups: dict[Analysis, list[_Pending]] = {}
    for item in pending:
        groups.setdefault(item.analysis, []).append(item)
    in_workers = getattr(ctx.registry, "analyse_and_encode", None)
    request = encode_request(ctx.settings)
    for analysis, group in groups.items():
        BATCH_SIZE.labels(analysis=analysis.value).observe(len(group))
        items = [(i.ds, i.decision.laterality) for i in group]
        produced: list[Produced | BaseException]
        try:
            if callable(in_workers):
                produced = in_workers(analysis, items, request)
            else:
                produced = produce(ctx.registry, analysis, items, request)
        except Exception as exc:  # a worker process died: every job of the call is retried
            produced = [exc] * len(group)
        for item, got in zip(group, produced, strict=True):
            out[item.job.id] = _permanent(got) if isinstance(got, BaseException) else got
    return out


def _complete(item: _Pending, produced: Produced, ctx: PipelineContext) -> None:
    """Store and commit one job's produced results (its final transaction)."""
    settings = ctx.settings
    job, src, decision, analysis, choice = (
        item.job,
        item.src,
        item.decision,
        item.analysis,
        item.choice,
    )
    evidence = decision.evidence_or_default()
    result, encoded = produced.result, produced.objects
    produced_s = produced.analysis_s + produced.encode_s
    ANALYSIS_SECONDS.labels(analysis=analysis.value).observe(produced_s)
    storing_from = time.monotonic()

    stored: list[StoredResult] = []
    created_keys: list[str] = []
    for obj in encoded:
        sf = ctx.spool.store_result(obj.to_bytes())
        if sf.created:
            created_keys.append(sf.key)
        stored.append(
            StoredResult(
                kind=obj.kind.value if hasattr(obj.kind, "value") else str(obj.kind),
                sop_class_uid=obj.sop_class_uid,
                sop_instance_uid=obj.sop_instance_uid,
                series_instance_uid=obj.series_instance_uid,
                spool_key=sf.key,
                sha256=sf.sha256,
                size_bytes=sf.size,
                model_name=result.model.name,
                model_version=result.model.version,
                seg_profile=None if obj.seg_profile is None else obj.seg_profile.value,
            )
        )
    summary = JobSummary.from_result(
        result,
        analysis.value,
        src.sop_instance_uid,
        [ResultRef(o.kind, o.sop_instance_uid, o.series_instance_uid) for o in stored],
        [choice.reason] if choice.reason else [],
        decision.reason,
        route=evidence,
    )
    try:
        with ctx.db.session() as session:
            finish_job(
                session, job.id, job.owner, JobState.SUCCEEDED, summary=summary.to_json(), now=ctx.clock()
            )
            record_results(session, job.id, stored, settings, src.calling_ae_title)
            audit_job(
                session,
                job.id,
                action=Action.CREATE,
                outcome=Outcome.SUCCESS,
                description=(
                    f"{analysis.value} analysis by {result.model.name} {result.model.version}: "
                    f"{summary.findings_line()}; {len(stored)} result object(s) created "
                    f"({', '.join(o.kind for o in stored)})"
                ),
                detail={
                    "analysis": analysis.value,
                    "result_sop_instance_uids": [o.sop_instance_uid for o in stored],
                    "model": f"{result.model.name} {result.model.version}",
                    "weights_sha256": result.model.weights_sha256,
                    "has_findings": summary.has_findings,
                    "route": evidence.to_dict(),
                },
            )
    except LeaseLost:
        for key in created_keys:  # nothing refers to them: this attempt's results are discarded
            with contextlib.suppress(Exception):
                ctx.spool.delete(key)
        raise
    JOBS_FINISHED.labels(analysis=analysis.value, outcome="succeeded").inc()
    log.info(
        "job succeeded",
        job_id=job.id,
        analysis=analysis.value,
        objects=len(stored),
        seconds=round(produced_s + time.monotonic() - storing_from, 2),
    )
    if ctx.on_results is not None:
        try:
            ctx.on_results(job.id)
        except Exception as exc:  # pragma: no cover - a wake-up must never fail the job
            log.warning("could not wake the dispatcher", error=str(exc))


@runtime_checkable
class ViewClassifierSource(Protocol):
    """A registry that can lend routing its view classifier (:class:`~cdss.analysis.registry.ModelRegistry`)."""

    def view_classifier(self, weights: Path | None = None) -> ViewClassifying: ...


def _view_classifier(ctx: PipelineContext) -> ViewClassifying | None:
    """The registry's view classifier when routing may use it; ``None`` routes by tags alone."""
    route_settings = ctx.settings.route
    if not route_settings.view_classifier or not isinstance(ctx.registry, ViewClassifierSource):
        return None
    try:
        return ctx.registry.view_classifier(route_settings.view_weights)
    except ViewWeightsError as exc:  # a configuration error: route by tags, say so loudly
        log.error("view classifier unavailable, routing by tags alone", error=str(exc))
        return None


def _finish_not_applicable(ctx: PipelineContext, job: ClaimedJob, summary: JobSummary) -> None:
    reason = summary.reason or ""
    with ctx.db.session() as session:
        finish_job(
            session, job.id, job.owner, JobState.NOT_APPLICABLE, summary=summary.to_json(), now=ctx.clock()
        )
        audit_job(
            session,
            job.id,
            action=Action.EXECUTE,
            outcome=Outcome.SUCCESS,
            description=f"Analysis not applicable: {reason}",
            detail={
                "analysis": "not_applicable",
                "reason": reason,
                **({"route": summary.route.to_dict()} if summary.route is not None else {}),
            },
        )
    JOBS_FINISHED.labels(analysis=summary.analysis or "not_applicable", outcome="not_applicable").inc()
    log.info("job not applicable", job_id=job.id)
