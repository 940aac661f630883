"""A study's whole story: its records, its audit events and one merged timeline."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cdss.api.records import (
    RecordFilter,
    list_deliveries,
    list_instances,
    list_jobs,
    list_results,
    list_studies,
)
from cdss.api.schemas import AuditEventOut, StudyHistory, TimelineEntry
from cdss.db.models import AuditEvent, DeliveryState, JobState

__all__ = ["study_history"]


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
