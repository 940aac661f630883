"""Admin actions: re-run a job, retry a dead delivery. Each attempt is an audit event.

* re-run → 110103 *DICOM Instances Accessed*, action E (the instance is processed again), by
  the admin token, with the study/patient participants;
* retry → 110102 *Begin Transferring DICOM Instances*, action E (the result is sent again);
* an attempt the state machine refuses (wrong state) is recorded with outcome 4 and answered 409.

The services are :func:`cdss.jobs.admin.rerun` and :func:`cdss.dispatch.admin.retry` (shared
with the CLI): each state change commits in one transaction with its audit event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from cdss.api import records
from cdss.api.auth import Admin
from cdss.api.params import Id
from cdss.api.routes.records import AUTH_ERRORS, NOT_FOUND
from cdss.api.schemas import DeliveryOut, ErrorOut, JobOut
from cdss.dispatch import admin as delivery_admin
from cdss.dispatch.states import DeliveryStateError
from cdss.jobs import admin as job_admin
from cdss.jobs.states import JobStateError

router = APIRouter(prefix="/api/v1", tags=["actions"])

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The record's state does not allow this action (audited)."}
}


@router.post(
    "/jobs/{job_id}/rerun",
    response_model=JobOut,
    summary="Re-run an analysis job (admin)",
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def rerun(
    request: Request,
    principal: Admin,
    job_id: Id,
    force: Annotated[
        bool,
        Query(description="Also re-run a succeeded / not-applicable job (produces a second set of results)."),
    ] = False,
) -> Any:
    """Queue the job again with a fresh attempt budget. Without `force` only dead jobs are re-run."""
    db = request.app.state.db
    with db.session() as session:
        if records.get_job(session, job_id) is None:
            raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
    try:
        job_admin.rerun(db, job_id, force=force, user=principal.name, source=principal.source)
    except JobStateError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    node = request.app.state.node
    submit = getattr(node, "submit_job", None)
    if submit is not None:
        submit(job_id)
    with db.session() as session:
        return records.get_job(session, job_id)


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    summary="Retry a dead delivery (admin)",
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def retry(request: Request, principal: Admin, delivery_id: Id) -> Any:
    """Put a dead delivery back to `pending` now, with a fresh attempt budget."""
    db = request.app.state.db
    with db.session() as session:
        if records.get_delivery(session, delivery_id) is None:
            raise HTTPException(status_code=404, detail=f"no delivery with id {delivery_id}")
    try:
        delivery_admin.retry(db, delivery_id, user=principal.name, source=principal.source)
    except DeliveryStateError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    wake = getattr(request.app.state.node, "wake_dispatch", None)
    if wake is not None:
        wake()
    with db.session() as session:
        return records.get_delivery(session, delivery_id)
