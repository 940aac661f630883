"""The analysis job state machine as transactional functions (DESIGN.md invariant 3).

::

    queued ──claim (lease, attempts+1)──▶ running ──finish──▶ succeeded | not_applicable
       ▲                                    │  │
       │◀── fail, attempts < max (back-off) ─┘  └─ fail, attempts = max ──▶ dead ──rerun──▶ queued
       │◀── lease expired / owner process gone (reconcile; dead when attempts = max)
       │◀── defer (waiting for a companion image; the attempt is given back)

Every transition is one transaction and is *fenced* by the lease: a worker whose lease expired
(and whose job another worker may already hold) can no longer change the job, so its results
are rolled back with the rest of its final transaction (no duplicated results).

Claiming uses ``SELECT … FOR UPDATE SKIP LOCKED`` inside ``UPDATE … RETURNING`` on PostgreSQL;
on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (see :mod:`cdss.db.session`), so
the same ``UPDATE … WHERE id = (SELECT …) RETURNING`` runs under the database write lock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session, aliased

from cdss.audit import Action, EventID, Outcome, record_event
from cdss.db import Database, Instance, Job, JobState, Series, Study, utcnow
from cdss.leases import backoff_s as _backoff_s
from cdss.leases import owner_is_gone

__all__ = [
    "ClaimedJob",
    "FailResult",
    "JobStateError",
    "LeaseLost",
    "ReconcileReport",
    "audit_job",
    "claim_job",
    "claim_many",
    "claim_next",
    "count_jobs",
    "defer_job",
    "extend_lease",
    "fail_job",
    "finish_job",
    "guard_lease",
    "job_next_run_at",
    "queued_job_ids",
    "reconcile_jobs",
    "requeue_job",
    "rerun_job",
]

#: Longest delay between analysis attempts, seconds.
MAX_RETRY_DELAY_S = 3600.0
_ERROR_CHARS = 4000


class LeaseLost(RuntimeError):
    """The caller no longer holds the job's lease (it expired and was reclaimed, or the job ended)."""


class JobStateError(ValueError):
    """A transition that the job's current state does not allow (the message says which)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job leased to ``owner`` until ``lease_expires_at``."""

    id: int
    instance_id: int
    attempts: int
    max_attempts: int
    owner: str
    lease_expires_at: dt.datetime


@dataclass(frozen=True)
class FailResult:
    """Outcome of :func:`fail_job`: the new state, when the job runs next (if queued), its analysis."""

    state: JobState
    next_run_at: dt.datetime | None
    analysis: str | None


@dataclass
class ReconcileReport:
    """What :func:`reconcile_jobs` did."""

    requeued: list[int]
    dead: list[int]


def _lease_until(now: dt.datetime, lease_s: float) -> dt.datetime:
    return now + dt.timedelta(seconds=lease_s)


