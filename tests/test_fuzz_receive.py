"""Fuzzing the running node's DICOM port (CI-sized; the long run is ``bench/fuzz_receive.py``).

``cdss serve`` runs as a subprocess (SQLite, fsync on). Mutated datasets of the committed fixtures
are sent as raw bytes over real associations, then a recorded association is replayed with one
PDU mutated at a time (``tests/fuzz.py`` explains the mutations and oracles). The run is bounded
in count and time and stops by itself. Checked: the node never dies, answers every dataset with
a documented status (never its internal error), leaves no association open beyond its ACSE
timeout, loses nothing it acknowledged, and still answers C-ECHO and stores a valid image.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cdss.config import StorageSettings
from cdss.db import Instance
from cdss.receive.status import StoreStatus
from cdss.store import Spool
from tests import fuzz
from tests.dicom_factory import make_image, write
from tests.node_process import NodeProcess, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACSE_TIMEOUT_S = 5


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def _echo_soon(port: int, within_s: float) -> bool:
    """C-ECHO succeeds within ``within_s`` (slots held by broken peers free at the ACSE timeout)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if fuzz.echo_ok(port):
            return True
        time.sleep(0.5)
    return False


def test_fuzzed_datasets_and_pdus_get_documented_answers_and_lose_nothing(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node",
        extra={
            "api": {"enabled": False},
            "jobs": {"workers": 0, "max_queue_depth": 10**6},
            "logging": {"level": "WARNING"},
            "route": {"view_classifier": False},
            "dicom": {
                "max_associations": 200,
                "acse_timeout_s": ACSE_TIMEOUT_S,
                "dimse_timeout_s": 10,
                "network_timeout_s": 15,
            },
        },
    )
    node.start()
    assert node.proc is not None
    baseline_threads = _threads(node.proc.pid)
    seeds = fuzz.load_seeds(tmp_path / "seeds")
    report = fuzz.run_dataset_cases(
        node.dicom_port, seeds, count=4000, time_budget_s=75, workdir=tmp_path / "cases", master_seed=1
    )
    pdus = fuzz.record_association(node.dicom_port, tmp_path)
    fuzz.run_pdu_cases(
        node.dicom_port,
        pdus,
        count=8000,
        time_budget_s=60,
        master_seed=1,
        timeout_s=30,
        report=report,
        health=lambda: _echo_soon(node.dicom_port, ACSE_TIMEOUT_S + 10),
    )
    summary = report.summary()
    assert node.proc.poll() is None, f"the node died: {node.log()[-3000:]}"
    assert report.findings == [], (summary, report.findings[:20])
    # The run did real work and reached the node's different answers.
    assert report.dataset_cases >= 1000 and report.pdu_cases >= 1000, summary
    seen = {int(k, 16) for k in report.statuses}
    assert seen <= fuzz.DOCUMENTED, summary
    assert {StoreStatus.SUCCESS, StoreStatus.CANNOT_UNDERSTAND, StoreStatus.MISSING_UID} <= seen, summary
    assert "c_store_internal_error" not in node.log()

    # No association outlives its ACSE timeout: the threads go back to what they were.
    deadline = time.monotonic() + ACSE_TIMEOUT_S + 20
    while _threads(node.proc.pid) > baseline_threads + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _threads(node.proc.pid) <= baseline_threads + 2
    assert fuzz.echo_ok(node.dicom_port)

    # Nothing acknowledged was lost: row, spool file, and exactly the bytes that were sent.
    db = node.database()
    try:
        with db.session() as s:
            rows = {
                uid: (key, sha)
                for uid, key, sha in s.execute(
                    select(Instance.sop_instance_uid, Instance.spool_key, Instance.sha256)
                ).all()
            }
    finally:
        db.dispose()
    spool = Spool(StorageSettings(path=node.workdir / "var" / "spool", min_free_mb=0))
    assert fuzz.check_acknowledged(report, rows, spool.read) == []

    # And a modality's ordinary image is still stored.
    ok = storescu([write(make_image(seed=4242), tmp_path / "after.dcm")], node.dicom_port)
    assert ok.failed == [], ok.output[-2000:]
    assert node.stop() == 0
