"""Recording audit events inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cdss.audit.chain import GENESIS_HASH, chain_hash
from cdss.audit.vocabulary import Action, EventID, EventType, Outcome
from cdss.db.models import AuditEvent, utcnow

__all__ = ["record_event"]

_PG_LOCK_KEY = 0x0CD55A0D  # advisory lock serialising chain appends on PostgreSQL


def _to_naive_micro(value: dt.datetime) -> dt.datetime:
    # Round to microseconds, the resolution both SQLite and PostgreSQL keep, so the hash of the
    # stored row equals the hash computed here.
    return value.astimezone(dt.UTC).replace(microsecond=value.microsecond)


def record_event(
    session: Session,
    event: EventID,
    *,
    action: Action,
    outcome: Outcome = Outcome.SUCCESS,
    event_type: EventType | None = None,
    user: str | None = None,
    source: str | None = None,
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    description: str = "",
    detail: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> AuditEvent:
    """Append one event to the audit chain in the caller's transaction (flushed, not committed).

    Parameters
    ----------
    session
        Open session; the caller commits. Appends are serialised: SQLite by its write lock
        (``BEGIN IMMEDIATE``), PostgreSQL by a transaction-level advisory lock.
    event
        PS3.15 A.5 Event ID.
    action
        Event Action Code.
    outcome
        Event Outcome Indicator.
    event_type
        Optional Event Type Code (subtype).
    user
        Who: calling AE title (``AETITLE=...``), API token name, or ``cdss`` for the node itself.
    source
        From where: network access point (IP address / host).
    study_instance_uid, patient_id, accession_number
        Participant objects (patient data stays in the audit trail, never in the application log).
    description
        Human-readable summary (no PHI beyond the participant fields).
    detail
        Extra JSON-serialisable facts (statuses, counts, SOP Instance UIDs, reasons).
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    head = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq = 1 if head is None else head.seq + 1
    prev_hash = GENESIS_HASH if head is None else head.hash
    fields: dict[str, Any] = {
        "seq": seq,
        "occurred_at": _to_naive_micro(occurred_at or utcnow()),
        "event_id": event.code,
        "event_name": event.meaning,
        "event_type": event_type.meaning if event_type else None,
        "action": action.value,
        "outcome": int(outcome),
        "user": user,
        "source": source,
        "study_instance_uid": study_instance_uid,
        "patient_id": patient_id,
        "accession_number": accession_number,
        "description": description,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    row = AuditEvent(**fields, hash=chain_hash(prev_hash, fields))
    session.add(row)
    session.flush()
    return row
