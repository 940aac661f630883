"""The ``celery`` job backend: RabbitMQ (or Redis) carries job ids, the database holds the state.

Design (DESIGN.md invariant 3, "Scale-out"):

* A message is only a job id. The worker claims the job in the database (lease, attempts) before
  working, so a duplicate, stale or re-delivered message does nothing.
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after the task
  returned; if the worker process dies the broker re-delivers it. If the message is lost anyway
  (crash between the database commit and the publish, a purged queue), the node's sweeper
  publishes every queued job that nobody picked up for ``jobs.republish_after_s`` again.
* Retries: a failed attempt puts the job back to ``queued`` with a back-off in the database;
  the task publishes the id again with that countdown (short delays) or leaves it to the
  sweeper (delays longer than ``republish_after_s``, which broker-held ETA messages would
  not survive well).
* Publisher confirms are on, so ``submit`` returns only once the broker has the message.

``cdss worker`` calls :func:`run_worker`; the pipeline is built in each worker process by the
factory given to :func:`configure_worker` (models load once per worker process).
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import update

from cdss.config import JobSettings
from cdss.db import Database, Job, JobState, utcnow
from cdss.jobs.runner import Heartbeat, JobProcessor, JobRunner, RunStatus
from cdss.jobs.states import queued_job_ids
from cdss.logs import get_logger
from cdss.metrics import BROKER_PUBLISH_FAILURES, BROKER_UP

__all__ = [
    "TASK_NAME",
    "CeleryBackend",
    "WorkerContext",
    "configure_worker",
    "make_celery_app",
    "republish_stale",
    "run_worker",
]

log = get_logger(__name__)

TASK_NAME = "cdss.jobs.process"


@dataclass
class WorkerContext:
    """What a Celery worker process needs to run jobs."""

    db: Database
    settings: JobSettings
    processor: JobProcessor
    prepare: Callable[[], None] | None = None


class _WorkerState:
    def __init__(self) -> None:
        self.factory: Callable[[], WorkerContext] | None = None
        self.context: WorkerContext | None = None
        self.heartbeat: Heartbeat | None = None
        self.lock = threading.Lock()
        self.local = threading.local()

    def runner(self) -> JobRunner:
        runner = getattr(self.local, "runner", None)
        if runner is not None:
            return runner
        with self.lock:
            if self.context is None:
                if self.factory is None:
                    raise RuntimeError(
                        "this Celery worker has no job context; start it with `cdss worker` "
                        "(or call cdss.jobs.celery_backend.configure_worker first)"
                    )
                ctx = self.factory()
                if ctx.prepare is not None:
                    try:
                        ctx.prepare()
                    except Exception as exc:
                        log.error("model warm-up failed; jobs load models on demand", error=str(exc))
                self.context = ctx
                self.heartbeat = Heartbeat(ctx.db, ctx.settings.lease_s)
            ctx = self.context
            assert self.heartbeat is not None
        runner = JobRunner(ctx.db, ctx.settings, ctx.processor, role="celery", heartbeat=self.heartbeat)
        self.local.runner = runner
        return runner

    def reset(self) -> None:
        with self.lock:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.context = None
            self.heartbeat = None
            self.local = threading.local()


_STATE = _WorkerState()


def configure_worker(factory: Callable[[], WorkerContext] | None) -> None:
    """Set how worker processes build their context (database, pipeline); ``None`` resets it.

    The factory runs lazily in the process that executes the first task (after a prefork
    fork), once per process.
    """
    _STATE.reset()
    _STATE.factory = factory


def _process(task: Any, job_id: int) -> str:
    runner = _STATE.runner()
    # The message names one job; the database lends up to jobs.batch_size - 1 more due jobs to
    # analyse with it (their own messages then find them taken, which is harmless).
    outcomes = runner.run_job_batch(int(job_id))
    settings = runner.settings
    for outcome in outcomes:
        if outcome.status in (RunStatus.FAILED, RunStatus.NOT_DUE, RunStatus.DEFERRED) and (
            outcome.retry_in_s is not None and outcome.retry_in_s <= settings.republish_after_s
        ):
            task.app.send_task(
                TASK_NAME, args=[outcome.job_id], countdown=outcome.retry_in_s, queue=settings.celery_queue
            )
    return outcomes[0].status.value


def make_celery_app(settings: JobSettings) -> Celery:
    """A Celery app for ``settings.broker_url`` with the job task registered (publisher or worker)."""
    app = Celery("cdss", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    app.task(name=TASK_NAME, bind=True, ignore_result=True)(_process)
    return app


def republish_stale(db: Database, publish: Callable[[int], None], older_than_s: float) -> list[int]:
    """Publish again every queued, due job not touched for ``older_than_s`` seconds.

    Touches ``updated_at`` so that each job is republished at most once per period.
    """
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=older_than_s)
    with db.session() as session:
        ids = list(
            session.execute(
                update(Job)
                .where(Job.state == JobState.QUEUED, Job.next_run_at <= now, Job.updated_at < cutoff)
                .values(updated_at=now)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).scalars()
        )
    for job_id in sorted(ids):
        publish(job_id)
    return ids


class CeleryBackend:
    """Publishes job ids to the broker (the node side of the ``celery`` backend).

    :meth:`submit` only enqueues the id for a publisher thread, so a slow or unreachable broker
    never delays a C-STORE response; :meth:`publish` sends synchronously (CLI, tests). An id
    that could not be published (broker down, process crash) is published again by the
    sweeper after ``jobs.republish_after_s``.
    """

    name = "celery"

    def __init__(self, settings: JobSettings, db: Database, app: Celery | None = None):
        self.settings = settings
        self.db = db
        self.app = app or make_celery_app(settings)
        self._stop = threading.Event()
        self._outbox: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._broker: tuple[bool, str] | None = None  # (reachable, detail) at the last publish/probe
        self._broker_lock = threading.Lock()

    def _set_broker(self, ok: bool, detail: str) -> None:
        with self._broker_lock:
            changed = self._broker is None or self._broker[0] != ok
            self._broker = (ok, detail)
        BROKER_UP.set(1 if ok else 0)
        if changed:
            (log.info if ok else log.error)("broker reachable" if ok else "broker unreachable", detail=detail)

    def broker_status(self) -> tuple[bool, str]:
        """Whether the broker was reachable at the last publish or probe, and why not (``/readyz``)."""
        with self._broker_lock:
            status = self._broker
        return status if status is not None else (True, "not contacted yet")

    def probe(self) -> bool:
        """Connect to the broker once (short timeout) and record the result."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            self._set_broker(True, "broker reachable")
            return True
        except Exception as exc:
            self._set_broker(False, f"broker unreachable ({type(exc).__name__})")
            return False

    def publish(self, job_id: int) -> bool:
        """Send one job id to the broker now; ``False`` (logged) when the broker is unreachable."""
        try:
            self.app.send_task(
                TASK_NAME,
                args=[int(job_id)],
                queue=self.settings.celery_queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            )
            self._set_broker(True, "last publish succeeded")
            return True
        except Exception as exc:  # broker down: the sweeper publishes it later
            BROKER_PUBLISH_FAILURES.inc()
            self._set_broker(False, f"publish failed ({type(exc).__name__})")
            log.error(
                "could not publish job to the broker; it will be republished",
                job_id=job_id,
                error=str(exc),
                retry_in_s=self.settings.republish_after_s,
            )
            return False

    def submit(self, job_id: int) -> None:
        self._outbox.put(int(job_id))

    def submit_many(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.submit(job_id)

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._publisher, name="cdss-celery-publisher", daemon=True),
            threading.Thread(target=self._sweep, name="cdss-celery-sweeper", daemon=True),
        ]
        for t in self._threads:
            t.start()
        # Start-up resume: publish every queued job (duplicates of messages still in the broker
        # are harmless: the claim in the database decides).
        self.submit_many(queued_job_ids(self.db))

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._outbox.put(None)
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads = []

    def _publisher(self) -> None:
        while True:
            job_id = self._outbox.get()
            if job_id is None:
                # Drain what is left (best effort; the sweeper covers anything unsent).
                while not self._outbox.empty():
                    pending = self._outbox.get_nowait()
                    if pending is not None:
                        self.publish(pending)
                return
            self.publish(job_id)

    def _sweep(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval_s):
            self.probe()  # keeps /readyz and cdss_broker_up current while nothing is published
            try:
                ids = republish_stale(self.db, self.submit, self.settings.republish_after_s)
                if ids:
                    log.info("republished queued jobs nobody picked up", count=len(ids))
            except Exception as exc:
                log.error("celery sweeper failed", error=str(exc))


def run_worker(
    settings: JobSettings,
    factory: Callable[[], WorkerContext],
    *,
    pool: str = "threads",
    concurrency: int | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in the foreground (``cdss worker``) until it is told to stop."""
    configure_worker(factory)
    app = make_celery_app(settings)
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency or max(1, settings.workers)}",
        f"--queues={settings.celery_queue}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv=argv)