def _claim(
    session: Session, owner: str, lease_s: float, now: dt.datetime, job_id: int | None, limit: int = 1
) -> Any:
    values = dict(
        state=JobState.RUNNING,
        lease_owner=owner,
        lease_expires_at=_lease_until(now, lease_s),
        attempts=Job.attempts + 1,
        started_at=now,
        updated_at=now,
    )
    if job_id is None:
        candidate = aliased(Job, name="candidate")
        next_id = (
            select(candidate.id)
            .where(candidate.state == JobState.QUEUED, candidate.next_run_at <= now)
            .order_by(candidate.next_run_at, candidate.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if limit == 1:
            where = [Job.id == next_id.scalar_subquery(), Job.state == JobState.QUEUED]
        else:
            # Lock the candidates first, then update exactly those: PostgreSQL may re-evaluate
            # an ``IN (SELECT … LIMIT n)`` subquery per row and so update more than n rows.
            ids = list(session.execute(next_id).scalars())
            if not ids:
                return []
            where = [Job.id.in_(ids), Job.state == JobState.QUEUED]
    else:
        where = [Job.id == job_id, Job.state == JobState.QUEUED, Job.next_run_at <= now]
    stmt = (
        update(Job)
        .where(*where)
        .values(**values)
        .returning(Job.id, Job.instance_id, Job.attempts, Job.max_attempts, Job.lease_expires_at)
        .execution_options(synchronize_session=False)
    )
    if limit == 1:
        return session.execute(stmt).first()
    return sorted(session.execute(stmt).all(), key=lambda row: row.id)


def _claimed(row: Any, owner: str) -> ClaimedJob:
    return ClaimedJob(
        id=row.id,
        instance_id=row.instance_id,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        owner=owner,
        lease_expires_at=row.lease_expires_at,
    )


def claim_next(
    db: Database, owner: str, lease_s: float, *, now: dt.datetime | None = None
) -> ClaimedJob | None:
    """Lease the oldest due queued job to ``owner``.

    Parameters
    ----------
    db
        The node database.
    owner
        Lease owner id (:func:`cdss.leases.new_owner`).
    lease_s
        Lease length, seconds; extend it with :func:`extend_lease` while working.

    Returns
    -------
    ClaimedJob or None
        ``None`` when no queued job is due. Two concurrent callers never get the same job.
    """
    now = now or utcnow()
    with db.session() as session:
        row = _claim(session, owner, lease_s, now, None)
    return None if row is None else _claimed(row, owner)


def claim_many(
    db: Database, owner: str, lease_s: float, limit: int, *, now: dt.datetime | None = None
) -> list[ClaimedJob]:
    """Lease up to ``limit`` of the oldest due queued jobs to ``owner`` in one transaction.

    Each job gets its own lease and attempt, exactly as if claimed by :func:`claim_next` one
    after the other (the batch of a worker, :meth:`cdss.jobs.runner.JobRunner.run_batch`).
    Concurrent callers never get the same job (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
    write lock on SQLite). Returns the jobs in id order; empty when nothing is due.
    """
    if limit < 1:
        return []
    if limit == 1:
        job = claim_next(db, owner, lease_s, now=now)
        return [] if job is None else [job]
    now = now or utcnow()
    with db.session() as session:
        rows = _claim(session, owner, lease_s, now, None, limit)
    return [_claimed(row, owner) for row in rows]


def claim_job(
    db: Database, job_id: int, owner: str, lease_s: float, *, now: dt.datetime | None = None
) -> ClaimedJob | None:
    """Lease the job ``job_id`` if it is queued and due (the Celery backend's entry point).

    Returns ``None`` when the job is not claimable now (unknown, running elsewhere, finished,
    or queued with ``next_run_at`` in the future); see :func:`job_next_run_at`.
    """
    now = now or utcnow()
    with db.session() as session:
        row = _claim(session, owner, lease_s, now, job_id)
    return None if row is None else _claimed(row, owner)


def job_next_run_at(db: Database, job_id: int) -> tuple[JobState, dt.datetime] | None:
    """State and ``next_run_at`` of a job, or ``None`` if it does not exist."""
    with db.session() as session:
        row = session.execute(select(Job.state, Job.next_run_at).where(Job.id == job_id)).first()
    return None if row is None else (row.state, row.next_run_at)


def extend_lease(
    db: Database, job_id: int, owner: str, lease_s: float, *, now: dt.datetime | None = None
) -> bool:
    """Heartbeat: push the lease of a running job held by ``owner`` to ``now + lease_s``.

    Returns ``False`` when the lease is no longer held (the worker should stop and discard its work).
    """
    now = now or utcnow()
    with db.session() as session:
        res = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == owner)
            .values(lease_expires_at=_lease_until(now, lease_s))
            .execution_options(synchronize_session=False)
        )
        return bool(cast(CursorResult[Any], res).rowcount)


def guard_lease(session: Session, job_id: int, owner: str) -> Job:
    """Inside a transaction: lock the job and check that ``owner`` still holds its lease.

    Raises
    ------
    LeaseLost
        The job is not ``running`` under ``owner`` any more; the caller must roll back.
    """
    job = session.execute(
        select(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == owner)
        .with_for_update()
    ).scalar_one_or_none()
    if job is None:
        raise LeaseLost(f"job {job_id}: lease of {owner} is no longer held")
    return job


