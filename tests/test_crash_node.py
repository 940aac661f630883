"""Crash test: SIGKILL the node while a modality pushes images; after a restart every acknowledged
image gets its results in the PACS exactly once (nothing lost, nothing duplicated)."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from cdss.db import Delivery, DeliveryState, Instance, Job, JobState, Result
from tests.node_process import NodeProcess, StorescuReport, require_models, storescu, synthetic_images
from tests.peers import Orthanc, referenced_uids

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.integration]

IMAGES = 48


def _received(db_file: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT count(*) FROM instances").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_during_push_loses_and_duplicates_nothing(tmp_path: Path, orthanc: Orthanc) -> None:
    require_models("lumbar")
    # Lumbar views only: a lumbar result set (SR + GSPS, SEG when vertebrae are found) is produced
    # for every image whatever the model finds, so the test judges the node, not the model.
    kinds = [("lumbar_lateral", i) for i in range(IMAGES)]
    files = synthetic_images(tmp_path / "modality", kinds, max_side=320)
    uid_of = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    node = NodeProcess(
        tmp_path / "node",
        destinations=[orthanc.destination()],
    )
    node.start()

    # Push everything in the background and kill the node once part of it has been stored.
    result: dict[str, StorescuReport] = {}
    pusher = threading.Thread(
        target=lambda: result.setdefault("r", storescu(files, node.dicom_port, timeout=300))
    )
    pusher.start()
    db_file = node.workdir / "var" / "cdss.db"
    deadline = time.monotonic() + 120
    while _received(db_file) < IMAGES // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    node.kill()
    pusher.join(timeout=300)
    first = result["r"]
    acknowledged = {uid_of[f] for f in first.acknowledged}
    assert 0 < len(acknowledged) < IMAGES, f"the kill did not land during the push:\n{first.output[-2000:]}"

    # Restart; the modality sends what was not acknowledged again (as a real one would).
    node.start()
    second = storescu(first.failed, node.dicom_port, timeout=300)
    assert second.failed == [], second.output[-2000:]

    # Wait until every job has finished and every delivery has been made.
    db = node.database()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with db.session() as s:
                states = Counter(s.execute(select(Job.state)).scalars())
                undelivered = s.execute(
                    select(Result.id).where(Result.deliveries.any(Delivery.state != DeliveryState.DELIVERED))
                ).first()
            if states[JobState.QUEUED] == states[JobState.RUNNING] == 0 and undelivered is None:
                break
            time.sleep(1)
        with db.session() as s:
            jobs = s.execute(select(Instance.sop_instance_uid, Job.state, Job.id).join(Job)).all()
            results = s.execute(select(Result.sop_instance_uid, Result.job_id)).all()
    finally:
        db.dispose()
    node.stop()

    # Every image (acknowledged in the first push, or in the second) has exactly one job, which succeeded.
    per_image = Counter(uid for uid, _, _ in jobs)
    assert set(per_image) == set(uid_of.values()) and max(per_image.values()) == 1
    assert {state for _, state, _ in jobs} == {JobState.SUCCEEDED}, Counter(state for _, state, _ in jobs)

    # The PACS holds exactly the committed results: no lost, no extra, no duplicate per source and kind.
    objects = [dcmread(io.BytesIO(orthanc.file(i)), stop_before_pixels=True) for i in orthanc.instances()]
    assert sorted(str(o.SOPInstanceUID) for o in objects) == sorted(uid for uid, _ in results)
    kinds_per_source: Counter[tuple[str, str]] = Counter()
    for o in objects:
        refs = referenced_uids(o) & set(uid_of.values())
        assert len(refs) == 1
        kinds_per_source[(refs.pop(), str(o.Modality))] += 1
    assert max(kinds_per_source.values()) == 1
    for uid in acknowledged:
        assert (uid, "SR") in kinds_per_source and (uid, "PR") in kinds_per_source, uid
