"""Batched analysis (``jobs.batch_size``): jobs claimed together, one model call per analysis, one
final transaction per job; a bad image or a lost lease affects its own job only.

The structure tests use the ground-truth stand-in of ``tests/test_jobs_pipeline.py`` (the models
are not under test there); the last test runs the shipped lumbar model through the real
:class:`~cdss.analysis.registry.ModelRegistry` and compares batched with one-by-one results.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pynetdicom import AE
from sqlalchemy import select, update

from cdss.analysis.pixels import PixelDataError
from cdss.analysis.registry import ModelRegistry
from cdss.config import Analysis, Destination, ModelSettings
from cdss.db import AuditEvent, Database, Delivery, Job, JobState, Result
from cdss.jobs.pipeline import PipelineContext, make_processor
from cdss.jobs.runner import JobRunner, RunStatus
from cdss.jobs.states import claim_many
from cdss.jobs.summary import JobSummary
from cdss.leases import new_owner
from tests.jobs_helpers import add_jobs
from tests.node_process import require_models
from tests.peers import free_port
from tests.test_jobs_pipeline import SAMPLES, Node, TruthAnalyser, _make_node

pytestmark = pytest.mark.integration

LUMBAR = [
    "lumbar_lateral_std_a.dcm",
    "lumbar_lateral_std_b.dcm",
    "lumbar_lateral_slip_iii.dcm",
    "lumbar_lateral_noisy.dcm",
    "lumbar_lateral_rotated.dcm",
]
CERVICAL = ["cervical_obl_left_normal.dcm", "cervical_obl_right_abnormal.dcm"]


class BatchingTruthAnalyser(TruthAnalyser):
    """The ground-truth stand-in with a batch entry point that records each call's size."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[Analysis, int]] = []
        self.bad: set[str] = set()  # SOP Instance UIDs whose pixels "cannot be decoded"
        self.during_batch = None

    def analyse(self, analysis: Analysis, ds, laterality=None):
        if str(ds.SOPInstanceUID) in self.bad:
            raise PixelDataError("cannot decode pixel data (test)")
        return super().analyse(analysis, ds, laterality)

    def analyse_batch(self, analysis: Analysis, items):
        self.batches.append((analysis, len(items)))
        if self.during_batch is not None:
            hook, self.during_batch = self.during_batch, None
            hook()
        return [self.analyse(analysis, ds, lat) for ds, lat in items]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    dest = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    n = _make_node(tmp_path, [dest], for_processing_wait_s=0, batch_size=16)
    n.analyser = BatchingTruthAnalyser()
    n.ctx = PipelineContext(n.settings, n.db, n.spool, n.analyser)
    yield n
    n.receiver.stop()
    n.db.dispose()


def _states(db: Database) -> Counter[JobState]:
    with db.session() as s:
        return Counter(s.execute(select(Job.state)).scalars())


def _result_counts(db: Database) -> dict[int, int]:
    with db.session() as s:
        return dict(Counter(s.execute(select(Result.job_id)).scalars()))


def test_claim_many_never_hands_one_job_to_two_workers(db_url: str) -> None:
    db = Database(db_url)
    try:
        ids = add_jobs(db, 8)
        a = claim_many(db, new_owner("a"), 30, 5)
        b = claim_many(db, new_owner("b"), 30, 5)
        assert [j.id for j in a] == ids[:5] and [j.id for j in b] == ids[5:]
        assert claim_many(db, new_owner("c"), 30, 5) == []
        with db.session() as s:
            rows = s.execute(select(Job.state, Job.attempts, Job.lease_owner)).all()
        assert {(state, attempts) for state, attempts, _ in rows} == {(JobState.RUNNING, 1)}
        assert Counter(owner for *_, owner in rows) == {a[0].owner: 5, b[0].owner: 3}
    finally:
        db.dispose()


def test_a_batch_is_analysed_once_per_analysis_and_every_job_commits_its_own_results(node: Node) -> None:
    uids = node.push(*LUMBAR, *CERVICAL, "other_chest.dcm")
    runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
    assert runner.batch_size == 16
    outcomes = runner.run_batch()
    runner.close()
    assert [o.status for o in outcomes] == [RunStatus.DONE] * len(uids)
    assert sorted(node.analyser.batches) == sorted(
        [(Analysis.LUMBAR_LATERAL, len(LUMBAR)), (Analysis.CERVICAL_OBLIQUE, len(CERVICAL))]
    )
    assert _states(node.db) == {JobState.SUCCEEDED: len(LUMBAR) + len(CERVICAL), JobState.NOT_APPLICABLE: 1}
    per_job = _result_counts(node.db)
    for uid in uids[: len(LUMBAR)]:
        job = node.job_for(uid)
        assert job.attempts == 1 and per_job[job.id] == 3  # SEG, SR, GSPS
        assert job.summary["reference_sop_instance_uid"] == uid
    for uid in uids[len(LUMBAR) : -1]:
        assert per_job[node.job_for(uid).id] == 2  # SR, GSPS
    with node.db.session() as s:
        deliveries = s.execute(select(Delivery.result_id)).scalars().all()
        created = s.execute(select(AuditEvent).where(AuditEvent.event_id == "110103")).scalars().all()
    assert len(deliveries) == sum(per_job.values())
    assert Counter(e.action for e in created) == {"C": len(LUMBAR) + len(CERVICAL), "E": 1}


