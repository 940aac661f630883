"""Queries behind the record endpoints: filters, pagination with totals, a study's history.

Every list is newest first (then by id, so pages are stable). Filters are exact matches unless
documented otherwise; ``finding`` is a case-insensitive substring of the job's JSON summary.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Text, and_, case, cast, exists, func, or_, select
from sqlalchemy.orm import Session

from cdss.api.schemas import (
    AuditEventOut,
    DeliveryOut,
    FindingOut,
    InstanceOut,
    JobOut,
    ResultOut,
    StudyHistory,
    StudyOut,
    StudyStatus,
    TimelineEntry,
)
from cdss.db.models import AuditEvent, Delivery, DeliveryState, Instance, Job, JobState, Result, Series, Study
from cdss.jobs.summary import JobSummary

#: A SELECT of any columns (the record queries add columns and filters step by step).
AnySelect = Select[*tuple[Any, ...]]

__all__ = [
    "RecordFilter",
    "list_deliveries",
    "list_instances",
    "list_jobs",
    "list_results",
    "list_studies",
    "study_history",
    "summary_text",
]


@dataclass
class RecordFilter:
    """Filters shared by the record lists (each list applies the ones that make sense for it)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    calling_ae: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    status: str | None = None
    analysis: str | None = None
    finding: str | None = None
    kind: str | None = None
    destination: str | None = None
    job_id: int | None = None
    study_id: int | None = None

    def participants(self) -> dict[str, str | None]:
        """Patient-identifying filters, for the audit event of the search."""
        return {
            "patient_id": self.patient_id,
            "accession_number": self.accession,
            "study_instance_uid": self.study_uid,
        }


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _time_range(stmt: AnySelect, column: Any, flt: RecordFilter) -> AnySelect:
    """``since <= column < until`` for the bounds ``flt`` sets (UTC)."""
    if flt.since is not None:
        stmt = stmt.where(column >= _utc(flt.since))
    if flt.until is not None:
        stmt = stmt.where(column < _utc(flt.until))
    return stmt


def summary_text(summary: dict[str, Any] | None) -> str | None:
    """One human-readable line from a stored job summary (:meth:`cdss.jobs.summary.JobSummary.text`)."""
    parsed = JobSummary.from_json(summary)
    return None if parsed is None else parsed.text()


def _page(
    session: Session, stmt: AnySelect, count_of: AnySelect, limit: int, offset: int
) -> tuple[int, list[Any]]:
    total = int(session.execute(count_of).scalar_one())
    rows = list(session.execute(stmt.limit(limit).offset(offset)).all())
    return total, rows


def _count(stmt: AnySelect) -> AnySelect:
    return select(func.count()).select_from(stmt.order_by(None).subquery())


# ------------------------------------------------------------------ studies
def _jobs_of_study(*conditions: Any) -> Any:
    return exists(
        select(Job.id)
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id, *conditions)
    )


def _deliveries_of_study(*conditions: Any) -> Any:
    return exists(
        select(Delivery.id)
        .join(Result, Delivery.result_id == Result.id)
        .join(Job, Result.job_id == Job.id)
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id, *conditions)
    )


def _status_conditions() -> dict[StudyStatus, Any]:
    failed = or_(
        _jobs_of_study(Job.state == JobState.DEAD), _deliveries_of_study(Delivery.state == DeliveryState.DEAD)
    )
    busy = or_(
        _jobs_of_study(Job.state.in_([JobState.QUEUED, JobState.RUNNING])),
        _deliveries_of_study(Delivery.state.in_([DeliveryState.PENDING, DeliveryState.SENDING])),
    )
    any_job = _jobs_of_study()
    return {
        StudyStatus.FAILED: failed,
        StudyStatus.IN_PROGRESS: and_(~failed, busy),
        StudyStatus.COMPLETE: and_(~failed, ~busy, any_job),
        StudyStatus.RECEIVED: ~any_job,
    }


def _status_expression() -> Any:
    conds = _status_conditions()
    return case(
        (conds[StudyStatus.FAILED], StudyStatus.FAILED.value),
        (conds[StudyStatus.IN_PROGRESS], StudyStatus.IN_PROGRESS.value),
        (conds[StudyStatus.COMPLETE], StudyStatus.COMPLETE.value),
        else_=StudyStatus.RECEIVED.value,
    )


