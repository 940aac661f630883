"""Routing with the shipped view classifier on real (synthetic) images, through the job pipeline.

The image that matters: a lateral lumbar film whose header lost ViewPosition and
PatientOrientation is still analysed as a lateral; a chest film labelled LSPINE is not
applicable. The route evidence must reach the job summary and the audit trail (real SQLite
database, real receiver, real spool). The analyses themselves are the ground-truth stand-in
of ``tests/test_jobs_pipeline.py`` (the trained segmentation models are not under test here);
the view classifier is the real, shipped one, loaded through the model registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select

from cdss.analysis.registry import ModelRegistry
from cdss.config import (
    Analysis,
    DicomSettings,
    JobSettings,
    ModelSettings,
    RouteSettings,
    Settings,
    StorageSettings,
)
from cdss.db import AuditEvent, Database, Instance, Job, JobState
from cdss.jobs.pipeline import PipelineContext, make_processor
from cdss.jobs.runner import JobRunner
from cdss.jobs.summary import JobSummary
from cdss.receive import Receiver
from cdss.route import DecisionRule, TagStatus, route
from cdss.store import Spool
from tests.peers import free_port
from tests.result_factory import cervical_result_from_gt, lumbar_result_from_gt

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(ModelSettings(device="cpu", torch_threads=1))


def _strip_view_tags(ds: Dataset) -> Dataset:
    """A lateral whose modality wrote no ViewPosition, no PatientOrientation, no view words."""
    for keyword in ("ViewPosition", "PatientOrientation", "ViewCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SeriesDescription = "LSPINE"
    ds.ProtocolName = "LSPINE"
    return ds


def _relabel_lspine(ds: Dataset) -> Dataset:
    """A chest PA whose header says lumbar spine (a wrong protocol on the modality)."""
    ds.BodyPartExamined = "LSPINE"
    ds.SeriesDescription = "LSPINE PA"
    ds.ProtocolName = "LSPINE PA"
    return ds


# ------------------------------------------------------------------------------ route() alone
@pytest.mark.parametrize(
    "name",
    [
        "lumbar_lateral_std_a.dcm",
        "lumbar_lateral_mono1.dcm",
        "lumbar_lateral_cr_nospacing.dcm",
        "lumbar_lateral_hard.dcm",
    ],
)
def test_lateral_without_view_tags_is_routed_to_lateral_lumbar(registry: ModelRegistry, name: str) -> None:
    ds = _strip_view_tags(dcmread(SAMPLES / name))
    without = route(ds, RouteSettings(), "MODALITY")  # tags alone: the view is unknown
    assert without.analysis is Analysis.NOT_APPLICABLE
    decision = route(ds, RouteSettings(), "MODALITY", registry.view_classifier())
    assert decision.analysis is Analysis.LUMBAR_LATERAL, decision.reason
    assert decision.rule is DecisionRule.CLASSIFIER
    assert decision.evidence.tag_status is TagStatus.INCOMPLETE
    assert decision.evidence.classifier.label == "lumbar_lateral"


@pytest.mark.parametrize(
    "name", ["other_chest.dcm", "other_pelvis.dcm", "other_knee.dcm", "other_hand.dcm", "other_skull.dcm"]
)
def test_non_spine_image_labelled_lspine_is_not_applicable(registry: ModelRegistry, name: str) -> None:
    ds = _relabel_lspine(dcmread(SAMPLES / name))
    by_tags = route(ds, RouteSettings(), "MODALITY")
    assert by_tags.analysis is Analysis.LUMBAR_AP  # what the header alone would do
    decision = route(ds, RouteSettings(), "MODALITY", registry.view_classifier())
    assert decision.analysis is Analysis.NOT_APPLICABLE, decision.reason
    assert decision.rule is DecisionRule.CLASSIFIER_VETO
    assert "vetoed by the view classifier" in decision.reason


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in SAMPLES.glob("*.dcm") if not p.name.startswith("other_")),
)
def test_correctly_tagged_spine_fixtures_are_not_vetoed(registry: ModelRegistry, name: str) -> None:
    ds = dcmread(SAMPLES / name)
    by_tags = route(ds, RouteSettings(), "MODALITY")
    decision = route(ds, RouteSettings(), "MODALITY", registry.view_classifier())
    assert decision.analysis is by_tags.analysis, decision.reason
    assert decision.rule is DecisionRule.TAGS


# ------------------------------------------------------------------------------ through the pipeline
class TruthWithViewClassifier:
    """Ground-truth analyses (as in test_jobs_pipeline) plus the registry's real view classifier."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.truth = {}
        for path in SAMPLES.glob("*.json"):
            gt = json.loads(path.read_text())
            self.truth[gt["dicom"]["sop_instance_uid"]] = gt

    def view_classifier(self, weights: Path | None = None):  # type: ignore[no-untyped-def]
        return self.registry.view_classifier(weights)

    def analyse(self, analysis: Analysis, ds, laterality=None):  # type: ignore[no-untyped-def]
        gt = self.truth[str(ds.SOPInstanceUID)]
        if analysis is Analysis.CERVICAL_OBLIQUE:
            return cervical_result_from_gt(gt)
        return lumbar_result_from_gt(gt)


