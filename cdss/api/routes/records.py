"""Read endpoints for studies, instances (images), jobs, results and deliveries.

Every call is audited as 110112 Query (lists, histories) or 110103 DICOM Instances Accessed
(pixel thumbnails), in the same transaction as the read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from cdss.api import records
from cdss.api.auth import Reader, audit_read
from cdss.api.export import CSV_RESPONSES, ExportFormat, csv_response
from cdss.api.history import study_history
from cdss.api.params import (
    TEXT_PATTERN,
    Accession,
    AnalysisQ,
    CallingAE,
    Destination,
    Finding,
    Id,
    JobIdQ,
    Kind,
    Modality,
    Paging,
    PatientID,
    Since,
    StudyUID,
    Until,
    clamp_utc,
    paging,
)
from cdss.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    ErrorOut,
    InstanceOut,
    InstancePage,
    JobOut,
    JobPage,
    ResultOut,
    ResultPage,
    StudyHistory,
    StudyOut,
    StudyPage,
    StudyStatus,
)
from cdss.api.thumbnail import ThumbnailError, render_thumbnail
from cdss.audit import EventID
from cdss.db.models import DeliveryState, JobState

router = APIRouter(prefix="/api/v1", tags=["records"])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No, unknown or revoked token (audited as a Security Alert)."},
    403: {"model": ErrorOut, "description": "The token's role does not allow this (audited)."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such record."}}


def _respond(
    request: Request,
    principal: Any,
    page: Paging,
    flt: records.RecordFilter,
    lister: Any,
    page_model: type,
    item_model: type,
    name: str,
) -> Any:
    db = request.app.state.db
    with db.session() as session:
        total, items = lister(session, flt, page.limit, page.offset)
        audit_read(
            session,
            request,
            principal,
            results=len(items),
            description=f"search {name} ({len(items)} of {total})",
            study_instance_uid=flt.study_uid,
            patient_id=flt.patient_id,
            accession_number=flt.accession,
        )
    if page.format is ExportFormat.CSV:
        return csv_response(items, item_model, total=total, filename=f"cdss-{name}.csv")
    return page_model(total=total, limit=page.limit, offset=page.offset, items=items)


# ------------------------------------------------------------------ studies
@router.get(
    "/studies",
    response_model=StudyPage,
    summary="Search studies",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_studies(
    request: Request,
    principal: Reader,
    page: Annotated[Paging, Depends(paging)],
    since: Since = None,
    until: Until = None,
    calling_ae: CallingAE = None,
    modality: Modality = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    study_uid: StudyUID = None,
    status: Annotated[StudyStatus | None, Query(description="Derived study status.")] = None,
    analysis: AnalysisQ = None,
    finding: Finding = None,
) -> Any:
    """Studies, newest first, with their findings and a derived status (time range = first receipt)."""
    flt = records.RecordFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        calling_ae=calling_ae,
        modality=modality,
        patient_id=patient_id,
        accession=accession,
        study_uid=study_uid,
        status=status.value if status else None,
        analysis=analysis,
        finding=finding,
    )
    return _respond(request, principal, page, flt, records.list_studies, StudyPage, StudyOut, "studies")


@router.get(
    "/studies/by-accession/{accession}/history",
    response_model=list[StudyHistory],
    summary="A study's whole history by accession number",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def history_by_accession(
    request: Request,
    principal: Reader,
    accession: Annotated[
        str, Path(min_length=1, max_length=64, pattern=TEXT_PATTERN, description="Accession number.")
    ],
) -> Any:
    """Received → analysed → delivered, with timestamps and audit events, for every study with this
    accession number (usually one; accession numbers are not unique across issuers)."""
    db = request.app.state.db
    with db.session() as session:
        ids = records.study_ids_by_accession(session, accession)
        histories = [h for h in (study_history(session, i) for i in ids) if h is not None]
        audit_read(
            session,
            request,
            principal,
            results=len(histories),
            accession_number=accession,
            study_instance_uid=histories[0].study.study_instance_uid if len(histories) == 1 else None,
            patient_id=histories[0].study.patient_id if len(histories) == 1 else None,
            description=f"history of accession ({len(histories)} studies)",
        )
    if not histories:
        raise HTTPException(status_code=404, detail="no study with this accession number")
    return histories


@router.get(
    "/studies/{study_id}",
    response_model=StudyOut,
    summary="One study",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def get_study(request: Request, principal: Reader, study_id: Id) -> Any:
    db = request.app.state.db
    with db.session() as session:
        _, items = records.list_studies(session, records.RecordFilter(study_id=study_id), 1, 0)
        study = items[0] if items else None
        audit_read(
            session,
            request,
            principal,
            results=len(items),
            study_instance_uid=study.study_instance_uid if study else None,
            patient_id=study.patient_id if study else None,
            accession_number=study.accession_number if study else None,
            description="read study",
        )
    if study is None:
        raise HTTPException(status_code=404, detail=f"no study with id {study_id}")
    return study


@router.get(
    "/studies/{study_id}/history",
    response_model=StudyHistory,
    summary="A study's whole history",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def get_history(request: Request, principal: Reader, study_id: Id) -> Any:
    """Every instance, job, result, delivery and audit event of the study, plus a merged timeline."""
    db = request.app.state.db
    with db.session() as session:
        history = study_history(session, study_id)
        audit_read(
            session,
            request,
            principal,
            results=0 if history is None else 1,
            study_instance_uid=history.study.study_instance_uid if history else None,
            patient_id=history.study.patient_id if history else None,
            accession_number=history.study.accession_number if history else None,
            description="read study history",
        )
    if history is None:
        raise HTTPException(status_code=404, detail=f"no study with id {study_id}")
    return history


# ------------------------------------------------------------------ instances
@router.get(
    "/instances",
    response_model=InstancePage,
    summary="Search received images",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_instances(
    request: Request,
    principal: Reader,
    page: Annotated[Paging, Depends(paging)],
    since: Since = None,
    until: Until = None,
    calling_ae: CallingAE = None,
    modality: Modality = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    study_uid: StudyUID = None,
    analysis: AnalysisQ = None,
    finding: Finding = None,
) -> Any:
    """Received instances, newest first (time range = receipt)."""
    flt = records.RecordFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        calling_ae=calling_ae,
        modality=modality,
        patient_id=patient_id,
        accession=accession,
        study_uid=study_uid,
        analysis=analysis,
        finding=finding,
    )
    return _respond(
        request, principal, page, flt, records.list_instances, InstancePage, InstanceOut, "instances"
    )


# ------------------------------------------------------------------ jobs
@router.get(
    "/jobs",
    response_model=JobPage,
    summary="Search analysis jobs",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_jobs(
    request: Request,
    principal: Reader,
    page: Annotated[Paging, Depends(paging)],
    since: Since = None,
    until: Until = None,
    status: Annotated[JobState | None, Query(description="Job state.")] = None,
    analysis: AnalysisQ = None,
    finding: Finding = None,
    calling_ae: CallingAE = None,
    modality: Modality = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    study_uid: StudyUID = None,
) -> Any:
    """Analysis jobs, newest first (time range = creation)."""
    flt = records.RecordFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        status=status.value if status else None,
        analysis=analysis,
        finding=finding,
        calling_ae=calling_ae,
        modality=modality,
        patient_id=patient_id,
        accession=accession,
        study_uid=study_uid,
    )
    return _respond(request, principal, page, flt, records.list_jobs, JobPage, JobOut, "jobs")


@router.get(
    "/jobs/{job_id}", response_model=JobOut, summary="One job", responses={**AUTH_ERRORS, **NOT_FOUND}
)
def get_job(request: Request, principal: Reader, job_id: Id) -> Any:
    db = request.app.state.db
    with db.session() as session:
        job = records.get_job(session, job_id)
        audit_read(
            session,
            request,
            principal,
            results=0 if job is None else 1,
            study_instance_uid=job.study_instance_uid if job else None,
            patient_id=job.patient_id if job else None,
            accession_number=job.accession_number if job else None,
            description="read job",
        )
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
    return job


@router.get(
    "/jobs/{job_id}/overlay.png",
    summary="Thumbnail of a job's image with its overlay",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "PNG thumbnail. `X-Overlay: rendered` when the findings are drawn, `none` when "
            "only the source image could be shown.",
        },
        **AUTH_ERRORS,
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The source image is not readable from the spool."},
    },
)
def job_overlay(
    request: Request,
    principal: Reader,
    job_id: Id,
    size: Annotated[int, Query(ge=32, le=1024, description="Longest side, pixels.")] = 256,
) -> Response:
    """Audited as 110103 DICOM Instances Accessed (the image's pixels are shown)."""
    db = request.app.state.db
    settings = request.app.state.settings
    with db.session() as session:
        job = records.get_job(session, job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
        audit_read(
            session,
            request,
            principal,
            event=EventID.INSTANCES_ACCESSED,
            results=1,
            study_instance_uid=job.study_instance_uid,
            patient_id=job.patient_id,
            accession_number=job.accession_number,
            description=f"thumbnail of job {job_id}",
            detail={"job_id": job_id, "instance_id": job.instance_id},
        )
        try:
            png, overlay = render_thumbnail(session, settings, job_id, size)
        except ThumbnailError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
    return Response(
        content=png,
        media_type="image/png",
        headers={"X-Overlay": "rendered" if overlay else "none", "Cache-Control": "private, max-age=300"},
    )


# ------------------------------------------------------------------ results
@router.get(
    "/results",
    response_model=ResultPage,
    summary="Search produced result objects",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_results(
    request: Request,
    principal: Reader,
    page: Annotated[Paging, Depends(paging)],
    since: Since = None,
    until: Until = None,
    kind: Kind = None,
    job_id: JobIdQ = None,
    analysis: AnalysisQ = None,
    calling_ae: CallingAE = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    study_uid: StudyUID = None,
) -> Any:
    """SEG / SR / GSPS / SC objects, newest first (time range = creation)."""
    flt = records.RecordFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        kind=kind,
        job_id=job_id,
        analysis=analysis,
        calling_ae=calling_ae,
        patient_id=patient_id,
        accession=accession,
        study_uid=study_uid,
    )
    return _respond(request, principal, page, flt, records.list_results, ResultPage, ResultOut, "results")


# ------------------------------------------------------------------ deliveries
@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    summary="Search deliveries",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_deliveries(
    request: Request,
    principal: Reader,
    page: Annotated[Paging, Depends(paging)],
    since: Since = None,
    until: Until = None,
    status: Annotated[DeliveryState | None, Query(description="Delivery state.")] = None,
    destination: Destination = None,
    kind: Kind = None,
    job_id: JobIdQ = None,
    analysis: AnalysisQ = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    study_uid: StudyUID = None,
) -> Any:
    """Deliveries of results to destinations, newest first (time range = creation)."""
    flt = records.RecordFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        status=status.value if status else None,
        destination=destination,
        kind=kind,
        job_id=job_id,
        analysis=analysis,
        patient_id=patient_id,
        accession=accession,
        study_uid=study_uid,
    )
    return _respond(
        request, principal, page, flt, records.list_deliveries, DeliveryPage, DeliveryOut, "deliveries"
    )


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryOut,
    summary="One delivery",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def get_delivery(request: Request, principal: Reader, delivery_id: Id) -> Any:
    db = request.app.state.db
    with db.session() as session:
        d = records.get_delivery(session, delivery_id)
        audit_read(
            session,
            request,
            principal,
            results=0 if d is None else 1,
            study_instance_uid=d.study_instance_uid if d else None,
            patient_id=d.patient_id if d else None,
            accession_number=d.accession_number if d else None,
            description="read delivery",
        )
    if d is None:
        raise HTTPException(status_code=404, detail=f"no delivery with id {delivery_id}")
    return d
