"""Who an audit event is about: the study, patient and accession behind a job."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.db import Instance, Job, Series, Study

__all__ = ["Participants", "job_participants"]


@dataclass(frozen=True)
class Participants:
    """Participant objects of an audit event (patient data stays in the audit trail)."""

    study_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None


def job_participants(session: Session, job_id: int | None) -> Participants:
    """The participants of the job's source image (empty when the job does not exist)."""
    if job_id is None:
        return Participants()
    row = session.execute(
        select(Study.study_instance_uid, Study.patient_id, Study.accession_number)
        .join(Series, Series.study_id == Study.id)
        .join(Instance, Instance.series_id == Series.id)
        .join(Job, Job.instance_id == Instance.id)
        .where(Job.id == job_id)
    ).first()
    if row is None:
        return Participants()
    return Participants(row.study_instance_uid, row.patient_id, row.accession_number)