@pytest.fixture
def node(
    tmp_path: Path, registry: ModelRegistry
) -> Iterator[tuple[Settings, Database, Receiver, PipelineContext]]:
    settings = Settings(
        dicom=DicomSettings(port=free_port(), bind="127.0.0.1"),
        storage=StorageSettings(path=tmp_path / "spool", min_free_mb=0, fsync=False),
        database={"url": f"sqlite:///{tmp_path / 'cdss.db'}"},
        jobs=JobSettings(retry_backoff_s=0, lease_s=30, for_processing_wait_s=0),
    )
    db = Database(settings.database.url)
    spool = Spool(settings.storage)
    receiver = Receiver(settings, db, spool)
    receiver.start()
    ctx = PipelineContext(settings, db, spool, TruthWithViewClassifier(registry))
    yield settings, db, receiver, ctx
    receiver.stop()
    db.dispose()


def _push_and_run(node, *datasets: Dataset) -> list[int]:  # type: ignore[no-untyped-def]
    settings, db, receiver, ctx = node
    ae = AE(ae_title="MODALITY")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title=settings.dicom.ae_title)
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    runner = JobRunner(db, settings.jobs, make_processor(ctx))
    while runner.run_next() is not None:
        pass
    runner.close()
    ids = []
    with db.session() as s:
        for ds in datasets:
            ids.append(
                s.execute(
                    select(Job.id)
                    .join(Instance, Instance.id == Job.instance_id)
                    .where(Instance.sop_instance_uid == str(ds.SOPInstanceUID))
                ).scalar_one()
            )
    return ids


def _job_and_audit(db: Database, job_id: int) -> tuple[Job, JobSummary, list[AuditEvent]]:
    with db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        events = [
            e
            for e in s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()
            if (e.detail or {}).get("job_id") == job_id
        ]
        for e in events:
            s.expunge(e)
    summary = JobSummary.from_json(job.summary)
    assert summary is not None
    return job, summary, events


def test_pipeline_records_the_classifier_decision_in_summary_and_audit(node) -> None:  # type: ignore[no-untyped-def]
    lateral = _strip_view_tags(dcmread(SAMPLES / "lumbar_lateral_std_a.dcm"))
    chest = _relabel_lspine(dcmread(SAMPLES / "other_chest.dcm"))
    lat_id, chest_id = _push_and_run(node, lateral, chest)
    db = node[1]

    job, summary, events = _job_and_audit(db, lat_id)
    assert job.state is JobState.SUCCEEDED and job.analysis == "lumbar_lateral"
    assert summary.route is not None and summary.route.rule is DecisionRule.CLASSIFIER
    assert summary.route.classifier.label == "lumbar_lateral"
    assert summary.route.classifier.probability >= summary.route.decide_probability
    stored = job.summary["route"]
    assert stored["tag_status"] == "incomplete"
    assert {
        "tag": "AnatomicRegionSequence",
        "source": "AnatomicRegionSequence=SCT:122496007",
        "says": "LSPINE",
    } in stored["tags"]
    assert not {"ViewPosition", "PatientOrientation"} & {t["tag"] for t in stored["tags"]}
    (created,) = [e for e in events if e.description.startswith("lumbar_lateral analysis by")]
    assert created.detail["route"]["rule"] == "classifier"
    assert created.detail["route"]["classifier"]["label"] == "lumbar_lateral"
    assert created.detail["route"]["classifier"]["model"].startswith("cdss-view")

    job, summary, events = _job_and_audit(db, chest_id)
    assert job.state is JobState.NOT_APPLICABLE
    assert summary.route is not None and summary.route.rule is DecisionRule.CLASSIFIER_VETO
    assert "vetoed by the view classifier" in job.route_reason
    (na,) = [e for e in events if e.description.startswith("Analysis not applicable")]
    assert na.detail["route"]["rule"] == "classifier_veto"
    assert na.detail["route"]["classifier"]["label"] == "other"
    assert na.detail["route"]["tag_analysis"] == "lumbar_ap"
