"""Running jobs under a lease: claim → heartbeat → process → fail/retry.

The same :class:`JobRunner` is used by the local backend (one runner per worker thread) and by
Celery workers (one runner per worker thread/process), so analysis and encoding never know
which backend runs them.

Batches (``jobs.batch_size`` > 1): :meth:`JobRunner.run_batch` claims up to that many due jobs
in one transaction (each with its own lease and attempt) and hands them to a
:class:`BatchJobProcessor`, which analyses them with one model call per analysis and then ends
each job in its own transaction. Every job is then settled on its own, exactly as a single job
is: a failure of one (an exception reported for it) is a failed attempt of that job only; a lost
lease discards that job's work only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cdss.config import JobSettings
from cdss.db import Database, JobState, utcnow
from cdss.jobs.states import (
    ClaimedJob,
    LeaseLost,
    claim_job,
    claim_many,
    claim_next,
    extend_lease,
    fail_job,
    job_next_run_at,
)
from cdss.leases import new_owner
from cdss.logs import exception_frames, get_logger
from cdss.metrics import JOBS_FINISHED

__all__ = ["BatchJobProcessor", "Heartbeat", "JobProcessor", "JobRunner", "RunOutcome", "RunStatus"]

log = get_logger(__name__)

#: Processes a claimed job. It must end the job (``finish_job`` / ``defer_job``) or raise; an
#: exception counts as a failed attempt (retry with back-off, then dead).
JobProcessor = Callable[[ClaimedJob], None]


@runtime_checkable
class BatchJobProcessor(Protocol):
    """A job processor that can also process several claimed jobs together (batched analysis)."""

    def __call__(self, job: ClaimedJob) -> None: ...

    def process_many(self, jobs: list[ClaimedJob]) -> Mapping[int, BaseException | None]:
        """Process every job to its end (or defer it); return, per job id, the exception that
        ended its attempt (``None``: the processor ended the job). Must not raise for one job."""
        ...


class RunStatus(StrEnum):
    DONE = "done"  # the processor ended the job
    FAILED = "failed"  # an attempt failed; the job is queued again or dead
    LOST = "lost"  # the lease was lost while working; the work was discarded
    NOT_CLAIMABLE = "not_claimable"  # (run_job) the job is finished, running elsewhere or unknown
    NOT_DUE = "not_due"  # (run_job) queued, but its next attempt is later
    DEFERRED = "deferred"  # the processor put the job back in the queue until later (no attempt used)


@dataclass(frozen=True)
class RunOutcome:
    status: RunStatus
    job_id: int
    retry_in_s: float | None = None  # when a re-publish is needed (Celery): seconds from now


class Heartbeat:
    """Extends the leases of the jobs a runner is working on, every ``lease_s / 3`` seconds."""

    def __init__(self, db: Database, lease_s: float, extend: Callable[..., bool] = extend_lease):
        self._db = db
        self._lease_s = lease_s
        self._extend = extend
        self._active: dict[int, str] = {}
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job_id: int, owner: str) -> None:
        with self._lock:
            self._active[job_id] = owner
            self._lost.discard(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="cdss-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, job_id: int) -> None:
        with self._lock:
            self._active.pop(job_id, None)

    def lost(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._lost

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = max(0.05, self._lease_s / 3)
        while not self._stop.wait(interval):
            with self._lock:
                items = list(self._active.items())
            for job_id, owner in items:
                try:
                    ok = self._extend(self._db, job_id, owner, self._lease_s)
                except Exception as exc:  # database briefly unavailable: try again next beat
                    log.warning("lease heartbeat failed", job_id=job_id, error=str(exc))
                    continue
                if not ok:
                    with self._lock:
                        if job_id in self._active:
                            self._lost.add(job_id)
                    log.warning("job lease lost", job_id=job_id)


class JobRunner:
    """Claims and runs jobs for one worker (one lease owner).

    Parameters
    ----------
    db
        The node database.
    settings
        ``[jobs]`` settings (lease length, back-off).
    processor
        The pipeline, e.g. ``lambda job: process_job(job, ctx)``.
    role
        Word used in the lease owner id (``worker``, ``celery``).
    """

    def __init__(
        self,
        db: Database,
        settings: JobSettings,
        processor: JobProcessor,
        *,
        role: str = "worker",
        heartbeat: Heartbeat | None = None,
    ):
        self.db = db
        self.settings = settings
        self.processor = processor
        self.owner = new_owner(role)
        self.heartbeat = heartbeat or Heartbeat(db, settings.lease_s)
        self._own_heartbeat = heartbeat is None

    @property
    def batch_size(self) -> int:
        """Jobs run together: ``jobs.batch_size`` when the processor can batch, else 1.

        ``jobs.batch_size = 0`` (auto) asks the processor (``auto_batch_size``: 8 on a GPU, 1 on
        the CPU).
        """
        if not isinstance(self.processor, BatchJobProcessor):
            return 1
        configured = int(getattr(self.settings, "batch_size", 1))
        if configured > 0:
            return configured
        return max(1, int(getattr(self.processor, "auto_batch_size", 1)))

    def run_next(self) -> RunOutcome | None:
        """Claim the oldest due job and run it; ``None`` when nothing is due."""
        job = claim_next(self.db, self.owner, self.settings.lease_s)
        if job is None:
            return None
        return self._run(job)

    def run_batch(self, stop: threading.Event | None = None) -> list[RunOutcome]:
        """Claim up to :attr:`batch_size` due jobs and run them together; ``[]`` when nothing is due.

        When fewer than ``batch_size`` are due, waits up to ``jobs.batch_wait_s`` for more
        (returns early when ``stop`` is set).
        """
        size = self.batch_size
        if size == 1:
            outcome = self.run_next()
            return [] if outcome is None else [outcome]
        jobs = claim_many(self.db, self.owner, self.settings.lease_s, size)
        if not jobs:
            return []
        for job in jobs:
            self.heartbeat.add(job.id, self.owner)
        wait = float(getattr(self.settings, "batch_wait_s", 0.0))
        deadline = time.monotonic() + wait
        while len(jobs) < size and time.monotonic() < deadline and not (stop and stop.is_set()):
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            more = claim_many(self.db, self.owner, self.settings.lease_s, size - len(jobs))
            for job in more:
                self.heartbeat.add(job.id, self.owner)
            jobs.extend(more)
        return self._run_many(jobs)

    def run_job(self, job_id: int) -> RunOutcome:
        """Claim the job ``job_id`` (when queued and due) and run it."""
        return self.run_job_batch(job_id, extra=0)[0]

    def run_job_batch(self, job_id: int, extra: int | None = None) -> list[RunOutcome]:
        """Claim ``job_id`` and up to ``extra`` other due jobs (default ``batch_size - 1``); run them.

        The Celery entry point: the message names one job, the database lends the batch (the
        other jobs' own messages then find them not claimable, which is harmless). The first
        outcome is ``job_id``'s.
        """
        job = claim_job(self.db, job_id, self.owner, self.settings.lease_s)
        if job is None:
            info = job_next_run_at(self.db, job_id)
            if info is not None and info[0] is JobState.QUEUED:
                wait = (info[1] - utcnow()).total_seconds()
                return [RunOutcome(RunStatus.NOT_DUE, job_id, retry_in_s=max(0.0, wait))]
            return [RunOutcome(RunStatus.NOT_CLAIMABLE, job_id)]
        extra = self.batch_size - 1 if extra is None else max(0, extra)
        if extra == 0:
            return [self._run(job)]
        self.heartbeat.add(job.id, self.owner)
        jobs = [job, *claim_many(self.db, self.owner, self.settings.lease_s, extra)]
        return self._run_many(jobs)

    def close(self) -> None:
        if self._own_heartbeat:
            self.heartbeat.stop()

    def _run(self, job: ClaimedJob) -> RunOutcome:
        self.heartbeat.add(job.id, self.owner)
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.processor(job)
        except Exception as exc:
            error = exc
        finally:
            self.heartbeat.remove(job.id)
        log.debug("job attempt ended", job_id=job.id, seconds=round(time.monotonic() - started, 3))
        return self._settle(job, error)

    def _run_many(self, jobs: list[ClaimedJob]) -> list[RunOutcome]:
        """Run claimed jobs (already on the heartbeat) as one batch, then settle each on its own."""
        processor = self.processor
        assert isinstance(processor, BatchJobProcessor)
        started = time.monotonic()
        try:
            errors: Mapping[int, BaseException | None] = processor.process_many(jobs)
        except Exception as exc:  # the batch as a whole broke (e.g. database down): every job failed
            errors = dict.fromkeys((j.id for j in jobs), exc)
        finally:
            for job in jobs:
                self.heartbeat.remove(job.id)
        log.debug("job batch ended", jobs=[j.id for j in jobs], seconds=round(time.monotonic() - started, 3))
        return [self._settle(job, errors.get(job.id)) for job in jobs]

    def _settle(self, job: ClaimedJob, error: BaseException | None) -> RunOutcome:
        """Record how a job's attempt ended: lost lease, failed attempt, deferred or done."""
        if isinstance(error, LeaseLost):
            log.warning("job lease lost; results discarded", job_id=job.id, error=str(error))
            return RunOutcome(RunStatus.LOST, job.id)
        if error is not None:
            exc = error
            error_text = f"{type(exc).__name__}: {exc}"
            log.error(
                "job attempt failed",
                job_id=job.id,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                error_type=type(exc).__name__,
                where=exception_frames(exc),
            )
            result = fail_job(
                self.db,
                job.id,
                self.owner,
                error_text,
                backoff_s=self.settings.retry_backoff_s,
                final=bool(getattr(exc, "final", False)),
            )
            if result is None:
                return RunOutcome(RunStatus.LOST, job.id)
            outcome = "dead" if result.state is JobState.DEAD else "retry"
            JOBS_FINISHED.labels(analysis=result.analysis or "unrouted", outcome=outcome).inc()
            retry_in = None
            if result.next_run_at is not None:
                retry_in = max(0.0, (result.next_run_at - utcnow()).total_seconds())
            return RunOutcome(RunStatus.FAILED, job.id, retry_in_s=retry_in)
        info = job_next_run_at(self.db, job.id)
        if info is not None and info[0] is JobState.QUEUED:
            return RunOutcome(
                RunStatus.DEFERRED, job.id, retry_in_s=max(0.0, (info[1] - utcnow()).total_seconds())
            )
        if info is not None and info[0] is JobState.RUNNING:
            # The processor returned without ending the job: a bug; count it as a failed attempt.
            result = fail_job(
                self.db,
                job.id,
                self.owner,
                "the pipeline returned without finishing the job",
                backoff_s=self.settings.retry_backoff_s,
            )
            if result is not None:
                return RunOutcome(RunStatus.FAILED, job.id)
        return RunOutcome(RunStatus.DONE, job.id)
