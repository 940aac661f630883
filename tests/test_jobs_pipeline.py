"""The job pipeline: route → reference image → analyse → encode → results + deliveries, with real
receive, spool, route, encoders, database and (for delivery) Orthanc.

The trained models are not what is under test here, so the analyses are replaced by the
ground-truth "perfect model" of :mod:`tests.result_factory` (the results a model would return for
the synthetic image's known anatomy). The end-to-end tests (``tests/test_e2e_node.py``) run the
real models.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import select

from cdss.config import Analysis, Destination, DicomSettings, JobSettings, Settings, StorageSettings
from cdss.db import AuditEvent, Database, Delivery, Instance, Job, JobState, Result, utcnow
from cdss.dispatch import Dispatcher
from cdss.jobs.pipeline import PipelineContext, make_processor, process_job, same_acquisition
from cdss.jobs.runner import JobRunner, RunStatus
from cdss.jobs.states import LeaseLost, claim_next, reconcile_jobs, rerun_job
from cdss.leases import new_owner
from cdss.receive import Receiver
from cdss.store import Spool
from tests.peers import Orthanc, free_port
from tests.result_factory import cervical_result_from_gt, lumbar_result_from_gt

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


class TruthAnalyser:
    """Stands in for the model registry: returns the ground truth of the synthetic image."""

    def __init__(self) -> None:
        self.truth = {}
        for path in SAMPLES.glob("*.json"):
            gt = json.loads(path.read_text())
            self.truth[gt["dicom"]["sop_instance_uid"]] = gt
        self.calls = 0
        self.fail_times = 0
        self.during = None  # callable run inside analyse (to interleave events)

    def analyse(self, analysis: Analysis, ds, laterality=None):
        self.calls += 1
        if self.during is not None:
            hook, self.during = self.during, None
            hook()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("model crashed (test)")
        gt = self.truth[str(ds.SOPInstanceUID)]
        if analysis is Analysis.CERVICAL_OBLIQUE:
            return cervical_result_from_gt(gt)
        return lumbar_result_from_gt(gt)


@dataclass
class Node:
    settings: Settings
    db: Database
    spool: Spool
    receiver: Receiver
    analyser: TruthAnalyser
    ctx: PipelineContext

    def push(self, *names: str) -> list[str]:
        """C-STORE fixture files to the receiver; return their SOP Instance UIDs."""
        datasets = [dcmread(SAMPLES / n) for n in names]
        ae = AE(ae_title="MODALITY")
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.receiver.port, ae_title=self.settings.dicom.ae_title)
        assert assoc.is_established
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        return [str(ds.SOPInstanceUID) for ds in datasets]

    def job_for(self, sop_uid: str) -> Job:
        with self.db.session() as s:
            job = s.execute(
                select(Job)
                .join(Instance, Instance.id == Job.instance_id)
                .where(Instance.sop_instance_uid == sop_uid)
            ).scalar_one()
            s.expunge(job)
            return job

    def run_all(self) -> None:
        runner = JobRunner(self.db, self.settings.jobs, make_processor(self.ctx))
        while runner.run_next() is not None:
            pass
        runner.close()


def _make_node(tmp_path: Path, destinations: list[Destination], **jobs) -> Node:
    settings = Settings(
        dicom=DicomSettings(port=free_port(), bind="127.0.0.1"),
        storage=StorageSettings(path=tmp_path / "spool", min_free_mb=0, fsync=False),
        database={"url": f"sqlite:///{tmp_path / 'cdss.db'}"},
        destinations=destinations,
        jobs=JobSettings(retry_backoff_s=0, lease_s=30, **jobs),
    )
    db = Database(settings.database.url)
    spool = Spool(settings.storage)
    receiver = Receiver(settings, db, spool)
    receiver.start()
    analyser = TruthAnalyser()
    ctx = PipelineContext(settings, db, spool, analyser)
    return Node(settings, db, spool, receiver, analyser, ctx)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    dest = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    n = _make_node(tmp_path, [dest], for_processing_wait_s=0)
    yield n
    n.receiver.stop()
    n.db.dispose()


def _results(db: Database, job_id: int) -> list[Result]:
    with db.session() as s:
        rows = list(s.execute(select(Result).where(Result.job_id == job_id).order_by(Result.id)).scalars())
        for r in rows:
            s.expunge(r)
        return rows


def _audit(db: Database, event_id: str) -> list[AuditEvent]:
    with db.session() as s:
        rows = list(s.execute(select(AuditEvent).where(AuditEvent.event_id == event_id)).scalars())
        for r in rows:
            s.expunge(r)
        return rows


def test_lumbar_image_gets_seg_sr_gsps_deliveries_summary_and_audit(node: Node) -> None:
    (uid,) = node.push("lumbar_lateral_std_a.dcm")
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.SUCCEEDED, job.last_error
    assert job.analysis == "lumbar_lateral" and job.route_reason
    results = _results(node.db, job.id)
    assert [r.kind for r in results] == ["SEG", "SR", "GSPS"]
    source = dcmread(SAMPLES / "lumbar_lateral_std_a.dcm", stop_before_pixels=True)
    for r in results:
        ds = dcmread(node.spool.path(r.spool_key))
        assert str(ds.SOPInstanceUID) == r.sop_instance_uid
        assert (
            ds.StudyInstanceUID == source.StudyInstanceUID
            and ds.SeriesInstanceUID != source.SeriesInstanceUID
        )
    with node.db.session() as s:
        deliveries = list(s.execute(select(Delivery)).scalars())
        assert sorted(d.result_id for d in deliveries) == [r.id for r in results]
        assert {d.destination for d in deliveries} == {"pacs"}
    summary = job.summary
    assert summary["reference_sop_instance_uid"] == uid
    assert summary["lumbar"]["vertebrae"] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    assert {lv["level"] for lv in summary["lumbar"]["levels"]} == {
        "L1-L2",
        "L2-L3",
        "L3-L4",
        "L4-L5",
        "L5-S1",
    }
    assert "PixelData" not in json.dumps(summary)
    (event,) = _audit(node.db, "110103")
    assert event.action == "C" and event.outcome == 0 and event.detail["job_id"] == job.id
    assert sorted(event.detail["result_sop_instance_uids"]) == sorted(r.sop_instance_uid for r in results)


def test_secondary_capture_goes_to_the_destination_that_asks_for_it(tmp_path: Path) -> None:
    """A destination with send_sc gets the burned-in SC without any other switch (results.
    secondary_capture only concerns the calling AE); one without send_sc gets none."""
    images_only = Destination(
        name="images-only", ae_title="OLDPACS", host="127.0.0.1", port=free_port(), send_sc=True
    )
    plain = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    node = _make_node(tmp_path, [images_only, plain], for_processing_wait_s=0)
    try:
        assert node.settings.results.secondary_capture is False
        (uid,) = node.push("lumbar_lateral_std_a.dcm")
        node.run_all()
        job = node.job_for(uid)
        results = {r.kind: r for r in _results(node.db, job.id)}
        assert list(results) == ["SEG", "SR", "GSPS", "SC"]
        with node.db.session() as s:
            to = {
                d.destination
                for d in s.execute(select(Delivery).where(Delivery.result_id == results["SC"].id)).scalars()
            }
        assert to == {"images-only"}
    finally:
        node.receiver.stop()
        node.db.dispose()


def test_cervical_oblique_gets_sr_and_gsps(node: Node) -> None:
    (uid,) = node.push("cervical_obl_left_abnormal.dcm")
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.SUCCEEDED, job.last_error
    assert [r.kind for r in _results(node.db, job.id)] == ["SR", "GSPS"]
    assert job.summary["cervical"]["label"] == "abnormal" and job.summary["cervical"]["laterality"] == "L"


def test_non_spine_image_is_not_applicable_with_audit_and_no_results(node: Node) -> None:
    (uid,) = node.push("other_chest.dcm")
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.NOT_APPLICABLE and job.analysis == "not_applicable"
    assert job.summary["reason"] == job.route_reason and job.route_reason
    assert _results(node.db, job.id) == [] and node.analyser.calls == 0
    (event,) = _audit(node.db, "110103")
    assert event.description.startswith("Analysis not applicable") and event.action == "E"
    assert event.detail["reason"] == job.route_reason


def test_for_processing_twin_is_superseded_by_for_presentation(node: Node) -> None:
    proc = dcmread(SAMPLES / "lumbar_lateral_pair_proc.dcm")
    pres = dcmread(SAMPLES / "lumbar_lateral_pair_pres.dcm")
    assert same_acquisition(proc, pres)
    proc_uid, pres_uid = node.push("lumbar_lateral_pair_proc.dcm", "lumbar_lateral_pair_pres.dcm")
    node.run_all()
    proc_job, pres_job = node.job_for(proc_uid), node.job_for(pres_uid)
    assert proc_job.state is JobState.NOT_APPLICABLE
    assert proc_job.summary["superseded_by_sop_instance_uid"] == pres_uid
    assert pres_job.state is JobState.SUCCEEDED
    assert pres_job.summary["reference_sop_instance_uid"] == pres_uid
    assert len(_results(node.db, pres_job.id)) == 3 and _results(node.db, proc_job.id) == []


def test_for_processing_alone_waits_then_is_analysed(tmp_path: Path) -> None:
    # The wait is long enough that a stall of the shared CI cores between the push and the
    # "not due yet" check cannot make the job due early.
    wait_s = 4.0
    node = _make_node(tmp_path, [], for_processing_wait_s=wait_s)
    try:
        (uid,) = node.push("lumbar_lateral_pair_proc.dcm")
        runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
        outcome = runner.run_next()
        assert outcome.status is RunStatus.DEFERRED and 0 < outcome.retry_in_s <= wait_s
        job = node.job_for(uid)
        assert job.state is JobState.QUEUED and job.attempts == 0 and "waiting" in job.route_reason
        assert runner.run_next() is None  # not due yet
        time.sleep(outcome.retry_in_s + 0.1)
        assert runner.run_next().status is RunStatus.DONE
        job = node.job_for(uid)
        assert job.state is JobState.SUCCEEDED and job.summary["reference_sop_instance_uid"] == uid
        assert any("FOR PROCESSING image analysed itself" in n for n in job.summary["notes"])
        # The FOR PRESENTATION twin arrives late: it is analysed too, and says so.
        (pres_uid,) = node.push("lumbar_lateral_pair_pres.dcm")
        assert runner.run_next().status is RunStatus.DONE
        late = node.job_for(pres_uid)
        assert late.state is JobState.SUCCEEDED and any(str(job.id) in n for n in late.summary["notes"])
        runner.close()
    finally:
        node.receiver.stop()
        node.db.dispose()


def test_failed_attempts_retry_then_dead_then_rerun_succeeds(node: Node) -> None:
    (uid,) = node.push("lumbar_lateral_std_a.dcm")
    node.analyser.fail_times = 3  # max_attempts = 3
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.DEAD and job.attempts == 3 and "model crashed" in job.last_error
    assert _results(node.db, job.id) == []
    dead_events = [e for e in _audit(node.db, "110103") if e.outcome == 8]
    assert len(dead_events) == 1
    rerun_job(node.db, job.id)
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.SUCCEEDED and len(_results(node.db, job.id)) == 3


def test_crash_between_store_and_commit_gives_one_result_set(node: Node) -> None:
    """A worker dies after writing result files; the retry commits exactly one set."""
    (uid,) = node.push("lumbar_lateral_std_a.dcm")
    real_store = node.spool.store_result
    stored_keys: list[str] = []

    def store_then_die(data: bytes):
        sf = real_store(data)
        stored_keys.append(sf.key)
        if len(stored_keys) == 2:
            raise OSError("simulated crash after writing results")
        return sf

    node.spool.store_result = store_then_die  # type: ignore[method-assign]
    runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
    assert runner.run_next().status is RunStatus.FAILED
    node.spool.store_result = real_store  # type: ignore[method-assign]
    assert runner.run_next().status is RunStatus.DONE
    runner.close()
    job = node.job_for(uid)
    results = _results(node.db, job.id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2 and len(results) == 3
    with node.db.session() as s:
        assert len(list(s.execute(select(Delivery)).scalars())) == 3
    assert not {r.spool_key for r in results} & set(stored_keys)


def test_worker_that_lost_its_lease_cannot_commit(node: Node) -> None:
    """Worker A stalls past its lease; B takes over and finishes; A's late results are discarded."""
    (uid,) = node.push("lumbar_lateral_std_a.dcm")
    slow = new_owner("slow")
    job = claim_next(node.db, slow, 30)

    def takeover() -> None:
        later = utcnow() + dt.timedelta(seconds=60)
        assert reconcile_jobs(node.db, now=later).requeued == [job.id]
        with node.db.session() as s:
            s.get(Job, job.id).next_run_at = utcnow()
        fast = claim_next(node.db, new_owner("fast"), 30)
        assert fast is not None and fast.id == job.id
        process_job(fast, node.ctx)

    node.analyser.during = takeover

    with pytest.raises(LeaseLost):
        process_job(job, node.ctx)
    final = node.job_for(uid)
    results = _results(node.db, final.id)
    assert final.state is JobState.SUCCEEDED and len(results) == 3
    assert sum(1 for _ in (node.spool.root / "results").glob("*/*/*.dcm")) == 3  # A's files were deleted


