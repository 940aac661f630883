"""Response mapping: database rows of the record queries → the API's response models."""

from __future__ import annotations

from typing import Any

from cdss.api.schemas import DeliveryOut, InstanceOut, JobOut, ResultOut
from cdss.db.models import Delivery, Instance, Job, Result
from cdss.jobs.summary import JobSummary

__all__ = ["delivery_out", "instance_out", "job_out", "result_out", "summary_text"]


def summary_text(summary: dict[str, Any] | None) -> str | None:
    """One human-readable line from a stored job summary (:meth:`cdss.jobs.summary.JobSummary.text`)."""
    parsed = JobSummary.from_json(summary)
    return None if parsed is None else parsed.text()


def instance_out(row: Any) -> InstanceOut:
    inst: Instance = row.Instance
    return InstanceOut(
        id=inst.id,
        sop_instance_uid=inst.sop_instance_uid,
        sop_class_uid=inst.sop_class_uid,
        series_instance_uid=row.series_instance_uid,
        study_id=row.study_id,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        transfer_syntax_uid=inst.transfer_syntax_uid,
        size_bytes=inst.size_bytes,
        calling_ae_title=inst.calling_ae_title,
        called_ae_title=inst.called_ae_title,
        peer_address=inst.peer_address,
        received_at=inst.received_at,
        modality=inst.modality,
        body_part_examined=inst.body_part_examined,
        view_position=inst.view_position,
        laterality=inst.laterality,
        photometric_interpretation=inst.photometric_interpretation,
        rows=inst.rows,
        columns=inst.columns,
        instance_number=inst.instance_number,
    )


def job_out(row: Any) -> JobOut:
    job: Job = row.Job
    return JobOut(
        id=job.id,
        instance_id=job.instance_id,
        study_id=row.study_id,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        calling_ae_title=row.calling_ae_title,
        modality=row.modality,
        state=job.state,
        analysis=job.analysis,
        route_reason=job.route_reason,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        next_run_at=job.next_run_at,
        last_error=job.last_error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=job.duration_s,
        summary=job.summary,
        summary_text=summary_text(job.summary),
    )


def result_out(row: Any) -> ResultOut:
    res: Result = row.Result
    return ResultOut(
        id=res.id,
        job_id=res.job_id,
        kind=res.kind,
        sop_class_uid=res.sop_class_uid,
        sop_instance_uid=res.sop_instance_uid,
        series_instance_uid=res.series_instance_uid,
        size_bytes=res.size_bytes,
        model_name=res.model_name,
        model_version=res.model_version,
        created_at=res.created_at,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        analysis=row.analysis,
    )


def delivery_out(row: Any) -> DeliveryOut:
    d: Delivery = row.Delivery
    return DeliveryOut(
        id=d.id,
        result_id=d.result_id,
        job_id=row.job_id,
        kind=row.kind,
        destination=d.destination,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        state=d.state,
        attempts=d.attempts,
        max_attempts=d.max_attempts,
        next_attempt_at=d.next_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
    )
