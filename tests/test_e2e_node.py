"""End to end: ``cdss serve`` as a subprocess, DCMTK storescu as the modality, Orthanc as the PACS.

Runs the real models (the shipped weights); skipped on a laptop without them, failed in CI.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from cdss.db import AuditEvent, Delivery, DeliveryState, Instance, Job, JobState, Result
from tests.node_process import NodeProcess, require_models, storescu, synthetic_images
from tests.peers import Orthanc, referenced_uids

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_lumbar_and_cervical_results_reach_the_pacs_and_non_spine_is_not_applicable(
    pacs_node: NodeProcess, orthanc: Orthanc, tmp_path: Path
) -> None:
    node = pacs_node
    assert f"storescu -aec CDSS 127.0.0.1 {node.dicom_port}" in node.banner
    assert f"pacs: {orthanc.aet}@127.0.0.1:{orthanc.dicom_port}" in node.banner
    files = synthetic_images(
        tmp_path / "modality", [("lumbar_lateral", 0), ("cervical_oblique", 0), ("other", 0)]
    )
    sources = {f.stem: dcmread(f, stop_before_pixels=True) for f in files}
    report = storescu(files, node.dicom_port)
    assert report.returncode == 0 and report.failed == [], report.output

    objects = orthanc.wait_for_objects(5, timeout=240)
    by_source: dict[str, list[Dataset]] = {}
    for ds in objects:
        for name, src in sources.items():
            if str(src.SOPInstanceUID) in referenced_uids(ds):
                assert ds.StudyInstanceUID == src.StudyInstanceUID  # a new series in the source study
                assert ds.SeriesInstanceUID != src.SeriesInstanceUID
                by_source.setdefault(name, []).append(ds)
    assert sorted(str(d.Modality) for d in by_source["lumbar_lateral_000"]) == ["PR", "SEG", "SR"]
    assert sorted(str(d.Modality) for d in by_source["cervical_oblique_000"]) == ["PR", "SR"]
    assert "other_000" not in by_source
    assert len(objects) == 5  # nothing duplicated, nothing unattributed

    db = node.database()
    try:
        with db.session() as s:
            jobs = {
                uid: (state, summary)
                for uid, state, summary in s.execute(
                    select(Instance.sop_instance_uid, Job.state, Job.summary).join(
                        Job, Job.instance_id == Instance.id
                    )
                ).all()
            }
            events = list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
        other_uid = str(sources["other_000"].SOPInstanceUID)
        assert jobs[other_uid][0] is JobState.NOT_APPLICABLE
        na = [e for e in events if e.description.startswith("Analysis not applicable")]
        assert len(na) == 1 and na[0].detail["sop_instance_uid"] == other_uid
        lumbar = jobs[str(sources["lumbar_lateral_000"].SOPInstanceUID)]
        assert lumbar[0] is JobState.SUCCEEDED and "lumbar" in lumbar[1]
        sent = [e for e in events if e.event_id == "110104" and e.action == "R"]
        assert sum(len(e.detail["sop_instance_uids"]) for e in sent) == 5
        assert any(e.event_type == "Application Start" for e in events)
    finally:
        db.dispose()

    health = httpx.get(f"http://127.0.0.1:{node.api_port}/healthz", timeout=10)
    assert health.status_code == 200
    assert node.stop() == 0
    db = node.database()
    try:
        with db.session() as s:
            last = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
        assert last.event_type == "Application Stop"
    finally:
        db.dispose()


@pytest.mark.slow
def test_celery_backend_with_postgresql_and_rabbitmq(
    tmp_path: Path, orthanc: Orthanc, postgres_url: str
) -> None:
    """Scale-out configuration: `cdss serve` publishes, a separate `cdss worker` analyses."""
    import uuid

    from tests.peers import require
    from tests.test_jobs_backends import _rabbitmq_up

    require_models("lumbar")
    require(_rabbitmq_up(), "RabbitMQ on 127.0.0.1:5672", "start rabbitmq-server (guest/guest)")
    queue = f"cdss.e2e.{uuid.uuid4().hex[:8]}"
    node = NodeProcess(
        tmp_path / "node",
        database_url=postgres_url,
        destinations=[orthanc.destination()],
        extra={"jobs": {"backend": "celery", "celery_queue": queue, "workers": 1}},
    )
    banner = node.start()
    assert "backend celery" in banner
    node.start_worker()
    try:
        files = synthetic_images(tmp_path / "modality", [("lumbar_lateral", 7), ("other", 8)])
        report = storescu(files, node.dicom_port)
        assert report.failed == [], report.output
        lumbar = dcmread(files[0], stop_before_pixels=True)
        objects = orthanc.wait_for_objects(2, timeout=300)
        assert all(str(lumbar.SOPInstanceUID) in referenced_uids(o) for o in objects)
        assert {"SR", "PR"} <= {str(o.Modality) for o in objects}
    finally:
        worker_rc = node.stop_worker()
        node.stop()
        from cdss.config import JobSettings
        from cdss.jobs.celery_backend import make_celery_app

        app = make_celery_app(JobSettings(celery_queue=queue))
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    assert worker_rc == 0, node.worker_log()[-3000:]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _analysis_workers(pid: int) -> list[int]:
    """The node's spawned multiprocessing children that run analyses (not its resource tracker)."""
    workers = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmd:
            workers.append(child)
    return workers


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_analysis_in_worker_processes_reaches_the_pacs_and_ends_with_the_node(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    """models.processes = 2: lumbar and cervical results arrive as with the in-process models;
    a graceful stop ends the workers, and so does a SIGKILLed node (the workers notice)."""
    require_models()
    node = NodeProcess(
        tmp_path / "node",
        destinations=[orthanc.destination()],
        extra={"models": {"processes": 2}, "jobs": {"workers": 3}},
    )
    node.start(timeout=300)
    assert node.proc is not None
    workers = _analysis_workers(node.proc.pid)
    assert len(workers) == 2, node.log()[-3000:]
    files = synthetic_images(tmp_path / "modality", [("lumbar_lateral", 3), ("cervical_oblique", 4)])
    report = storescu(files, node.dicom_port)
    assert report.failed == [], report.output
    objects = orthanc.wait_for_objects(5, timeout=240)
    lumbar, cervical = (dcmread(f, stop_before_pixels=True) for f in files)
    assert sorted(str(o.Modality) for o in objects if str(lumbar.SOPInstanceUID) in referenced_uids(o)) == [
        "PR",
        "SEG",
        "SR",
    ]
    assert sorted(str(o.Modality) for o in objects if str(cervical.SOPInstanceUID) in referenced_uids(o)) == [
        "PR",
        "SR",
    ]
    assert node.stop() == 0
    assert _gone(workers, timeout=30)

    node.start(timeout=300)
    assert node.proc is not None
    workers = _analysis_workers(node.proc.pid)
    assert len(workers) == 2
    node.proc.kill()
    node.proc.wait()
    node.proc = None
    assert _gone(workers, timeout=30)  # no orphaned model copies after a crash


def test_node_without_destinations_warns_and_resumes_queued_work_after_a_crash(tmp_path: Path) -> None:
    """No models needed: a non-spine image is routed to "not applicable"."""
    node = NodeProcess(tmp_path / "node", extra={"jobs": {"workers": 0}})  # receive only
    banner = node.start()
    assert "WARNING no [[destinations]] configured" in banner
    files = synthetic_images(tmp_path / "modality", [("other", 3)])
    uid = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    report = storescu(files, node.dicom_port)
    assert report.failed == [], report.output
    node.kill()  # crash with the job still queued

    node.extra["jobs"] = {"workers": 1}
    node.start()
    db = node.database()
    try:
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            with db.session() as s:
                state = s.execute(
                    select(Job.state)
                    .join(Instance, Instance.id == Job.instance_id)
                    .where(Instance.sop_instance_uid == uid)
                ).scalar_one()
            if state not in (JobState.QUEUED, JobState.RUNNING):
                break
            time.sleep(0.2)
        assert state is JobState.NOT_APPLICABLE
        with db.session() as s:
            events = list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
        kinds = [e.event_type for e in events if e.event_id == "110100"]
        assert kinds == ["Application Start", "Application Start"]  # the killed node never said Stop
        assert any(e.description.startswith("Analysis not applicable") for e in events)
    finally:
        db.dispose()
    assert node.stop() == 0


def test_each_destination_gets_the_seg_in_its_own_profile(tmp_path: Path, orthanc: Orthanc) -> None:
    """A destination with ``seg_profile = "ohif"`` next to a standard one: the node writes both
    SEGs, each destination receives exactly the one in its profile (here both destinations are
    the same Orthanc under two names, so the PACS holds both SEGs, SR and GSPS once)."""
    require_models("lumbar")
    node = NodeProcess(
        tmp_path / "node",
        destinations=[
            orthanc.destination("pacs"),
            {**orthanc.destination("ohif"), "seg_profile": "ohif", "send_sr": False, "send_gsps": False},
        ],
    )
    banner = node.start()
    try:
        assert "ohif: " in banner and "(SEG ohif profile)" in banner, banner
        files = synthetic_images(tmp_path / "modality", [("lumbar_lateral", 3)])
        report = storescu(files, node.dicom_port)
        assert report.failed == [], report.output
        objects = orthanc.wait_for_objects(4, timeout=240)
        assert sorted(str(o.Modality) for o in objects) == ["PR", "SEG", "SEG", "SR"]
        segs = {int(o.SeriesNumber): o for o in objects if o.Modality == "SEG"}
        assert set(segs) == {9000, 9004}
        standard, ohif = (
            segs[9000].SharedFunctionalGroupsSequence[0],
            segs[9004].SharedFunctionalGroupsSequence[0],
        )
        assert "PlaneOrientationSequence" not in standard
        assert list(ohif.PlaneOrientationSequence[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
        assert ohif.PixelMeasuresSequence[0].SliceThickness == 1
        assert "ohif" in str(segs[9004].SeriesDescription)
        assert segs[9000].SeriesInstanceUID != segs[9004].SeriesInstanceUID
        db = node.database()
        try:
            deadline = time.monotonic() + 60
            while True:  # Orthanc holds the objects; the node records the deliveries just after
                with db.session() as s:
                    rows = s.execute(
                        select(Result.sop_instance_uid, Delivery.destination, Delivery.state).join(
                            Delivery, Delivery.result_id == Result.id
                        )
                    ).all()
                if all(r[2] is DeliveryState.DELIVERED for r in rows) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            db.dispose()
        by_uid: dict[str, set[str]] = {}
        for uid, dest, _state in rows:
            by_uid.setdefault(uid, set()).add(dest)
        assert by_uid[str(segs[9000].SOPInstanceUID)] == {"pacs"}
        assert by_uid[str(segs[9004].SOPInstanceUID)] == {"ohif"}
        assert len(rows) == 4 and all(r[2] is DeliveryState.DELIVERED for r in rows), rows
    finally:
        node.stop()
