"""Job backends: local worker threads, and Celery on the real RabbitMQ (DB = source of truth)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cdss.config import JobSettings
from cdss.db import Database, Job, JobState
from cdss.jobs.backend import LocalBackend, create_backend
from cdss.jobs.states import ClaimedJob, finish_job
from tests.jobs_helpers import add_jobs
from tests.peers import require

pytestmark = pytest.mark.integration

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


class Recorder:
    """A job processor that ends each job and remembers who ran what (fails on request)."""

    def __init__(self, db: Database, fail_first: set[int] | None = None):
        self.db = db
        self.calls: Counter[int] = Counter()
        self.fail_first = set(fail_first or ())
        self.lock = threading.Lock()

    def __call__(self, job: ClaimedJob) -> None:
        with self.lock:
            self.calls[job.id] += 1
            fail = job.id in self.fail_first
            self.fail_first.discard(job.id)
        if fail:
            raise RuntimeError(f"planned failure of job {job.id}")
        with self.db.session() as s:
            finish_job(s, job.id, job.owner, JobState.SUCCEEDED, summary={"attempt": job.attempts})


def _states(db: Database) -> dict[int, JobState]:
    with db.session() as s:
        return dict(s.execute(select(Job.id, Job.state)).all())


def _wait_for(db: Database, ids: list[int], states: set[JobState], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _states(db)
        if all(current[i] in states for i in ids):
            return
        time.sleep(0.1)
    raise AssertionError(f"jobs did not reach {states}: {_states(db)}")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_local_backend_runs_every_job_once_with_retries(db: Database) -> None:
    ids = add_jobs(db, 12)
    failing = {ids[0], ids[5]}
    recorder = Recorder(db, fail_first=failing)
    settings = JobSettings(workers=3, poll_interval_s=0.05, retry_backoff_s=0.05, lease_s=30)
    backend = create_backend(settings, db, recorder)
    assert isinstance(backend, LocalBackend)
    prepared = threading.Event()
    backend._prepare = prepared.set  # the warm-up hook runs once, before the first job
    backend.start()
    try:
        backend.submit_many(ids)
        _wait_for(db, ids, {JobState.SUCCEEDED})
    finally:
        backend.stop(timeout=10)
    assert prepared.is_set()
    assert {i: recorder.calls[i] for i in ids} == {i: (2 if i in failing else 1) for i in ids}
    with db.session() as s:
        attempts = dict(s.execute(select(Job.id, Job.attempts)).all())
    assert all(attempts[i] == (2 if i in failing else 1) for i in ids)
    assert not backend.busy


def test_local_backend_finds_jobs_nobody_submitted(db: Database) -> None:
    """Jobs queued before a crash are found by polling the database, not only by submit()."""
    ids = add_jobs(db, 3)
    backend = LocalBackend(db, JobSettings(workers=1, poll_interval_s=0.05), Recorder(db))
    backend.start()
    try:
        _wait_for(db, ids, {JobState.SUCCEEDED})
    finally:
        backend.stop()


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def celery_settings() -> Iterator[JobSettings]:
    require(_rabbitmq_up(), "RabbitMQ on 127.0.0.1:5672", "start rabbitmq-server (guest/guest)")
    settings = JobSettings(
        backend="celery",
        broker_url=BROKER,
        celery_queue=f"cdss.test.{uuid.uuid4().hex[:10]}",
        workers=2,
        lease_s=30,
        retry_backoff_s=0.2,
        republish_after_s=60,
        reconcile_interval_s=0.2,
    )
    yield settings
    from cdss.jobs.celery_backend import make_celery_app

    app = make_celery_app(settings)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(settings.celery_queue)


def test_celery_backend_on_rabbitmq(db: Database, celery_settings: JobSettings, tmp_path: Path) -> None:
    from celery.contrib.testing.worker import start_worker

    from cdss.jobs.celery_backend import (
        CeleryBackend,
        WorkerContext,
        configure_worker,
        make_celery_app,
        republish_stale,
    )

    ids = add_jobs(db, 6)
    recorder = Recorder(db, fail_first={ids[1]})
    configure_worker(lambda: WorkerContext(db, celery_settings, recorder))
    worker_app = make_celery_app(celery_settings)
    publisher = CeleryBackend(celery_settings, db)
    assert create_backend(celery_settings, db, None).name == "celery"
    try:
        with start_worker(
            worker_app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=20,
        ):
            publisher.start()  # start-up resume: publishes every queued job
            # Duplicate messages (e.g. a redelivery, or the sweeper) do not run a job twice.
            publisher.submit(ids[0])
            publisher.submit(ids[0])
            _wait_for(db, ids, {JobState.SUCCEEDED})
            # A job whose message was lost (crash between commit and publish) is found by the sweeper.
            (orphan,) = add_jobs(db, 1)
            time.sleep(0.05)
            assert republish_stale(db, publisher.submit, older_than_s=0.01) == [orphan]
            _wait_for(db, [orphan], {JobState.SUCCEEDED})
            publisher.stop()
    finally:
        configure_worker(None)
    assert recorder.calls[ids[0]] == 1
    assert recorder.calls[ids[1]] == 2  # failed once, re-published with its back-off, then succeeded
    assert all(recorder.calls[i] == 1 for i in [*ids[2:], orphan])


def test_celery_publish_to_an_unreachable_broker_fails_cleanly(db: Database) -> None:
    """The job stays queued in the database (the sweeper republishes it once the broker is back)."""
    from cdss.jobs.celery_backend import CeleryBackend
    from tests.peers import free_port

    (job_id,) = add_jobs(db, 1)
    settings = JobSettings(backend="celery", broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    backend = CeleryBackend(settings, db)
    assert backend.publish(job_id) is False
    backend.start()  # start-up resume tries to publish the queued job, in its publisher thread
    backend.submit(job_id)
    backend.stop(timeout=10)
    assert _states(db)[job_id] is JobState.QUEUED
