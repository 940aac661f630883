"""Crash consistency: kill -9 the node while a modality streams images (DESIGN.md invariant 1).

After each crash every instance the modality saw acknowledged (0x0000) must have its instance
row, its queued job, its audit event and a spool file whose SHA-256 matches; and no instance row
may point at a missing file. A restart must then accept the rest of the stream (resent
acknowledged ones are idempotent duplicates).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from cdss.config import StorageSettings
from cdss.db import AuditEvent, Database, Instance, Job, JobState
from cdss.store import Spool
from tests.dicom_factory import make_image, write
from tests.peers import free_port, wait_for_port
from tests.receive_support import dcmtk_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE = textwrap.dedent(
    """
    import sys, time
    from cdss.config import Settings
    from cdss.db import Database
    from cdss.receive import Receiver
    from cdss.store import Spool
    work, port = sys.argv[1], int(sys.argv[2])
    settings = Settings.model_validate({
        "dicom": {"port": port, "bind": "127.0.0.1"},
        "storage": {"path": work + "/spool", "min_free_mb": 1},
        "database": {"url": "sqlite:///" + work + "/cdss.db"},
    })
    receiver = Receiver(settings, Database(settings.database.url), Spool(settings.storage))
    receiver.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)
    """
)


def _start_node(work: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE, str(work), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    wait_for_port("127.0.0.1", port, timeout=60)
    return proc


def _acknowledged(output: str, files: list[Path]) -> list[Path]:
    """Files whose C-STORE-RSP was Success, from ``storescu -v`` output (in sending order)."""
    acked: list[Path] = []
    current: Path | None = None
    by_name = {str(f): f for f in files}
    for line in output.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = by_name.get(m.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked


def test_kill_9_while_receiving_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    files = [
        write(make_image(rows=256, columns=256, seed=i), tmp_path / "images" / f"{i:03d}.dcm")
        for i in range(60)
    ]
    work = tmp_path / "node"
    work.mkdir()
    port = free_port()
    storescu = dcmtk_binary("storescu")
    crashes = 0
    total_acked: set[Path] = set()
    # Kill after a given number of responses in each round (progress, not wall-clock time: on a
    # busy machine a fixed delay lands before the first image or after the last).
    for kill_after in (3, 12, 24, 36, 50):
        node = _start_node(work, port)
        sender = subprocess.Popen(
            [storescu, "-v", "-nh", "-aec", "CDSS", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert sender.stdout is not None
        head: list[str] = []
        responses = 0
        for line in sender.stdout:
            head.append(line)
            if "Received Store Response" in line:
                responses += 1
                if responses >= kill_after:
                    break
        node.send_signal(signal.SIGKILL)
        node.wait()
        rest, _ = sender.communicate(timeout=120)
        output = "".join(head) + (rest or "")
        acked = _acknowledged(output, files)
        total_acked.update(acked)
        if 0 < len(acked) < len(files):
            crashes += 1
        _check_consistency(work, total_acked)
    assert crashes >= 2, "the kill never landed mid-stream; the test proved nothing"
    # After the crashes, a restarted node takes the whole stream; acknowledged ones are duplicates.
    node = _start_node(work, port)
    try:
        proc = subprocess.run(
            [storescu, "-v", "-nh", "-aec", "CDSS", "127.0.0.1", str(port), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert len(_acknowledged(proc.stdout + proc.stderr, files)) == len(files), proc.stdout + proc.stderr
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
    _check_consistency(work, set(files), complete=True)


def _check_consistency(work: Path, acked: set[Path], *, complete: bool = False) -> None:
    db = Database(f"sqlite:///{work / 'cdss.db'}")
    spool = Spool(StorageSettings(path=work / "spool", min_free_mb=0))
    try:
        with db.session() as s:
            instances = {i.sop_instance_uid: i for i in s.execute(select(Instance)).scalars()}
            jobs = {j.instance_id: j for j in s.execute(select(Job)).scalars()}
            audited = {
                (e.detail or {}).get("sop_instance_uid")
                for e in s.execute(select(AuditEvent).where(AuditEvent.outcome == 0)).scalars()
            }
        for f in acked:
            uid = dcmread(f, stop_before_pixels=True).SOPInstanceUID
            inst = instances.get(uid)
            assert inst is not None, f"{f.name} was acknowledged but has no instance row"
            assert spool.verify(inst.spool_key), (
                f"{f.name} was acknowledged but its file is missing or damaged"
            )
            assert inst.id in jobs and jobs[inst.id].state is JobState.QUEUED
            assert uid in audited
        for inst in instances.values():  # no row without its file, acknowledged or not
            assert spool.verify(inst.spool_key)
        if complete:
            assert len(instances) == len(acked) == len(jobs)
    finally:
        db.dispose()