def finish_job(
    session: Session,
    job_id: int,
    owner: str,
    state: JobState,
    *,
    summary: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Job:
    """Inside the caller's final transaction: end a running job as succeeded or not applicable.

    Raises :class:`LeaseLost` (the caller's transaction must then roll back, discarding any
    result rows it added) when ``owner`` no longer holds the lease.
    """
    if state not in (JobState.SUCCEEDED, JobState.NOT_APPLICABLE):
        raise JobStateError(f"finish_job ends a job as succeeded or not_applicable, not {state}")
    now = now or utcnow()
    job = guard_lease(session, job_id, owner)
    job.state = state
    job.summary = summary
    job.finished_at = now
    job.duration_s = (now - job.started_at).total_seconds() if job.started_at else None
    job.lease_owner = None
    job.lease_expires_at = None
    job.last_error = None
    job.updated_at = now
    session.flush()
    return job


def defer_job(
    db: Database, job_id: int, owner: str, until: dt.datetime, reason: str, *, now: dt.datetime | None = None
) -> bool:
    """Return a running job to the queue until ``until`` without counting the attempt.

    Used while waiting for a companion image (FOR PRESENTATION / FOR PROCESSING). Returns
    ``False`` when the lease was lost.
    """
    now = now or utcnow()
    with db.session() as session:
        res = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == owner)
            .values(
                state=JobState.QUEUED,
                attempts=Job.attempts - 1,
                next_run_at=until,
                lease_owner=None,
                lease_expires_at=None,
                route_reason=reason,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(cast(CursorResult[Any], res).rowcount)


def audit_job(
    session: Session,
    job_id: int,
    *,
    action: Action,
    outcome: Outcome,
    description: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a 110103 *DICOM Instances Accessed* event about a job's source instance.

    Action ``C`` when result instances were created, ``E`` when the instance was used without
    creating results (not applicable, failed). Participants (study, patient, accession) come
    from the database; they go to the audit trail only, never to the log.
    """
    row = session.execute(
        select(
            Instance.sop_instance_uid,
            Instance.calling_ae_title,
            Study.study_instance_uid,
            Study.patient_id,
            Study.accession_number,
        )
        .join(Job, Job.instance_id == Instance.id)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Job.id == job_id)
    ).first()
    facts: dict[str, Any] = {"job_id": job_id}
    if row is not None:
        facts["sop_instance_uid"] = row.sop_instance_uid
    facts.update(detail or {})
    record_event(
        session,
        EventID.INSTANCES_ACCESSED,
        action=action,
        outcome=outcome,
        user="cdss",
        study_instance_uid=row.study_instance_uid if row else None,
        patient_id=row.patient_id if row else None,
        accession_number=row.accession_number if row else None,
        description=description,
        detail=facts,
    )


def fail_job(
    db: Database,
    job_id: int,
    owner: str,
    error: str,
    *,
    backoff_s: float,
    final: bool = False,
    now: dt.datetime | None = None,
) -> FailResult | None:
    """Record a failed attempt: back to ``queued`` after a back-off, or ``dead`` when attempts are used up.

    Parameters
    ----------
    error
        What went wrong (no PHI); stored in ``last_error`` and, for dead jobs, in the audit trail.
    backoff_s
        Base delay; attempt *n* waits ``backoff_s * 2**(n-1)`` seconds (at most one hour).
    final
        The failure will not go away by retrying (the image cannot be decoded or analysed):
        the job is dead at once, whatever attempts are left.

    Returns
    -------
    FailResult or None
        The new state, or ``None`` when the lease was lost (someone else owns the job now).
    """
    now = now or utcnow()
    with db.session() as session:
        try:
            job = guard_lease(session, job_id, owner)
        except LeaseLost:
            return None
        job.last_error = error[:_ERROR_CHARS]
        job.lease_owner = None
        job.lease_expires_at = None
        job.updated_at = now
        if final or job.attempts >= job.max_attempts:
            job.state = JobState.DEAD
            job.finished_at = now
            why = "the image cannot be analysed" if final else f"failed after {job.attempts} attempts"
            audit_job(
                session,
                job_id,
                action=Action.EXECUTE,
                outcome=Outcome.SERIOUS_FAILURE,
                description=f"Analysis {why}; job is dead (re-runnable)",
                detail={"error": error[:500], "attempts": job.attempts},
            )
        else:
            job.state = JobState.QUEUED
            job.next_run_at = now + dt.timedelta(
                seconds=_backoff_s(backoff_s, job.attempts, MAX_RETRY_DELAY_S)
            )
        return FailResult(job.state, job.next_run_at if job.state is JobState.QUEUED else None, job.analysis)


def reconcile_jobs(db: Database, *, now: dt.datetime | None = None) -> ReconcileReport:
    """Return running jobs whose lease expired, or whose owner process is gone, to the queue.

    A job that has used all its attempts becomes ``dead`` instead (a job that kills its worker
    every time must not crash-loop the node). Safe to run concurrently from several nodes.
    """
    now = now or utcnow()
    report = ReconcileReport([], [])
    with db.session() as session:
        running = session.execute(
            select(Job.id, Job.lease_owner, Job.lease_expires_at).where(Job.state == JobState.RUNNING)
        ).all()
    for row in running:
        expired = row.lease_expires_at is None or row.lease_expires_at < now
        gone = owner_is_gone(row.lease_owner)
        if not (expired or gone):
            continue
        with db.session() as session:
            cond = [Job.id == row.id, Job.state == JobState.RUNNING]
            cond.append(Job.lease_owner == row.lease_owner if row.lease_owner else Job.lease_owner.is_(None))
            if not gone:
                cond.append(Job.lease_expires_at < now)
            job = session.execute(select(Job).where(*cond).with_for_update()).scalar_one_or_none()
            if job is None:
                continue
            why = "exited" if gone else "did not renew its lease"
            job.last_error = f"worker {row.lease_owner} {why} (attempt {job.attempts})"
            job.lease_owner = None
            job.lease_expires_at = None
            job.updated_at = now
            if job.attempts >= job.max_attempts:
                job.state = JobState.DEAD
                job.finished_at = now
                audit_job(
                    session,
                    job.id,
                    action=Action.EXECUTE,
                    outcome=Outcome.SERIOUS_FAILURE,
                    description=f"Analysis abandoned after {job.attempts} attempts (worker lost); job is dead",
                    detail={"error": job.last_error, "attempts": job.attempts},
                )
                report.dead.append(job.id)
            else:
                job.state = JobState.QUEUED
                job.next_run_at = now
                report.requeued.append(job.id)
    return report


def requeue_job(session: Session, job_id: int, *, force: bool, now: dt.datetime) -> tuple[Job, JobState]:
    """Inside the caller's transaction: queue a finished job again with a fresh attempt budget.

    Returns the job and the state it had. See :func:`rerun_job` for ``force`` and the errors.
    """
    allowed = {JobState.DEAD} | ({JobState.SUCCEEDED, JobState.NOT_APPLICABLE} if force else set())
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise JobStateError(f"job {job_id} does not exist")
    previous = job.state
    if previous not in allowed:
        if previous in (JobState.SUCCEEDED, JobState.NOT_APPLICABLE):
            raise JobStateError(
                f"job {job_id} is {previous.value}; re-running it produces a second set of "
                "results, so it needs force (`cdss jobs rerun --force`)"
            )
        raise JobStateError(f"job {job_id} is {previous.value}; only dead or finished jobs can be re-run")
    job.state = JobState.QUEUED
    job.attempts = 0
    job.next_run_at = now
    job.lease_owner = None
    job.lease_expires_at = None
    job.finished_at = None
    job.updated_at = now
    session.flush()
    return job, previous


def rerun_job(db: Database, job_id: int, *, force: bool = False, now: dt.datetime | None = None) -> Job:
    """Queue a finished job again with a fresh attempt budget (one transaction, not audited).

    Administrators use :func:`cdss.jobs.admin.rerun`, which audits the request in the same
    transaction.

    Parameters
    ----------
    force
        Also re-run ``succeeded`` / ``not_applicable`` jobs (e.g. after a model update; this
        produces a second, new set of results). Without it only ``dead`` jobs are re-run.

    Raises
    ------
    JobStateError
        Unknown job, a job that is queued or running, or a finished job without ``force``.
    """
    with db.session() as session:
        job, _ = requeue_job(session, job_id, force=force, now=now or utcnow())
        session.expunge(job)
        return job


def queued_job_ids(
    db: Database, *, due_before: dt.datetime | None = None, limit: int | None = None
) -> list[int]:
    """Ids of queued jobs (optionally only those due before ``due_before``), oldest first."""
    stmt = select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.next_run_at, Job.id)
    if due_before is not None:
        stmt = stmt.where(Job.next_run_at <= due_before)
    if limit is not None:
        stmt = stmt.limit(limit)
    with db.session() as session:
        return list(session.execute(stmt).scalars())


def count_jobs(db: Database) -> dict[JobState, int]:
    """Number of jobs per state (every state present, zero when none)."""
    with db.session() as session:
        rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    counts = dict.fromkeys(JobState, 0)
    counts.update({state: n for state, n in rows})
    return counts
