"""Queries behind the record endpoints: filters and pagination with totals.

Rows become response models in :mod:`cdss.api.mapping`; a study's merged history is
:mod:`cdss.api.history`.

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

from cdss.api.mapping import delivery_out, instance_out, job_out, result_out, summary_text
from cdss.api.schemas import (
    DeliveryOut,
    FindingOut,
    InstanceOut,
    JobOut,
    ResultOut,
    StudyOut,
    StudyStatus,
)
from cdss.db.models import Delivery, DeliveryState, Instance, Job, JobState, Result, Series, Study

#: A SELECT of any columns (the record queries add columns and filters step by step).
AnySelect = Select[*tuple[Any, ...]]

__all__ = [
    "RecordFilter",
    "list_deliveries",
    "list_instances",
    "list_jobs",
    "list_results",
    "list_studies",
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


def list_instances(
    session: Session, flt: RecordFilter, limit: int, offset: int
) -> tuple[int, list[InstanceOut]]:
    stmt = _instance_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [instance_out(r) for r in rows]


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


def list_jobs(session: Session, flt: RecordFilter, limit: int, offset: int) -> tuple[int, list[JobOut]]:
    stmt = _job_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [job_out(r) for r in rows]


def get_job(session: Session, job_id: int) -> JobOut | None:
    row = session.execute(_job_select(RecordFilter(job_id=job_id))).first()
    return None if row is None else job_out(row)


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


def list_results(session: Session, flt: RecordFilter, limit: int, offset: int) -> tuple[int, list[ResultOut]]:
    stmt = _result_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [result_out(r) for r in rows]


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


def list_deliveries(
    session: Session, flt: RecordFilter, limit: int, offset: int
) -> tuple[int, list[DeliveryOut]]:
    stmt = _delivery_select(flt)
    total, rows = _page(session, stmt, _count(stmt), limit, offset)
    return total, [delivery_out(r) for r in rows]


def get_delivery(session: Session, delivery_id: int) -> DeliveryOut | None:
    row = session.execute(_delivery_select(RecordFilter(), delivery_id)).first()
    return None if row is None else delivery_out(row)


def study_ids_by_accession(session: Session, accession: str) -> list[int]:
    return list(
        session.execute(
            select(Study.id).where(Study.accession_number == accession).order_by(Study.created_at, Study.id)
        ).scalars()
    )
