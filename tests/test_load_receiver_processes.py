"""Several receiver processes on one port (``dicom.receiver_processes``), under concurrent senders.

DCMTK storescu processes are the modalities. Checked: every image acknowledged by any process is
stored (rows, spool file, job) and announced to the node's job backend; ``/metrics`` of the node
counts the children's C-STOREs; a child killed mid-push loses nothing it acknowledged and is
started again; a node killed with SIGKILL leaves no child listening on its port.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from cdss.db import Instance, Job
from cdss.metrics import INSTANCES_RECEIVED
from tests.dicom_factory import make_image, write
from tests.node_process import NodeProcess, storescu
from tests.receive_support import count, run_node, spool_files

pytestmark = pytest.mark.integration


def _images(tmp_path: Path, senders: int, per_sender: int, rows: int = 256) -> list[list[Path]]:
    return [
        [
            write(
                make_image(rows=rows, columns=rows, bits=16, seed=1000 * s + i),
                tmp_path / f"s{s}" / f"{i}.dcm",
            )
            for i in range(per_sender)
        ]
        for s in range(senders)
    ]


def _success_count() -> float:
    return INSTANCES_RECEIVED.labels("success")._value.get()


def test_concurrent_senders_over_two_processes_store_everything_once(tmp_path: Path, db_url: str) -> None:
    batches = _images(tmp_path, senders=6, per_sender=4)
    before = _success_count()
    with run_node(tmp_path, db_url, dicom={"receiver_processes": 2}) as node:
        assert node.receiver.processes == 2
        with ThreadPoolExecutor(len(batches)) as pool:
            reports = list(
                pool.map(lambda i: storescu(batches[i], node.port, aet=f"MOD{i}"), range(len(batches)))
            )
        for r in reports:
            assert r.failed == [], r.output[-2000:]
        total = sum(len(b) for b in batches)
        assert count(node, Instance) == total and count(node, Job) == total
        assert len(spool_files(node)) == total
        # The children's jobs reached the node's callback (through the queue) before stop() returned.
        deadline = time.monotonic() + 30
        while len(set(node.jobs)) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        with node.db.session() as s:
            job_ids = set(s.execute(select(Job.id)).scalars())
        assert set(node.jobs) == job_ids
    assert _success_count() - before == total  # counted in this process, whoever answered


def test_a_child_killed_mid_push_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    batches = _images(tmp_path, senders=4, per_sender=10, rows=1024)
    uid_of = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for b in batches for f in b}
    with run_node(tmp_path, dicom={"receiver_processes": 2}) as node:
        pool = node.receiver._pool
        assert pool is not None
        (child,) = pool.pids()
        total = len(uid_of)
        stored_at_kill: list[int] = []

        def kill_mid_push() -> None:
            # Kill on evidence that the push is under way (a few images stored), not after a fixed
            # delay: on a fast machine the whole push can end before any timer fires.
            deadline = time.monotonic() + 60
            while count(node, Instance) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            stored_at_kill.append(count(node, Instance))
            os.kill(child, signal.SIGKILL)

        killer = threading.Thread(target=kill_mid_push)
        killer.start()
        with ThreadPoolExecutor(len(batches)) as ex:
            reports = list(ex.map(lambda i: storescu(batches[i], node.port, aet=f"MOD{i}"), range(4)))
        killer.join()
        assert stored_at_kill and stored_at_kill[0] < total, "the child was not killed mid-push"
        acknowledged = {uid_of[f] for r in reports for f in r.acknowledged}
        with node.db.session() as s:
            stored = set(s.execute(select(Instance.sop_instance_uid)).scalars())
        assert acknowledged <= stored
        # The supervisor starts the child again; the modalities re-send what was not acknowledged.
        deadline = time.monotonic() + 60
        while (node.receiver.processes < 2 or child in pool.pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.receiver.processes == 2 and child not in pool.pids()
        for r in reports:
            if r.failed:
                again = storescu(r.failed, node.port)
                assert again.failed == [], again.output[-2000:]
        with node.db.session() as s:
            stored = set(s.execute(select(Instance.sop_instance_uid)).scalars())
        assert stored == set(uid_of.values())
        with node.db.session() as s:
            rows = s.execute(select(Instance.spool_key, Instance.sha256)).all()
        for key, sha in rows:  # every acknowledged file is whole (a killed write leaves only a temp file)
            assert hashlib.sha256(node.spool.read(key)).hexdigest() == sha


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_children_do_not_outlive_a_killed_node(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node",
        extra={"dicom": {"receiver_processes": 3}, "jobs": {"workers": 0}, "api": {"enabled": False}},
    )
    node.start()
    assert "receiver processes listening" in node.log()
    node.kill()  # SIGKILL: no shutdown code runs in the node
    deadline = time.monotonic() + 30
    while _accepts(node.dicom_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _accepts(node.dicom_port), f"a receiver process outlived its node:\n{node.log()[-4000:]}"
    # A restarted node gets the port to itself again.
    node.start()
    r = storescu(_images(tmp_path, 1, 2)[0], node.dicom_port)
    assert r.failed == [], r.output[-2000:]
    node.stop()