def test_results_are_delivered_to_orthanc_and_reference_the_source(tmp_path: Path, orthanc: Orthanc) -> None:
    dest = Destination(name="pacs", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    node = _make_node(tmp_path, [dest], for_processing_wait_s=0)
    woke = threading.Event()
    node.ctx.on_results = lambda job_id: woke.set()
    try:
        (uid,) = node.push("lumbar_lateral_std_a.dcm")
        node.run_all()
        assert woke.is_set()
        dispatcher = Dispatcher(node.settings, node.db, node.spool)
        while dispatcher.run_once() is not None:
            pass
        source = dcmread(SAMPLES / "lumbar_lateral_std_a.dcm")
        kinds = {}
        for oid in orthanc.instances():
            ds = dcmread(io.BytesIO(orthanc.file(oid)))
            kinds[str(ds.Modality)] = ds
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            assert uid in repr(ds)  # every object references the exact source instance
        assert set(kinds) == {"SEG", "SR", "PR"}
    finally:
        node.receiver.stop()
        node.db.dispose()


def test_unanalysable_image_is_dead_at_once_without_retries(node: Node) -> None:
    from cdss.analysis.pixels import PixelDataError

    (uid,) = node.push("lumbar_lateral_std_a.dcm")

    def undecodable(analysis, ds, laterality=None):
        raise PixelDataError("cannot decode pixel data (test)")

    node.analyser.analyse = undecodable  # type: ignore[method-assign]
    node.run_all()
    job = node.job_for(uid)
    assert job.state is JobState.DEAD and job.attempts == 1
    assert job.last_error.startswith("UnanalysableImage: PixelDataError")
    (event,) = [e for e in _audit(node.db, "110103") if e.outcome == 8]
    assert "cannot be analysed" in event.description


def test_orphan_result_files_are_swept_but_committed_ones_kept(node: Node) -> None:
    import os

    from cdss.store import SpoolArea
    from cdss.store.orphans import sweep_orphans

    (uid,) = node.push("lumbar_lateral_std_a.dcm")
    node.run_all()
    kept = {r.spool_key for r in _results(node.db, node.job_for(uid).id)}
    orphan = node.spool.store_result(b"result of an attempt that never committed").key
    assert (
        sweep_orphans(node.db, node.spool, SpoolArea.RESULTS) == 0
    )  # too young: might be an attempt in flight
    old = time.time() - 7200
    for key in [*kept, orphan]:
        os.utime(node.spool.path(key), (old, old))
    assert sweep_orphans(node.db, node.spool, SpoolArea.RESULTS) == 1
    assert not node.spool.exists(orphan) and all(node.spool.exists(k) for k in kept)
