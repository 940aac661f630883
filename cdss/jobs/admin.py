"""Administrator actions on jobs, each with its audit event in the same transaction.

The admin API (``POST /api/v1/jobs/{id}/rerun``) and ``cdss jobs rerun`` both call
:func:`rerun`: the state change and its 110103 *DICOM Instances Accessed* event (action E, the
instance is processed again) commit together or not at all, as a received instance and its
audit event do. A request the state machine refuses is recorded with outcome 4 (minor failure)
and the error is raised again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.audit import Action, EventID, Outcome, Participants, job_participants, record_event
from cdss.db import Database, Job, utcnow
from cdss.jobs.states import JobStateError, requeue_job

__all__ = ["rerun"]


def _audit(
    session: Session,
    *,
    ok: bool,
    user: str,
    source: str | None,
    who: Participants,
    description: str,
    detail: dict[str, Any],
) -> None:
    record_event(
        session,
        EventID.INSTANCES_ACCESSED,
        action=Action.EXECUTE,
        outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        user=user,
        source=source,
        study_instance_uid=who.study_instance_uid,
        patient_id=who.patient_id,
        accession_number=who.accession_number,
        description=description,
        detail=detail,
    )


def rerun(
    db: Database,
    job_id: int,
    *,
    user: str,
    source: str | None,
    force: bool = False,
    now: dt.datetime | None = None,
) -> Job:
    """Queue a finished job again with a fresh attempt budget, audited (module docstring).

    Parameters
    ----------
    user, source
        Who asked (API token name, ``cli:<login>``) and from where (client address, host name).
    force
        Also re-run ``succeeded`` / ``not_applicable`` jobs (a second, new set of results).

    Raises
    ------
    JobStateError
        Unknown job, a job that is queued or running, or a finished job without ``force``
        (the refusal is audited first).
    """
    now = now or utcnow()
    detail: dict[str, Any] = {"job_id": job_id, "force": force, "request": "rerun"}
    try:
        with db.session() as session:
            job, previous = requeue_job(session, job_id, force=force, now=now)
            _audit(
                session,
                ok=True,
                user=user,
                source=source,
                who=job_participants(session, job_id),
                description=f"job {job_id} queued again (was {previous.value})",
                detail={**detail, "instance_id": job.instance_id, "previous_state": previous.value},
            )
            session.expunge(job)
            return job
    except JobStateError as exc:
        with db.session() as session:
            row = session.execute(select(Job.instance_id, Job.state).where(Job.id == job_id)).first()
            if row is not None:
                detail.update(instance_id=row.instance_id, state=row.state.value)
            _audit(
                session,
                ok=False,
                user=user,
                source=source,
                who=job_participants(session, job_id if row is not None else None),
                description=f"re-run of job {job_id} refused: {exc}",
                detail=detail,
            )
        raise
