"""The job state machine on SQLite and PostgreSQL: leases, retries, dead letter, reconcile, rerun."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from cdss.audit import Action
from cdss.db import AuditEvent, Database, Job, JobState, utcnow
from cdss.jobs.states import (
    JobStateError,
    LeaseLost,
    claim_job,
    claim_next,
    count_jobs,
    defer_job,
    extend_lease,
    fail_job,
    finish_job,
    reconcile_jobs,
    rerun_job,
)
from cdss.leases import backoff_s, new_owner, owner_is_gone
from tests.jobs_helpers import add_jobs

pytestmark = pytest.mark.integration


@pytest.fixture
def db(db_url: str):
    database = Database(db_url)
    yield database
    database.dispose()


def _job(db: Database, job_id: int) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def test_claim_finish_happy_path(db: Database) -> None:
    (job_id,) = add_jobs(db)
    owner = new_owner("test")
    claimed = claim_next(db, owner, 60)
    assert claimed is not None and claimed.id == job_id and claimed.attempts == 1
    running = _job(db, job_id)
    assert running.state is JobState.RUNNING and running.lease_owner == owner
    assert running.lease_expires_at > utcnow() + dt.timedelta(seconds=50)
    assert claim_next(db, new_owner("other"), 60) is None  # nothing else is queued

    with db.session() as s:
        finish_job(s, job_id, owner, JobState.SUCCEEDED, summary={"ok": True})
    done = _job(db, job_id)
    assert done.state is JobState.SUCCEEDED and done.summary == {"ok": True}
    assert done.lease_owner is None and done.finished_at is not None and done.duration_s >= 0
    assert count_jobs(db)[JobState.SUCCEEDED] == 1


def test_jobs_not_due_are_not_claimed(db: Database) -> None:
    (job_id,) = add_jobs(db)
    with db.session() as s:
        s.get(Job, job_id).next_run_at = utcnow() + dt.timedelta(hours=1)
    assert claim_next(db, new_owner("t"), 60) is None
    assert claim_job(db, job_id, new_owner("t"), 60) is None
    later = utcnow() + dt.timedelta(hours=2)
    assert claim_next(db, new_owner("t"), 60, now=later).id == job_id


def test_fail_retries_with_backoff_then_dead_with_audit(db: Database) -> None:
    (job_id,) = add_jobs(db, max_attempts=2)
    owner = new_owner("t")
    claim_next(db, owner, 60)
    before = utcnow()
    result = fail_job(db, job_id, owner, "ValueError: boom", backoff_s=10)
    assert result is not None and result.state is JobState.QUEUED
    job = _job(db, job_id)
    assert job.last_error == "ValueError: boom" and job.lease_owner is None
    assert job.next_run_at >= before + dt.timedelta(seconds=10)
    assert claim_next(db, owner, 60) is None  # backing off

    claimed = claim_next(db, owner, 60, now=utcnow() + dt.timedelta(seconds=30))
    assert claimed is not None and claimed.attempts == 2
    result = fail_job(db, job_id, owner, "ValueError: boom again", backoff_s=10)
    assert result is not None and result.state is JobState.DEAD
    assert _job(db, job_id).state is JobState.DEAD
    with db.session() as s:
        events = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert len(events) == 1
    assert events[0].event_id == "110103" and events[0].action == Action.EXECUTE.value
    assert events[0].outcome == 8 and events[0].detail["job_id"] == job_id
    assert "boom again" in events[0].detail["error"]


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [backoff_s(10, n, 3600) for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff_s(10, 30, 3600) == 3600


def test_expired_lease_returns_to_queue_and_old_owner_is_fenced(db: Database) -> None:
    (job_id,) = add_jobs(db)
    slow, fast = new_owner("slow"), new_owner("fast")
    claim_next(db, slow, 1)
    assert reconcile_jobs(db).requeued == []  # lease still valid
    later = utcnow() + dt.timedelta(seconds=5)
    report = reconcile_jobs(db, now=later)
    assert report.requeued == [job_id]
    job = _job(db, job_id)
    assert job.state is JobState.QUEUED and "did not renew" in job.last_error

    claimed = claim_next(db, fast, 60, now=later)
    assert claimed.id == job_id and claimed.attempts == 2
    # The slow worker wakes up: its heartbeat and its final transaction are refused.
    assert not extend_lease(db, job_id, slow, 60)
    with pytest.raises(LeaseLost), db.session() as s:
        finish_job(s, job_id, slow, JobState.SUCCEEDED)
    assert fail_job(db, job_id, slow, "late", backoff_s=1) is None
    assert extend_lease(db, job_id, fast, 60)
    with db.session() as s:
        finish_job(s, job_id, fast, JobState.NOT_APPLICABLE)
    assert _job(db, job_id).state is JobState.NOT_APPLICABLE


def test_heartbeat_keeps_the_lease(db: Database) -> None:
    (job_id,) = add_jobs(db)
    owner = new_owner("t")
    claim_next(db, owner, 1)
    assert extend_lease(db, job_id, owner, 600)
    assert reconcile_jobs(db, now=utcnow() + dt.timedelta(seconds=5)).requeued == []


def test_lease_of_a_dead_local_process_is_reclaimed_at_once(db: Database) -> None:
    (job_id,) = add_jobs(db)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    ghost = f"{socket.gethostname()}:{proc.pid}:worker:deadbeef0000"
    assert owner_is_gone(ghost)
    claim_next(db, ghost, 3600)
    report = reconcile_jobs(db)
    assert report.requeued == [job_id]
    assert "exited" in _job(db, job_id).last_error
    # Owners on other hosts are judged by lease expiry only.
    assert not owner_is_gone("some-other-host:1:worker:abc")
    assert not owner_is_gone(new_owner("me"))


def test_lost_lease_at_last_attempt_makes_the_job_dead(db: Database) -> None:
    (job_id,) = add_jobs(db, max_attempts=1)
    claim_next(db, new_owner("t"), 1)
    report = reconcile_jobs(db, now=utcnow() + dt.timedelta(seconds=5))
    assert report.dead == [job_id] and report.requeued == []
    assert _job(db, job_id).state is JobState.DEAD


def test_defer_gives_the_attempt_back(db: Database) -> None:
    (job_id,) = add_jobs(db)
    owner = new_owner("t")
    claim_next(db, owner, 60)
    until = utcnow() + dt.timedelta(seconds=30)
    assert defer_job(db, job_id, owner, until, "waiting for FOR PRESENTATION")
    job = _job(db, job_id)
    assert (
        job.state is JobState.QUEUED and job.attempts == 0 and job.next_run_at >= until - dt.timedelta(0, 1)
    )


def test_rerun(db: Database) -> None:
    dead_id, done_id, queued_id = add_jobs(db, 3, max_attempts=1)
    owner = new_owner("t")
    assert claim_job(db, dead_id, owner, 60) is not None
    fail_job(db, dead_id, owner, "boom", backoff_s=0)
    assert _job(db, dead_id).state is JobState.DEAD
    job = rerun_job(db, dead_id)
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert claim_job(db, dead_id, owner, 60).attempts == 1

    claim_job(db, done_id, owner, 60)
    with db.session() as s:
        finish_job(s, done_id, owner, JobState.SUCCEEDED)
    with pytest.raises(JobStateError, match="force"):
        rerun_job(db, done_id)
    assert rerun_job(db, done_id, force=True).state is JobState.QUEUED
    with pytest.raises(JobStateError, match="queued"):
        rerun_job(db, queued_id)
    with pytest.raises(JobStateError, match="does not exist"):
        rerun_job(db, 999999)


def test_concurrent_threads_never_claim_the_same_job(db: Database) -> None:
    ids = add_jobs(db, 40)
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer() -> None:
        owner = new_owner("t")
        try:
            while (job := claim_next(db, owner, 60)) is not None:
                with lock:
                    claimed.append(job.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(claimed) == sorted(ids)
    assert max(Counter(claimed).values()) == 1


def _claim_all(url: str, out: multiprocessing.Queue) -> None:  # runs in a child process
    database = Database(url, run_migrations=False)
    owner = new_owner("proc")
    got = []
    while (job := claim_next(database, owner, 60)) is not None:
        got.append(job.id)
    database.dispose()
    out.put(got)


def test_concurrent_processes_never_claim_the_same_job(db: Database, db_url: str) -> None:
    ids = add_jobs(db, 60)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db_url, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)
    assert max(Counter(claimed).values()) == 1
