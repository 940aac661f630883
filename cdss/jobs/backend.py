"""Job backends: who runs the jobs that the receiver queued.

Both backends take their work from the database (the source of truth, DESIGN.md invariant 3):

``local`` (default)
    ``jobs.workers`` threads inside ``cdss serve`` claim due jobs from the database, up to
    ``jobs.batch_size`` at a time (analysed with one batched model call per analysis).
    :meth:`LocalBackend.submit` only wakes an idle worker; a job that was never submitted
    (e.g. queued before a crash) is found by polling every ``jobs.poll_interval_s``.
``celery``
    ``cdss serve`` publishes job ids to RabbitMQ (or Redis); ``cdss worker`` processes consume
    them with late acknowledgement and claim the job in the database before working on it, so
    duplicate or stale messages are harmless. See :mod:`cdss.jobs.celery_backend`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from cdss.config import JobBackend as BackendName
from cdss.config import JobSettings
from cdss.db import Database
from cdss.jobs.celery_backend import CeleryBackend
from cdss.jobs.runner import Heartbeat, JobProcessor, JobRunner
from cdss.logs import exception_frames, get_logger

__all__ = ["JobBackend", "LocalBackend", "create_backend"]

log = get_logger(__name__)


@runtime_checkable
class JobBackend(Protocol):
    """What the node needs from a job backend."""

    name: str

    def submit(self, job_id: int) -> None:
        """Tell the backend a job is ready (called after the job's transaction committed). Never raises."""

    def submit_many(self, job_ids: Iterable[int]) -> None:
        """Submit several jobs (start-up resume, reconciler)."""

    def start(self) -> None:
        """Start consuming/publishing."""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop; running jobs get ``timeout`` seconds to finish (unfinished ones are resumed later)."""


class LocalBackend:
    """In-process worker threads.

    Parameters
    ----------
    db
        The node database.
    settings
        ``[jobs]``; ``workers`` threads are started (0 = none: this node only receives).
    processor
        The pipeline; shared by all threads (it must be thread-safe; models load once).
    prepare
        Run once, by the first worker thread, before any job (e.g. loading the models).
    """

    name = "local"

    def __init__(
        self,
        db: Database,
        settings: JobSettings,
        processor: JobProcessor,
        *,
        prepare: Callable[[], None] | None = None,
    ):
        self.db = db
        self.settings = settings
        self.processor = processor
        self._prepare = prepare
        self._prepared = threading.Event()
        self._prepare_lock = threading.Lock()
        self._wake = threading.Condition()
        self._signals = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._heartbeat = Heartbeat(db, settings.lease_s)
        self.runners: list[JobRunner] = []

    def submit(self, job_id: int) -> None:
        with self._wake:
            self._signals += 1
            self._wake.notify()

    def submit_many(self, job_ids: Iterable[int]) -> None:
        n = len(list(job_ids))
        if n:
            with self._wake:
                self._signals += n
                self._wake.notify_all()

    def start(self) -> None:
        self._stopping.clear()
        for i in range(self.settings.workers):
            runner = JobRunner(
                self.db, self.settings, self.processor, role="worker", heartbeat=self._heartbeat
            )
            self.runners.append(runner)
            t = threading.Thread(target=self._loop, args=(runner,), name=f"cdss-worker-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=timeout)
            if t.is_alive():
                log.warning("worker still busy at shutdown; its job resumes on the next start", thread=t.name)
        self._heartbeat.stop()
        self._threads.clear()

    def alive(self) -> int:
        """Number of worker threads running."""
        return sum(t.is_alive() for t in self._threads)

    @property
    def busy(self) -> bool:
        """True while a worker thread is alive (for tests and shutdown messages)."""
        return any(t.is_alive() for t in self._threads)

    def _ensure_prepared(self) -> None:
        if self._prepare is None or self._prepared.is_set():
            return
        with self._prepare_lock:
            if self._prepared.is_set():
                return
            try:
                self._prepare()
            finally:  # a failed warm-up is retried by the job itself (models load lazily)
                self._prepared.set()

    def _loop(self, runner: JobRunner) -> None:
        poll = self.settings.poll_interval_s
        try:
            self._ensure_prepared()
        except Exception as exc:
            log.error(  # model loading errors carry no patient data: the message helps the operator
                "model warm-up failed; jobs will load models on demand",
                error=f"{type(exc).__name__}: {exc}",
                where=exception_frames(exc),
            )
        while not self._stopping.is_set():
            try:
                outcomes = runner.run_batch(self._stopping)
            except Exception as exc:  # database unavailable, etc.: keep the thread alive
                log.error(
                    "worker could not claim a job", error_type=type(exc).__name__, where=exception_frames(exc)
                )
                self._stopping.wait(min(30.0, poll * 10))
                continue
            if outcomes:
                continue
            with self._wake:
                if self._signals == 0 and not self._stopping.is_set():
                    self._wake.wait(timeout=poll)
                self._signals = max(0, self._signals - 1)


def create_backend(
    settings: JobSettings,
    db: Database,
    processor: JobProcessor | None,
    *,
    prepare: Callable[[], None] | None = None,
) -> JobBackend:
    """Build the backend named by ``settings.backend``.

    For ``celery`` the processor is not used in this process (``cdss worker`` processes run
    the pipeline); ``cdss serve`` only publishes.
    """
    if settings.backend == BackendName.CELERY:
        return CeleryBackend(settings, db)
    if processor is None and settings.workers > 0:
        raise ValueError("the local job backend needs a processor (the pipeline) when jobs.workers > 0")
    return LocalBackend(db, settings, processor or _no_processor, prepare=prepare)


def _no_processor(job: object) -> None:  # jobs.workers = 0: this node only receives
    raise RuntimeError("this node runs no analysis workers (jobs.workers = 0)")