def _finding_condition(text: str) -> Any:
    return func.lower(cast(Job.summary, Text)).contains(text.lower(), autoescape=True)


def _study_select(flt: RecordFilter) -> AnySelect:
    stmt: AnySelect = select(Study, _status_expression().label("status"))
    if flt.study_id is not None:
        stmt = stmt.where(Study.id == flt.study_id)
    stmt = _time_range(stmt, Study.created_at, flt)
    if flt.patient_id is not None:
        stmt = stmt.where(Study.patient_id == flt.patient_id)
    if flt.accession is not None:
        stmt = stmt.where(Study.accession_number == flt.accession)
    if flt.study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == flt.study_uid)
    instance_conditions = []
    if flt.calling_ae is not None:
        instance_conditions.append(Instance.calling_ae_title == flt.calling_ae)
    if flt.modality is not None:
        instance_conditions.append(or_(Instance.modality == flt.modality, Series.modality == flt.modality))
    if instance_conditions:
        stmt = stmt.where(
            exists(
                select(Instance.id)
                .join(Series, Instance.series_id == Series.id)
                .where(Series.study_id == Study.id, *instance_conditions)
            )
        )
    if flt.analysis is not None:
        stmt = stmt.where(_jobs_of_study(Job.analysis == flt.analysis))
    if flt.finding:
        stmt = stmt.where(_jobs_of_study(_finding_condition(flt.finding)))
    if flt.status is not None:
        stmt = stmt.where(_status_conditions()[StudyStatus(flt.status)])
    return stmt.order_by(Study.created_at.desc(), Study.id.desc())


def _study_outs(session: Session, rows: Sequence[Any]) -> list[StudyOut]:
    ids = [row.Study.id for row in rows]
    if not ids:
        return []
    counts: dict[int, int] = defaultdict(int)
    modalities: dict[int, set[str]] = defaultdict(set)
    aes: dict[int, set[str]] = defaultdict(set)
    for study_id, modality, series_modality, ae in session.execute(
        select(Series.study_id, Instance.modality, Series.modality, Instance.calling_ae_title)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id.in_(ids))
    ):
        counts[study_id] += 1
        shown = modality or series_modality
        if shown:
            modalities[study_id].add(shown)
        aes[study_id].add(ae)
    findings: dict[int, list[FindingOut]] = defaultdict(list)
    for job, study_id in session.execute(
        select(Job, Series.study_id)
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id.in_(ids))
        .order_by(Job.id)
    ):
        findings[study_id].append(
            FindingOut(
                job_id=job.id,
                instance_id=job.instance_id,
                analysis=job.analysis,
                state=job.state,
                summary=job.summary,
                text=summary_text(job.summary),
            )
        )
    out = []
    for row in rows:
        study = row.Study
        out.append(
            StudyOut(
                id=study.id,
                study_instance_uid=study.study_instance_uid,
                patient_id=study.patient_id,
                patient_name=study.patient_name,
                accession_number=study.accession_number,
                study_date=study.study_date,
                study_description=study.study_description,
                created_at=study.created_at,
                instances=counts[study.id],
                modalities=sorted(modalities[study.id]),
                calling_aes=sorted(aes[study.id]),
                status=StudyStatus(row.status),
                analyses=sorted({f.analysis for f in findings[study.id] if f.analysis}),
                findings=findings[study.id],
            )
        )
    return out


def list_studies(session: Session, flt: RecordFilter, limit: int, offset: int) -> tuple[int, list[StudyOut]]:
    stmt = _study_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, _study_outs(session, rows)


