"""Helpers for the API, audit and dashboard tests: a node database as receive → jobs → dispatch leave it.

:func:`seed` writes the rows those areas write (studies, series, instances, jobs with findings,
results, deliveries and their audit events) directly, so the API is tested against the states it
must show without running models. With ``spool`` the instances and results are real DICOM files
(source radiographs and the SEG / SR / GSPS that ``cdss.encode`` makes from ground truth), so
thumbnails are drawn from real objects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import generate_uid

from cdss.api.tokens import create_token
from cdss.audit import Action, EventID, Outcome, record_event
from cdss.db import Database, Delivery, DeliveryState, Instance, Job, JobState, Result, Series, Study, utcnow

_counter = itertools.count(1)

DX = "1.2.840.10008.5.1.4.1.1.1.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


#: Job summaries in the layout of ``cdss.jobs.summary.JobSummary``.
LUMBAR_SUMMARY = {
    "analysis": "lumbar_lateral",
    "has_findings": True,
    "model": {"name": "cdss-lumbar-seg", "version": "0.1.0", "weights_sha256": "0" * 64},
    "lumbar": {
        "view": "lateral",
        "levels": [
            {
                "level": "L3-L4",
                "status": "measured",
                "slip_percent": 1.2,
                "direction": "none",
                "grade": "none",
            },
            {
                "level": "L4-L5",
                "status": "measured",
                "slip_percent": 18.0,
                "direction": "anterolisthesis",
                "grade": "I",
            },
        ],
    },
}
CERVICAL_SUMMARY = {
    "analysis": "cervical_oblique",
    "has_findings": True,
    "model": {"name": "cdss-cervical", "version": "0.1.0", "weights_sha256": "0" * 64},
    "cervical": {"laterality": "R", "probability": 0.91, "label": "abnormal", "operating_point": 0.5},
}
LUMBAR_TEXT = "lumbar lateral: L4-L5 anterolisthesis 18.0 % (grade I)"
CERVICAL_TEXT = "cervical foraminal stenosis: abnormal (p = 0.91, R)"


@dataclass
class Seeded:
    """Ids of what :func:`seed` created, by role in the scenario."""

    studies: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, list[int]] = field(default_factory=dict)
    admin: str = ""
    auditor: str = ""


def _fake_key(area: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{area}-{next(_counter)}".encode()).hexdigest()
    return f"{area}/{digest[:2]}/{digest[2:4]}/{digest}.dcm", digest


def _source_and_results(analysis: str, study_uid: str) -> tuple[Any, list[Any]]:
    """A synthetic source radiograph and the result objects a perfect model would give."""
    from cdss.config import ResultSettings
    from cdss.encode import encode_results
    from tests.result_factory import (
        cervical_result_from_gt,
        lumbar_result_from_gt,
        make_source,
        synthetic_cervical_gt,
        synthetic_lumbar_gt,
    )

    if analysis == "cervical_oblique":
        gt = synthetic_cervical_gt(512, 416, laterality="R", label="abnormal")
        source = make_source(gt, study_instance_uid=study_uid)
        result = cervical_result_from_gt(gt, probability=0.91)
    else:
        gt = synthetic_lumbar_gt(640, 512, slips={"L4-L5": 18.0})
        source = make_source(gt, study_instance_uid=study_uid)
        result = lumbar_result_from_gt(gt)
    return source, encode_results(source, result, ResultSettings())


def _bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def add_study(
    db: Database,
    *,
    accession: str,
    patient_id: str,
    patient_name: str = "DOE^JANE",
    calling_ae: str = "MOD1",
    modality: str = "DX",
    job_state: JobState | None = JobState.SUCCEEDED,
    analysis: str | None = "lumbar_lateral",
    summary: dict[str, Any] | None = None,
    last_error: str | None = None,
    results: tuple[str, ...] = (),
    delivery_state: DeliveryState = DeliveryState.DELIVERED,
    spool: Any = None,
    when: dt.datetime | None = None,
) -> tuple[int, int | None, list[int]]:
    """One study with one instance, optionally a job, results and deliveries; returns the ids.

    Audit events are written as the receiver (110104 C), the worker (110103) and the dispatcher
    (110104 R) write them.
    """
    when = when or utcnow()
    study_uid = generate_uid()
    source_bytes = None
    encoded: list[Any] = []
    if spool is not None:
        source, encoded = _source_and_results(analysis or "lumbar_lateral", study_uid)
        if job_state is not JobState.SUCCEEDED:
            encoded = []  # results exist only for analysed images
        source.PatientID, source.PatientName, source.AccessionNumber = patient_id, patient_name, accession
        source_bytes = _bytes(source)
    with db.session() as s:
        study = Study(
            study_instance_uid=study_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            accession_number=accession,
            study_date=when.strftime("%Y%m%d"),
            study_description="LUMBAR SPINE LAT" if analysis != "cervical_oblique" else "C-SPINE OBL",
            created_at=when,
        )
        s.add(study)
        s.flush()
        series = Series(
            series_instance_uid=generate_uid(), study_id=study.id, modality=modality, created_at=when
        )
        s.add(series)
        s.flush()
        if source_bytes is not None:
            stored = spool.store_instance(source_bytes)
            key, sha, size = stored.key, stored.sha256, stored.size
        else:
            (key, sha), size = _fake_key("instances"), 1000
        inst = Instance(
            sop_instance_uid=generate_uid(),
            sop_class_uid=DX,
            series_id=series.id,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            sha256=sha,
            spool_key=key,
            size_bytes=size,
            calling_ae_title=calling_ae,
            called_ae_title="CDSS",
            peer_address="127.0.0.1",
            received_at=when,
            modality=modality,
            body_part_examined="LSPINE" if analysis != "cervical_oblique" else "CSPINE",
            view_position="LL",
            photometric_interpretation="MONOCHROME2",
            rows=640,
            columns=512,
        )
        s.add(inst)
        s.flush()
        record_event(
            s,
            EventID.INSTANCES_TRANSFERRED,
            action=Action.CREATE,
            user=f"AETITLE={calling_ae}",
            source="127.0.0.1",
            study_instance_uid=study_uid,
            patient_id=patient_id,
            accession_number=accession,
            description="1 instance received",
            detail={"sop_class_uid": DX, "sop_instance_uid": inst.sop_instance_uid},
            occurred_at=when,
        )
        job_id = None
        delivery_ids: list[int] = []
        if job_state is not None:
            finished = (
                when + dt.timedelta(seconds=3)
                if job_state not in (JobState.QUEUED, JobState.RUNNING)
                else None
            )
            job = Job(
                instance_id=inst.id,
                state=job_state,
                analysis=analysis,
                route_reason="built-in rule" if analysis else None,
                attempts=3 if job_state is JobState.DEAD else (0 if job_state is JobState.QUEUED else 1),
                max_attempts=3,
                next_run_at=when,
                last_error=last_error,
                created_at=when,
                updated_at=finished or when,
                started_at=when + dt.timedelta(seconds=1) if job_state is not JobState.QUEUED else None,
                finished_at=finished,
                duration_s=2.0 if finished else None,
                summary=summary,
            )
            s.add(job)
            s.flush()
            job_id = job.id
            if finished is not None:
                record_event(
                    s,
                    EventID.INSTANCES_ACCESSED,
                    action=Action.CREATE if job_state is JobState.SUCCEEDED else Action.EXECUTE,
                    outcome=Outcome.SUCCESS if job_state is not JobState.DEAD else Outcome.SERIOUS_FAILURE,
                    user="cdss",
                    study_instance_uid=study_uid,
                    patient_id=patient_id,
                    accession_number=accession,
                    description=f"job {job.id} {job_state.value}",
                    detail={"job_id": job.id},
                    occurred_at=finished,
                )
            kinds = [o.kind.value for o in encoded] if encoded else list(results)
            by_kind = {o.kind.value: o for o in encoded}
            for kind in kinds:
                obj = by_kind.get(kind)
                if obj is not None:
                    stored = spool.store_result(_bytes(obj.dataset))
                    rkey, rsha, rsize = stored.key, stored.sha256, stored.size
                    sop_class, sop_uid = str(obj.dataset.SOPClassUID), str(obj.dataset.SOPInstanceUID)
                    series_uid = str(obj.dataset.SeriesInstanceUID)
                else:
                    (rkey, rsha), rsize = _fake_key("results"), 500
                    sop_class, sop_uid, series_uid = (
                        {"SEG": SEG, "SR": SR, "GSPS": GSPS}.get(kind, SR),
                        generate_uid(),
                        generate_uid(),
                    )
                res = Result(
                    job_id=job.id,
                    kind=kind,
                    sop_class_uid=sop_class,
                    sop_instance_uid=sop_uid,
                    series_instance_uid=series_uid,
                    spool_key=rkey,
                    sha256=rsha,
                    size_bytes=rsize,
                    model_name="cdss-lumbar-seg" if analysis != "cervical_oblique" else "cdss-cervical",
                    model_version="0.1.0",
                    created_at=finished or when,
                )
                s.add(res)
                s.flush()
                delivered = delivery_state is DeliveryState.DELIVERED
                d = Delivery(
                    result_id=res.id,
                    destination="pacs",
                    ae_title="ORTHANC",
                    host="127.0.0.1",
                    port=4242,
                    state=delivery_state,
                    attempts=8 if delivery_state is DeliveryState.DEAD else (1 if delivered else 0),
                    max_attempts=8,
                    next_attempt_at=(finished or when) + dt.timedelta(seconds=5),
                    last_status=0 if delivered else None,
                    last_error="association rejected by ORTHANC (0x0002)"
                    if delivery_state is DeliveryState.DEAD
                    else None,
                    created_at=finished or when,
                    delivered_at=(finished or when) + dt.timedelta(seconds=1) if delivered else None,
                )
                s.add(d)
                s.flush()
                delivery_ids.append(d.id)
                if delivered:
                    record_event(
                        s,
                        EventID.INSTANCES_TRANSFERRED,
                        action=Action.READ,
                        user="AETITLE=ORTHANC",
                        source="127.0.0.1",
                        study_instance_uid=study_uid,
                        patient_id=patient_id,
                        accession_number=accession,
                        description=f"{kind} delivered to pacs",
                        detail={"sop_class_uid": sop_class, "sop_instance_uid": sop_uid},
                        occurred_at=d.delivered_at,
                    )
        return study.id, job_id, delivery_ids


def seed(db: Database, *, spool: Any = None) -> Seeded:
    """The scenario shared by the API and dashboard tests.

    * ``ok``: lumbar study, analysed (grade I at L4-L5), SEG + SR + GSPS delivered;
    * ``dead_job``: a CR image whose analysis died after 3 attempts;
    * ``dead_delivery``: a cervical study analysed (abnormal) whose SR delivery is dead;
    * ``queued``: a study just received, its job waiting.

    Also an ``admin`` and an ``auditor`` token.
    """
    out = Seeded()
    base = utcnow() - dt.timedelta(minutes=30)
    sid, jid, dids = add_study(
        db,
        accession="ACC001",
        patient_id="PAT-1",
        summary=LUMBAR_SUMMARY,
        results=("SEG", "SR", "GSPS"),
        spool=spool,
        when=base,
    )
    out.studies["ok"], out.jobs["ok"], out.deliveries["ok"] = sid, jid or 0, dids
    sid, jid, dids = add_study(
        db,
        accession="ACC002",
        patient_id="PAT-2",
        patient_name="ROE^RICHARD",
        calling_ae="MOD2",
        modality="CR",
        job_state=JobState.DEAD,
        analysis="lumbar_lateral",
        last_error="RuntimeError: model failed on attempt 3",
        spool=spool,
        when=base + dt.timedelta(minutes=5),
    )
    out.studies["dead_job"], out.jobs["dead_job"] = sid, jid or 0
    sid, jid, dids = add_study(
        db,
        accession="ACC003",
        patient_id="PAT-3",
        patient_name="POE^EDGAR",
        analysis="cervical_oblique",
        summary=CERVICAL_SUMMARY,
        results=("SR",),
        delivery_state=DeliveryState.DEAD,
        spool=spool,
        when=base + dt.timedelta(minutes=10),
    )
    out.studies["dead_delivery"], out.jobs["dead_delivery"], out.deliveries["dead_delivery"] = (
        sid,
        jid or 0,
        dids,
    )
    sid, jid, _ = add_study(
        db,
        accession="ACC004",
        patient_id="PAT-4",
        job_state=JobState.QUEUED,
        analysis=None,
        spool=spool,
        when=base + dt.timedelta(minutes=15),
    )
    out.studies["queued"], out.jobs["queued"] = sid, jid or 0
    with db.session() as s:
        out.admin = create_token(s, "alice", "admin", actor="test").secret
        out.auditor = create_token(s, "olivia", "auditor", actor="test").secret
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
