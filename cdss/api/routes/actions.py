"""Admin actions: re-run a job, retry a dead delivery. Each attempt is an audit event.

* re-run → 110103 *DICOM Instances Accessed*, action E (the instance is processed again), by
  the admin token, with the study/patient participants;
* retry → 110102 *Begin Transferring DICOM Instances*, action E (the result is sent again);
* an attempt the state machine refuses (wrong state) is recorded with outcome 4 and answered 409.

The state changes are those of :func:`cdss.jobs.states.rerun_job` and
:func:`cdss.dispatch.states.retry_delivery` (one transaction each); the audit event follows in
its own transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from cdss.api import records
from cdss.api.auth import Admin, Principal
from cdss.api.params import Id
from cdss.api.routes.records import AUTH_ERRORS, NOT_FOUND
from cdss.api.schemas import DeliveryOut, ErrorOut, JobOut
from cdss.audit import Action, EventID, Outcome, record_event

router = APIRouter(prefix="/api/v1", tags=["actions"])

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The record's state does not allow this action (audited)."}
}


def _audit_action(
    request: Request,
    principal: Principal,
    event: EventID,
    *,
    ok: bool,
    description: str,
    participants: Any,
    detail: dict[str, Any],
) -> None:
    with request.app.state.db.session() as session:
        record_event(
            session,
            event,
            action=Action.EXECUTE,
            outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
            user=principal.name,
            source=principal.source,
            study_instance_uid=getattr(participants, "study_instance_uid", None),
            patient_id=getattr(participants, "patient_id", None),
            accession_number=getattr(participants, "accession_number", None),
            description=description,
            detail=detail,
        )


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
    from cdss.jobs.states import JobStateError, rerun_job

    db = request.app.state.db
    with db.session() as session:
        before = records.get_job(session, job_id)
    if before is None:
        raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
    detail = {"job_id": job_id, "instance_id": before.instance_id, "force": force, "request": "rerun"}
    try:
        rerun_job(db, job_id, force=force)
    except JobStateError as exc:
        _audit_action(
            request,
            principal,
            EventID.INSTANCES_ACCESSED,
            ok=False,
            description=f"re-run of job {job_id} refused: {exc}",
            participants=before,
            detail={**detail, "state": before.state.value},
        )
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _audit_action(
        request,
        principal,
        EventID.INSTANCES_ACCESSED,
        ok=True,
        description=f"job {job_id} queued again (was {before.state.value})",
        participants=before,
        detail={**detail, "previous_state": before.state.value},
    )
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
    from cdss.dispatch.states import DeliveryStateError, retry_delivery

    db = request.app.state.db
    with db.session() as session:
        before = records.get_delivery(session, delivery_id)
    if before is None:
        raise HTTPException(status_code=404, detail=f"no delivery with id {delivery_id}")
    detail = {
        "delivery_id": delivery_id,
        "result_id": before.result_id,
        "destination": before.destination,
        "kind": before.kind,
        "request": "retry",
    }
    try:
        retry_delivery(db, delivery_id)
    except DeliveryStateError as exc:
        _audit_action(
            request,
            principal,
            EventID.BEGIN_TRANSFERRING,
            ok=False,
            description=f"retry of delivery {delivery_id} refused: {exc}",
            participants=before,
            detail={**detail, "state": before.state.value},
        )
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _audit_action(
        request,
        principal,
        EventID.BEGIN_TRANSFERRING,
        ok=True,
        description=f"delivery {delivery_id} ({before.kind} to {before.destination}) queued again",
        participants=before,
        detail=detail,
    )
    wake = getattr(request.app.state.node, "wake_dispatch", None)
    if wake is not None:
        wake()
    with db.session() as session:
        return records.get_delivery(session, delivery_id)