# ------------------------------------------------------------------ instances
def _instance_select(flt: RecordFilter) -> AnySelect:
    stmt: AnySelect = (
        select(
            Instance,
            Series.series_instance_uid,
            Study.id.label("study_id"),
            Study.study_instance_uid,
            Study.accession_number,
            Study.patient_id,
        )
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    stmt = _time_range(stmt, Instance.received_at, flt)
    if flt.calling_ae is not None:
        stmt = stmt.where(Instance.calling_ae_title == flt.calling_ae)
    if flt.modality is not None:
        stmt = stmt.where(or_(Instance.modality == flt.modality, Series.modality == flt.modality))
    stmt = _study_filters(stmt, flt)
    if flt.analysis is not None:
        stmt = stmt.where(
            exists(select(Job.id).where(Job.instance_id == Instance.id, Job.analysis == flt.analysis))
        )
    if flt.finding:
        stmt = stmt.where(
            exists(select(Job.id).where(Job.instance_id == Instance.id, _finding_condition(flt.finding)))
        )
    return stmt.order_by(Instance.received_at.desc(), Instance.id.desc())


def _study_filters(stmt: AnySelect, flt: RecordFilter) -> AnySelect:
    if flt.patient_id is not None:
        stmt = stmt.where(Study.patient_id == flt.patient_id)
    if flt.accession is not None:
        stmt = stmt.where(Study.accession_number == flt.accession)
    if flt.study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == flt.study_uid)
    if flt.study_id is not None:
        stmt = stmt.where(Study.id == flt.study_id)
    return stmt


def _instance_out(row: Any) -> InstanceOut:
    inst: Instance = row.Instance
    return InstanceOut(
        id=inst.id,
        sop_instance_uid=inst.sop_instance_uid,
        sop_class_uid=inst.sop_class_uid,
        series_instance_uid=row.series_instance_uid,
        study_id=row.study_id,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        transfer_syntax_uid=inst.transfer_syntax_uid,
        size_bytes=inst.size_bytes,
        calling_ae_title=inst.calling_ae_title,
        called_ae_title=inst.called_ae_title,
        peer_address=inst.peer_address,
        received_at=inst.received_at,
        modality=inst.modality,
        body_part_examined=inst.body_part_examined,
        view_position=inst.view_position,
        laterality=inst.laterality,
        photometric_interpretation=inst.photometric_interpretation,
        rows=inst.rows,
        columns=inst.columns,
        instance_number=inst.instance_number,
    )


def list_instances(
    session: Session, flt: RecordFilter, limit: int, offset: int
) -> tuple[int, list[InstanceOut]]:
    stmt = _instance_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [_instance_out(r) for r in rows]


