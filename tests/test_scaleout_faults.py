"""Scale-out under faults: ``cdss serve`` (Celery backend, PostgreSQL) with two ``cdss worker``
processes on a private RabbitMQ. During a 100-image push one worker is killed with SIGKILL while
it holds a job, and the broker is stopped and started again. Afterwards every image has exactly
one job and exactly one set of results, in the database and in the PACS (Orthanc); the outage
was visible on ``/readyz`` (503, check ``broker``) and ``/metrics`` (``cdss_broker_up 0``).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

from cdss.db import Delivery, DeliveryState, Instance, Job, JobState, Result
from cdss.leases import LeaseOwner
from tests.broker import run_rabbitmq
from tests.node_process import NodeProcess, StorescuReport, require_models, storescu, synthetic_images
from tests.peers import Orthanc, referenced_uids

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.integration]

IMAGES = 100


def _spawn_worker(node: NodeProcess, name: str) -> subprocess.Popen[bytes]:
    with (node.workdir / f"{name}.log").open("wb") as log:
        return node._spawn("worker", log, "--concurrency", "1", "--hostname", f"{name}@%h")


def _running_owner_pids(db) -> set[int]:
    with db.session() as s:
        owners = s.execute(select(Job.lease_owner).where(Job.state == JobState.RUNNING)).scalars().all()
    pids = set()
    for owner in owners:
        parsed = LeaseOwner.parse(owner or "")
        if parsed is not None:
            pids.add(parsed.pid)
    return pids


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_sigkill_and_broker_restart_lose_and_duplicate_nothing(
    tmp_path: Path, orthanc: Orthanc, postgres_url: str
) -> None:
    require_models("lumbar")
    files = synthetic_images(
        tmp_path / "modality", [("lumbar_lateral", i) for i in range(IMAGES)], max_side=320
    )
    uid_of = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    with run_rabbitmq(tmp_path / "rabbitmq") as broker:
        node = NodeProcess(
            tmp_path / "node",
            database_url=postgres_url,
            destinations=[orthanc.destination()],
            extra={
                "jobs": {
                    "backend": "celery",
                    "broker_url": broker.url,
                    "celery_queue": "cdss.test.scaleout",
                    "republish_after_s": 5.0,
                    "reconcile_interval_s": 1.0,
                    "lease_s": 60.0,
                },
                "api": {"metrics_require_token": False},
                "logging": {"level": "INFO"},
            },
        )
        node.start()
        api = f"http://127.0.0.1:{node.api_port}"
        workers = [_spawn_worker(node, "w1"), _spawn_worker(node, "w2")]
        db = node.database()
        try:
            result: dict[str, StorescuReport] = {}
            pusher = threading.Thread(
                target=lambda: result.setdefault("r", storescu(files, node.dicom_port, timeout=900))
            )
            pusher.start()

            # 1. SIGKILL the first worker while it holds a job.
            victim = workers[0]
            _wait(lambda: victim.pid in _running_owner_pids(db), 600, "worker w1 to run a job", 0.05)
            with db.session() as s:
                held = [
                    j.id
                    for j in s.execute(select(Job).where(Job.state == JobState.RUNNING)).scalars()
                    if (LeaseOwner.parse(j.lease_owner or "") or LeaseOwner("", -1, "", "")).pid == victim.pid
                ]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            assert held

            # 2. The broker goes away: the node says so on /readyz and /metrics; then it comes back.
            broker.stop()
            ready = _wait(
                lambda: (r := httpx.get(f"{api}/readyz", timeout=10)).status_code == 503 and r,
                60,
                "/readyz to report the broker outage",
            )
            assert ready.json()["checks"]["broker"]["ok"] is False
            metrics = httpx.get(f"{api}/metrics", timeout=10).text
            assert "cdss_broker_up 0.0" in metrics
            time.sleep(3)  # images keep arriving during the outage (receiving needs no broker)
            broker.start()
            _wait(
                lambda: httpx.get(f"{api}/readyz", timeout=10).status_code == 200, 120, "/readyz back to 200"
            )
            assert "cdss_broker_up 1.0" in httpx.get(f"{api}/metrics", timeout=10).text

            pusher.join(timeout=900)
            push = result["r"]
            assert push.failed == [], push.output[-2000:]  # receiving never depended on the broker

            # 3. Everything finishes with the surviving worker.
            def finished() -> bool:
                with db.session() as s:
                    states = Counter(s.execute(select(Job.state)).scalars())
                    undelivered = s.execute(
                        select(Result.id).where(
                            Result.deliveries.any(Delivery.state != DeliveryState.DELIVERED)
                        )
                    ).first()
                return (
                    sum(states.values()) == IMAGES
                    and states[JobState.QUEUED] == states[JobState.RUNNING] == 0
                    and undelivered is None
                )

            _wait(finished, 1200, "every job to finish and every result to be delivered", 1.0)
            assert workers[1].poll() is None, (node.workdir / "w2.log").read_text(errors="replace")[-3000:]
            with db.session() as s:
                jobs = s.execute(
                    select(Instance.sop_instance_uid, Job.state, Job.id, Job.attempts).join(Job)
                ).all()
                results = s.execute(select(Result.sop_instance_uid, Result.job_id)).all()
        finally:
            db.dispose()
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
                    try:
                        w.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        w.kill()
            node.stop()

    # Every image: one job, succeeded; the job the killed worker held ran again.
    per_image = Counter(uid for uid, *_ in jobs)
    assert set(per_image) == set(uid_of.values()) and max(per_image.values()) == 1
    assert {state for _, state, _, _ in jobs} == {JobState.SUCCEEDED}, Counter(s for _, s, _, _ in jobs)
    attempts = {job_id: n for _, _, job_id, n in jobs}
    assert all(attempts[j] >= 2 for j in held), {j: attempts[j] for j in held}
    # Exactly one result set per image, in the database and in the PACS.
    kinds_per_job = Counter(job_id for _, job_id in results)
    assert set(kinds_per_job) == set(attempts) and set(kinds_per_job.values()) <= {2, 3}
    objects = [dcmread(io.BytesIO(orthanc.file(i)), stop_before_pixels=True) for i in orthanc.instances()]
    assert sorted(str(o.SOPInstanceUID) for o in objects) == sorted(uid for uid, _ in results)
    per_source_kind: Counter[tuple[str, str]] = Counter()
    for o in objects:
        refs = referenced_uids(o) & set(uid_of.values())
        assert len(refs) == 1
        per_source_kind[(refs.pop(), str(o.Modality))] += 1
    assert max(per_source_kind.values()) == 1
    assert {uid for uid, kind in per_source_kind if kind == "SR"} == set(uid_of.values())
