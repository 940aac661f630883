"""The waking association reactors (``dicom.reactor = "waking"``, cdss.receive.reactors).

The rest of the receive suite runs with the default (waking) reactors; this file checks what is
specific to them: the copied pynetdicom loops are still those of the installed release, both
reactor kinds store and echo, an association that sat idle is still served, the network idle
timeout still ends an association, and ended associations give back their threads and file
descriptors (the wake-up socket pair).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
import time
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from cdss.receive.reactors import COPIED_LOOP_DIGESTS, PYNETDICOM_VERSION, WakingAssociation
from tests.dicom_factory import DX_PRESENTATION, make_image, write
from tests.receive_support import Node, echoscu, run_node, storescu


def _source_digest(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()  # type: ignore[arg-type]


def test_copied_loops_are_those_of_the_installed_pynetdicom() -> None:
    installed = {
        "DULServiceProvider.run_reactor": _source_digest(DULServiceProvider.run_reactor),
        "Association._run_reactor": _source_digest(Association._run_reactor),
    }
    assert installed == COPIED_LOOP_DIGESTS, (
        f"pynetdicom {pynetdicom.__version__} changed its reactor loops (copied from {PYNETDICOM_VERSION}): "
        "bring cdss/receive/reactors.py up to date with them, then update COPIED_LOOP_DIGESTS"
    )


def _images(tmp_path: Path, n: int, seed: int) -> list[Path]:
    return [
        write(
            make_image(DX_PRESENTATION, rows=64, columns=64, seed=seed + i), tmp_path / f"img{seed + i}.dcm"
        )
        for i in range(n)
    ]


def _wait_idle(node: Node, timeout: float = 30.0) -> None:
    server = node.receiver._server
    assert server is not None
    deadline = time.monotonic() + timeout
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.active_associations, "associations still running after their peers left"


@pytest.mark.integration
@pytest.mark.parametrize("reactor", ["waking", "polling"])
def test_both_reactors_store_and_echo(tmp_path: Path, reactor: str) -> None:
    with run_node(tmp_path, dicom={"reactor": reactor}) as node:
        server = node.receiver._server
        assert server is not None
        expected = WakingAssociation if reactor == "waking" else Association
        assert server.association_class is expected
        files = _images(tmp_path, 4, seed=100)
        result = storescu(node, *files)
        assert result.returncode == 0, result.output[-2000:]
        assert result.statuses == [0x0000] * 4
        assert echoscu(node).returncode == 0
        assert len(node.jobs) == 4


@pytest.mark.integration
def test_an_association_that_sat_idle_is_still_served(tmp_path: Path) -> None:
    """Both reactors wait (no polling) while nothing arrives; the next C-STORE wakes them."""
    with run_node(tmp_path) as node:
        files = _images(tmp_path, 2, seed=200)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX_PRESENTATION)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert assoc.is_established
        try:
            statuses = []
            for f in files:
                time.sleep(0.5)  # many reactor wait periods with nothing to do
                rsp = assoc.send_c_store(dcmread(f))
                statuses.append(int(rsp.Status))
            assert statuses == [0x0000, 0x0000]
        finally:
            assoc.release()
        assert assoc.is_released


@pytest.mark.integration
def test_network_idle_timeout_still_ends_an_association(tmp_path: Path) -> None:
    with run_node(tmp_path, dicom={"network_timeout_s": 1.0}) as node:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX_PRESENTATION)
        ae.network_timeout = 60  # our side waits; the node must end it
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert assoc.is_established
        deadline = time.monotonic() + 30
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established, "the node kept an idle association open past network_timeout_s"
        assert assoc.is_aborted
        _wait_idle(node)


@pytest.mark.integration
def test_ended_associations_give_back_threads_and_descriptors(tmp_path: Path) -> None:
    with run_node(tmp_path) as node:
        storescu(node, *_images(tmp_path, 1, seed=300))  # warm-up: database pool, spool folders
        _wait_idle(node)
        fds_before = len(os.listdir("/proc/self/fd"))
        threads_before = threading.active_count()
        for i in range(6):
            result = storescu(node, *_images(tmp_path, 1, seed=310 + i))
            assert result.statuses == [0x0000], result.output[-2000:]
        _wait_idle(node)
        deadline = time.monotonic() + 10
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.05)  # DUL threads finish just after their association thread
        assert threading.active_count() <= threads_before
        assert len(os.listdir("/proc/self/fd")) <= fds_before