# ------------------------------------------------------------------ jobs
def _job_select(flt: RecordFilter) -> AnySelect:
    stmt: AnySelect = (
        select(
            Job,
            Instance.calling_ae_title,
            Instance.modality,
            Study.id.label("study_id"),
            Study.study_instance_uid,
            Study.accession_number,
            Study.patient_id,
        )
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    stmt = _time_range(stmt, Job.created_at, flt)
    if flt.status is not None:
        stmt = stmt.where(Job.state == JobState(flt.status))
    if flt.analysis is not None:
        stmt = stmt.where(Job.analysis == flt.analysis)
    if flt.calling_ae is not None:
        stmt = stmt.where(Instance.calling_ae_title == flt.calling_ae)
    if flt.modality is not None:
        stmt = stmt.where(or_(Instance.modality == flt.modality, Series.modality == flt.modality))
    if flt.finding:
        stmt = stmt.where(_finding_condition(flt.finding))
    if flt.job_id is not None:
        stmt = stmt.where(Job.id == flt.job_id)
    stmt = _study_filters(stmt, flt)
    return stmt.order_by(Job.created_at.desc(), Job.id.desc())


def _job_out(row: Any) -> JobOut:
    job: Job = row.Job
    return JobOut(
        id=job.id,
        instance_id=job.instance_id,
        study_id=row.study_id,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        calling_ae_title=row.calling_ae_title,
        modality=row.modality,
        state=job.state,
        analysis=job.analysis,
        route_reason=job.route_reason,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        next_run_at=job.next_run_at,
        last_error=job.last_error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=job.duration_s,
        summary=job.summary,
        summary_text=summary_text(job.summary),
    )


def list_jobs(session: Session, flt: RecordFilter, limit: int, offset: int) -> tuple[int, list[JobOut]]:
    stmt = _job_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [_job_out(r) for r in rows]


def get_job(session: Session, job_id: int) -> JobOut | None:
    row = session.execute(_job_select(RecordFilter(job_id=job_id))).first()
    return None if row is None else _job_out(row)


# ------------------------------------------------------------------ results
def _result_select(flt: RecordFilter) -> AnySelect:
    stmt: AnySelect = (
        select(Result, Job.analysis, Study.study_instance_uid, Study.accession_number, Study.patient_id)
        .join(Job, Result.job_id == Job.id)
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    stmt = _time_range(stmt, Result.created_at, flt)
    if flt.kind is not None:
        stmt = stmt.where(Result.kind == flt.kind.upper())
    if flt.job_id is not None:
        stmt = stmt.where(Result.job_id == flt.job_id)
    if flt.analysis is not None:
        stmt = stmt.where(Job.analysis == flt.analysis)
    if flt.calling_ae is not None:
        stmt = stmt.where(Instance.calling_ae_title == flt.calling_ae)
    stmt = _study_filters(stmt, flt)
    return stmt.order_by(Result.created_at.desc(), Result.id.desc())


def _result_out(row: Any) -> ResultOut:
    res: Result = row.Result
    return ResultOut(
        id=res.id,
        job_id=res.job_id,
        kind=res.kind,
        sop_class_uid=res.sop_class_uid,
        sop_instance_uid=res.sop_instance_uid,
        series_instance_uid=res.series_instance_uid,
        size_bytes=res.size_bytes,
        model_name=res.model_name,
        model_version=res.model_version,
        created_at=res.created_at,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        analysis=row.analysis,
    )


def list_results(session: Session, flt: RecordFilter, limit: int, offset: int) -> tuple[int, list[ResultOut]]:
    stmt = _result_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [_result_out(r) for r in rows]


# ------------------------------------------------------------------ deliveries
def _delivery_select(flt: RecordFilter, delivery_id: int | None = None) -> AnySelect:
    stmt: AnySelect = (
        select(
            Delivery,
            Result.kind,
            Result.job_id,
            Study.study_instance_uid,
            Study.accession_number,
            Study.patient_id,
        )
        .join(Result, Delivery.result_id == Result.id)
        .join(Job, Result.job_id == Job.id)
        .join(Instance, Job.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    if delivery_id is not None:
        stmt = stmt.where(Delivery.id == delivery_id)
    stmt = _time_range(stmt, Delivery.created_at, flt)
    if flt.status is not None:
        stmt = stmt.where(Delivery.state == DeliveryState(flt.status))
    if flt.destination is not None:
        stmt = stmt.where(Delivery.destination == flt.destination)
    if flt.kind is not None:
        stmt = stmt.where(Result.kind == flt.kind.upper())
    if flt.job_id is not None:
        stmt = stmt.where(Result.job_id == flt.job_id)
    if flt.analysis is not None:
        stmt = stmt.where(Job.analysis == flt.analysis)
    stmt = _study_filters(stmt, flt)
    return stmt.order_by(Delivery.created_at.desc(), Delivery.id.desc())


def _delivery_out(row: Any) -> DeliveryOut:
    d: Delivery = row.Delivery
    return DeliveryOut(
        id=d.id,
        result_id=d.result_id,
        job_id=row.job_id,
        kind=row.kind,
        destination=d.destination,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        state=d.state,
        attempts=d.attempts,
        max_attempts=d.max_attempts,
        next_attempt_at=d.next_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
    )


def list_deliveries(
    session: Session, flt: RecordFilter, limit: int, offset: int
) -> tuple[int, list[DeliveryOut]]:
    stmt = _delivery_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [_delivery_out(r) for r in rows]


def get_delivery(session: Session, delivery_id: int) -> DeliveryOut | None:
    row = session.execute(_delivery_select(RecordFilter(), delivery_id)).first()
    return None if row is None else _delivery_out(row)


# ------------------------------------------------------------------ history
def _audit_out(row: AuditEvent) -> AuditEventOut:
    return AuditEventOut.model_validate(row)


_JOB_END_STAGE = {
    JobState.SUCCEEDED: "analysed",
    JobState.NOT_APPLICABLE: "not_applicable",
    JobState.DEAD: "failed",
}


def study_history(session: Session, study_id: int) -> StudyHistory | None:
    """The whole story of one study: records, audit events and a merged timeline."""
    _, studies = list_studies(session, RecordFilter(study_id=study_id), 1, 0)
    if not studies:
        return None
    study = studies[0]
    flt = RecordFilter(study_id=study_id)
    big = 100_000
    _, instances = list_instances(session, flt, big, 0)
    _, jobs = list_jobs(session, flt, big, 0)
    _, results = list_results(session, flt, big, 0)
    _, deliveries = list_deliveries(session, flt, big, 0)
    instances.reverse()
    jobs.reverse()
    results.reverse()
    deliveries.reverse()
    conditions = [AuditEvent.study_instance_uid == study.study_instance_uid]
    if study.accession_number:
        conditions.append(
            and_(
                AuditEvent.accession_number == study.accession_number, AuditEvent.study_instance_uid.is_(None)
            )
        )
    events = [
        _audit_out(e)
        for e in session.execute(
            select(AuditEvent).where(or_(*conditions)).order_by(AuditEvent.seq)
        ).scalars()
    ]
    timeline: list[TimelineEntry] = []
    for inst in instances:
        timeline.append(
            TimelineEntry(
                at=inst.received_at,
                stage="received",
                description=f"instance {inst.id} ({inst.modality or '?'}) received from {inst.calling_ae_title}",
                ref_type="instance",
                ref_id=inst.id,
            )
        )
    for job in jobs:
        timeline.append(
            TimelineEntry(
                at=job.created_at,
                stage="analysis_queued",
                description=f"job {job.id} queued for instance {job.instance_id}",
                ref_type="job",
                ref_id=job.id,
            )
        )
        if job.started_at is not None:
            timeline.append(
                TimelineEntry(
                    at=job.started_at,
                    stage="analysis_started",
                    description=f"job {job.id} started ({job.analysis or 'routing'}, attempt {job.attempts})",
                    ref_type="job",
                    ref_id=job.id,
                )
            )
        if job.finished_at is not None and job.state in _JOB_END_STAGE:
            what = job.summary_text or job.last_error or job.state.value
            timeline.append(
                TimelineEntry(
                    at=job.finished_at,
                    stage=_JOB_END_STAGE[job.state],
                    description=f"job {job.id} {job.state.value}: {what}",
                    ref_type="job",
                    ref_id=job.id,
                )
            )
    for res in results:
        timeline.append(
            TimelineEntry(
                at=res.created_at,
                stage="result_created",
                description=f"{res.kind} {res.id} created by {res.model_name} {res.model_version}",
                ref_type="result",
                ref_id=res.id,
            )
        )
    for d in deliveries:
        timeline.append(
            TimelineEntry(
                at=d.created_at,
                stage="delivery_queued",
                description=f"{d.kind} to {d.destination} ({d.ae_title}) queued",
                ref_type="delivery",
                ref_id=d.id,
            )
        )
        if d.delivered_at is not None:
            timeline.append(
                TimelineEntry(
                    at=d.delivered_at,
                    stage="delivered",
                    description=f"{d.kind} delivered to {d.destination} (status 0x{(d.last_status or 0):04X})",
                    ref_type="delivery",
                    ref_id=d.id,
                )
            )
        elif d.state is DeliveryState.DEAD:
            timeline.append(
                TimelineEntry(
                    at=d.next_attempt_at,
                    stage="delivery_failed",
                    description=f"{d.kind} to {d.destination} dead after {d.attempts} attempts: {d.last_error or ''}",
                    ref_type="delivery",
                    ref_id=d.id,
                )
            )
    for e in events:
        timeline.append(
            TimelineEntry(
                at=e.occurred_at,
                stage="audit",
                description=f"{e.event_name} ({e.event_id}{'/' + e.event_type if e.event_type else ''}, "
                f"{e.action}, outcome {e.outcome}) by {e.user or '-'}: {e.description}",
                ref_type="audit_event",
                ref_id=e.seq,
            )
        )
    order = {"instance": 0, "job": 1, "result": 2, "delivery": 3, "audit_event": 4}
    timeline.sort(key=lambda t: (t.at, order[t.ref_type], t.ref_id))
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    delivered = [d.delivered_at for d in deliveries if d.delivered_at is not None]
    return StudyHistory(
        study=study,
        received_at=min((i.received_at for i in instances), default=None),
        analysed_at=max(finished, default=None),
        delivered_at=max(delivered, default=None),
        instances=instances,
        jobs=jobs,
        results=results,
        deliveries=deliveries,
        audit_events=events,
        timeline=timeline,
    )


def study_ids_by_accession(session: Session, accession: str) -> list[int]:
    return list(
        session.execute(
            select(Study.id).where(Study.accession_number == accession).order_by(Study.created_at, Study.id)
        ).scalars()
    )
