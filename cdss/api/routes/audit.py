"""Reading the audit trail (any role); every read is itself audited as 110101 Audit Log Used."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import StringConstraints
from sqlalchemy import select

from cdss.api.auth import Reader, audit_read
from cdss.api.export import CSV_RESPONSES, ExportFormat, csv_response
from cdss.api.params import (
    MAX_ID,
    MAX_LIMIT,
    TEXT_PATTERN,
    Accession,
    PatientID,
    Since,
    StudyUID,
    TextQ,
    Until,
    clamp_utc,
)
from cdss.api.routes.records import AUTH_ERRORS, NOT_FOUND
from cdss.api.schemas import AuditEventOut, AuditPage, ErrorOut, VerifyOut
from cdss.audit import EventID
from cdss.audit.message import AuditSource, audit_message_xml
from cdss.audit.query import AuditFilter, count_events, select_events
from cdss.audit.verify import parse_anchor, verify_chain
from cdss.db.models import AuditEvent

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class Order(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


@router.get(
    "/events",
    response_model=AuditPage,
    summary="Search the audit trail",
    responses={**CSV_RESPONSES, **AUTH_ERRORS},
)
def list_events(
    request: Request,
    principal: Reader,
    since: Since = None,
    until: Until = None,
    event: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=TEXT_PATTERN,
            description="Event ID code (110113) or meaning (Security Alert).",
        ),
    ] = None,
    event_type: Annotated[
        str | None, Query(max_length=64, pattern=TEXT_PATTERN, description="Event type meaning, e.g. Login.")
    ] = None,
    action: Annotated[str | None, Query(pattern="^[CRUDEcrude]$", description="Event Action Code.")] = None,
    user: Annotated[
        str | None, Query(max_length=128, pattern=TEXT_PATTERN, description="Who (exact).")
    ] = None,
    source: Annotated[
        str | None, Query(max_length=128, pattern=TEXT_PATTERN, description="Network address (exact).")
    ] = None,
    study_uid: StudyUID = None,
    patient_id: PatientID = None,
    accession: Accession = None,
    outcome: Annotated[int | None, Query(ge=0, le=12, description="Outcome indicator (0, 4, 8, 12).")] = None,
    failures_only: Annotated[bool, Query(description="Only events with a non-zero outcome.")] = False,
    text: Annotated[TextQ, Query(description="Substring of the description (case-insensitive).")] = None,
    seq_from: Annotated[int | None, Query(ge=1, le=2**62, description="Smallest seq.")] = None,
    seq_to: Annotated[int | None, Query(ge=1, le=2**62, description="Largest seq.")] = None,
    order: Annotated[Order, Query(description="newest (default) or oldest first.")] = Order.NEWEST,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Events to skip.")] = 0,
    format: Annotated[ExportFormat, Query(description="json or csv.")] = ExportFormat.JSON,
) -> Any:
    """Audit events with their chain fields; this search is recorded as 110101 Audit Log Used."""
    flt = AuditFilter(
        since=clamp_utc(since),
        until=clamp_utc(until),
        event=event,
        event_type=event_type,
        action=action,
        user=user,
        source=source,
        study_instance_uid=study_uid,
        patient_id=patient_id,
        accession_number=accession,
        outcome=outcome,
        failures_only=failures_only,
        text=text,
        seq_from=seq_from,
        seq_to=seq_to,
    )
    with request.app.state.db.session() as session:
        total = count_events(session, flt)
        rows = session.execute(
            select_events(flt, newest_first=order is Order.NEWEST).limit(limit).offset(offset)
        ).scalars()
        items = [AuditEventOut.model_validate(r) for r in rows]
        audit_read(
            session,
            request,
            principal,
            event=EventID.AUDIT_LOG_USED,
            results=len(items),
            description=f"audit trail searched ({len(items)} of {total})",
            detail={"filter": flt.as_dict()},
        )
    if format is ExportFormat.CSV:
        return csv_response(items, AuditEventOut, total=total, filename="cdss-audit.csv")
    return AuditPage(total=total, limit=limit, offset=offset, items=items)


Seq = Annotated[int, Path(ge=1, le=2**62, description="Chain position of the event.")]


def _event(request: Request, principal: Any, seq: int) -> AuditEvent:
    with request.app.state.db.session() as session:
        row = session.execute(select(AuditEvent).where(AuditEvent.seq == seq)).scalar_one_or_none()
        audit_read(
            session,
            request,
            principal,
            event=EventID.AUDIT_LOG_USED,
            results=0 if row is None else 1,
            description=f"audit event {seq} read",
        )
    if row is None:
        raise HTTPException(status_code=404, detail=f"no audit event with seq {seq}")
    return row


@router.get(
    "/events/{seq}",
    response_model=AuditEventOut,
    summary="One audit event",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def get_event(request: Request, principal: Reader, seq: Seq) -> Any:
    return AuditEventOut.model_validate(_event(request, principal, seq))


@router.get(
    "/events/{seq}/dicom",
    summary="One audit event as a DICOM audit message (PS3.15 A.5 XML)",
    response_class=Response,
    responses={
        200: {
            "content": {"application/xml": {"schema": {"type": "string"}}},
            "description": "The AuditMessage the syslog forwarder sends for this event.",
        },
        **AUTH_ERRORS,
        **NOT_FOUND,
    },
)
def get_event_dicom(request: Request, principal: Reader, seq: Seq) -> Response:
    row = _event(request, principal, seq)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + audit_message_xml(row, _source(request))
    return Response(content=xml, media_type="application/xml")


@router.get(
    "/verify",
    response_model=VerifyOut,
    summary="Verify the audit hash chain",
    responses={**AUTH_ERRORS, 422: {"model": ErrorOut, "description": "An anchor is not SEQ:HASH."}},
)
def verify(
    request: Request,
    principal: Reader,
    anchor: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,17}:[0-9a-fA-F]{64}$")]] | None,
        Query(
            max_length=100,
            description="External anchors `SEQ:HASH` (repeatable): from the syslog receiver or an earlier verify.",
        ),
    ] = None,
) -> Any:
    """Walk the whole chain; name the first bad seq. Keep (head_seq, head_hash) outside the node."""
    try:
        anchors = [parse_anchor(a) for a in anchor or []]
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    with request.app.state.db.session() as session:
        report = verify_chain(session, anchors=anchors)
        audit_read(
            session,
            request,
            principal,
            event=EventID.AUDIT_LOG_USED,
            results=report.events,
            description="audit chain verified: "
            + ("ok" if report.problem is None else f"FAILED at seq {report.problem.seq}"),
            detail={"verify": report.as_dict()},
        )
    return VerifyOut.model_validate(report.as_dict())


def _source(request: Request) -> AuditSource:
    settings = request.app.state.settings
    return AuditSource.for_node(
        settings.dicom.ae_title, settings.audit.source_id, settings.audit.enterprise_site_id
    )