def test_an_unanalysable_image_fails_alone(node: Node) -> None:
    uids = node.push(*LUMBAR)
    node.analyser.bad = {uids[2]}
    runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
    outcomes = {o.job_id: o.status for o in runner.run_batch()}
    runner.close()
    bad = node.job_for(uids[2])
    assert outcomes[bad.id] is RunStatus.FAILED
    assert bad.state is JobState.DEAD and bad.last_error.startswith("UnanalysableImage: PixelDataError")
    per_job = _result_counts(node.db)
    assert bad.id not in per_job
    for uid in uids[:2] + uids[3:]:
        job = node.job_for(uid)
        assert job.state is JobState.SUCCEEDED and per_job[job.id] == 3 and outcomes[job.id] is RunStatus.DONE


def test_a_transient_failure_retries_that_job_only(node: Node) -> None:
    uids = node.push(*LUMBAR[:3])
    # The batch call itself breaks; image by image, the first analysis breaks once more.
    node.analyser.fail_times = 1

    def broken_batch() -> None:
        raise RuntimeError("batch crashed (test)")

    node.analyser.during_batch = broken_batch
    runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
    first = {o.job_id: o.status for o in runner.run_batch()}
    assert Counter(first.values()) == {RunStatus.DONE: 2, RunStatus.FAILED: 1}
    second = runner.run_batch()  # retry_backoff_s = 0: the failed job is due again at once
    runner.close()
    assert [o.status for o in second] == [RunStatus.DONE]
    per_job = _result_counts(node.db)
    attempts = sorted(node.job_for(uid).attempts for uid in uids)
    assert attempts == [1, 1, 2] and sorted(per_job.values()) == [3, 3, 3]


def test_a_lease_lost_in_a_batch_discards_that_job_only(node: Node) -> None:
    uids = node.push(*LUMBAR[:4])
    victim = node.job_for(uids[1]).id

    def steal() -> None:  # another worker took the job over (e.g. after this one stalled)
        with node.db.session() as s:
            s.execute(update(Job).where(Job.id == victim).values(lease_owner=new_owner("other")))

    node.analyser.during_batch = steal
    runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
    outcomes = {o.job_id: o.status for o in runner.run_batch()}
    runner.close()
    assert outcomes.pop(victim) is RunStatus.LOST
    assert set(outcomes.values()) == {RunStatus.DONE}
    per_job = _result_counts(node.db)
    assert victim not in per_job and sorted(per_job.values()) == [3, 3, 3]
    # Only the committed result files are in the spool (the discarded attempt deleted its own).
    assert sum(1 for _ in (node.spool.root / "results").glob("*/*/*.dcm")) == 9


def _corrupt_j2k(src: Path, out: Path) -> Path:
    """The JPEG 2000 sample with its codestream overwritten: valid header, undecodable pixels."""
    raw = bytearray(src.read_bytes())
    ds = dcmread(io.BytesIO(bytes(raw)))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    at = raw.find(frame)
    assert at > 0 and len(frame) > 200
    raw[at + 2 : at + len(frame) - 2] = b"\xa5" * (len(frame) - 4)  # keep SOC and EOC markers
    out.write_bytes(bytes(raw))
    return out


def test_real_model_batch_matches_one_by_one_and_a_corrupt_image_fails_alone(tmp_path: Path) -> None:
    require_models("lumbar")
    dest = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    node = _make_node(tmp_path, [dest], for_processing_wait_s=0, batch_size=8)
    bad_file = _corrupt_j2k(SAMPLES / "lumbar_lateral_j2k.dcm", tmp_path / "corrupt_j2k.dcm")
    try:
        registry = ModelRegistry(ModelSettings(device="cpu"))
        node.ctx = PipelineContext(node.settings, node.db, node.spool, registry)
        names = LUMBAR[:3]
        node.push(*names)
        datasets = [dcmread(SAMPLES / n) for n in names]
        bad_uid = str(dcmread(bad_file, stop_before_pixels=True).SOPInstanceUID)
        ae = AE(ae_title="MODALITY")
        bad_ds = dcmread(bad_file)
        ae.add_requested_context(bad_ds.SOPClassUID, bad_ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.receiver.port, ae_title="CDSS")
        assert assoc.is_established and assoc.send_c_store(bad_ds).Status == 0
        assoc.release()

        runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
        outcomes = runner.run_batch()
        runner.close()
        assert len(outcomes) == 4
        bad = node.job_for(bad_uid)
        assert bad.state is JobState.DEAD and "PixelDataError" in (bad.last_error or "")
        for ds in datasets:
            uid = str(ds.SOPInstanceUID)
            job = node.job_for(uid)
            assert job.state is JobState.SUCCEEDED and job.attempts == 1
            single = registry.analyse(Analysis.LUMBAR_LATERAL, ds)
            expected = JobSummary.from_result(single, "lumbar_lateral", uid, [], [], "").to_json()["lumbar"]
            got = job.summary["lumbar"]
            assert got["vertebrae"] == expected["vertebrae"]
            assert [(lv["level"], lv["status"], lv["grade"]) for lv in got["levels"]] == [
                (lv["level"], lv["status"], lv["grade"]) for lv in expected["levels"]
            ]
            for a, b in zip(got["levels"], expected["levels"], strict=True):
                if b["slip_percent"] is not None:
                    assert a["slip_percent"] == pytest.approx(b["slip_percent"], abs=0.05)
    finally:
        node.receiver.stop()
        node.db.dispose()


def test_auto_batch_size_is_one_image_at_a_time_on_the_cpu(tmp_path: Path) -> None:
    dest = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    node = _make_node(tmp_path, [dest], batch_size=0)
    try:
        node.settings.models.device = "cpu"
        runner = JobRunner(node.db, node.settings.jobs, make_processor(node.ctx))
        assert runner.batch_size == 1
        runner.close()
        node.settings.jobs.batch_size = 4  # an explicit size is used as given
        assert JobRunner(node.db, node.settings.jobs, make_processor(node.ctx)).batch_size == 4
    finally:
        node.receiver.stop()
        node.db.dispose()
