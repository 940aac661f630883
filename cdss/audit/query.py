"""Searching the audit trail (shared by ``cdss audit list`` and ``GET /api/v1/audit/events``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cdss.audit.chain import CHAINED_FIELDS
from cdss.db.models import AuditEvent

__all__ = ["EXPORT_COLUMNS", "AuditFilter", "count_events", "event_dict", "iter_events", "select_events"]

#: Column order of CSV / JSON exports (every stored column, chain fields included).
EXPORT_COLUMNS = (*CHAINED_FIELDS, "hash")


@dataclass
class AuditFilter:
    """Conditions on audit events; ``None`` means "any". Text matches are exact unless noted.

    Attributes
    ----------
    since, until
        ``occurred_at`` range, UTC, ``since`` inclusive and ``until`` exclusive.
    event
        DCM Event ID code (``110113``) or its meaning (``Security Alert``, case-insensitive).
    event_type
        Event Type Code meaning (``Login``), case-insensitive.
    user, source
        Who (token name, ``AETITLE=…``, ``cdss``) and from where (address).
    outcome
        Exact Event Outcome Indicator (0, 4, 8, 12); ``failures_only`` selects every non-zero one.
    text
        Case-insensitive substring of the description.
    seq_from, seq_to
        Inclusive ``seq`` range.
    """

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    event: str | None = None
    event_type: str | None = None
    action: str | None = None
    user: str | None = None
    source: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    outcome: int | None = None
    failures_only: bool = False
    text: str | None = None
    seq_from: int | None = None
    seq_to: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The conditions that are set (for the audit detail of a search)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value is False:
                continue
            out[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out


def _where(stmt: Select[Any], flt: AuditFilter) -> Select[Any]:
    if flt.since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < flt.until)
    if flt.event:
        if flt.event.isdigit():
            stmt = stmt.where(AuditEvent.event_id == flt.event)
        else:
            stmt = stmt.where(func.lower(AuditEvent.event_name) == flt.event.lower())
    if flt.event_type:
        stmt = stmt.where(func.lower(AuditEvent.event_type) == flt.event_type.lower())
    if flt.action:
        stmt = stmt.where(AuditEvent.action == flt.action.upper())
    if flt.user is not None:
        stmt = stmt.where(AuditEvent.user == flt.user)
    if flt.source is not None:
        stmt = stmt.where(AuditEvent.source == flt.source)
    if flt.study_instance_uid is not None:
        stmt = stmt.where(AuditEvent.study_instance_uid == flt.study_instance_uid)
    if flt.patient_id is not None:
        stmt = stmt.where(AuditEvent.patient_id == flt.patient_id)
    if flt.accession_number is not None:
        stmt = stmt.where(AuditEvent.accession_number == flt.accession_number)
    if flt.outcome is not None:
        stmt = stmt.where(AuditEvent.outcome == flt.outcome)
    if flt.failures_only:
        stmt = stmt.where(AuditEvent.outcome != 0)
    if flt.text:
        stmt = stmt.where(func.lower(AuditEvent.description).contains(flt.text.lower(), autoescape=True))
    if flt.seq_from is not None:
        stmt = stmt.where(AuditEvent.seq >= flt.seq_from)
    if flt.seq_to is not None:
        stmt = stmt.where(AuditEvent.seq <= flt.seq_to)
    return stmt


def select_events(flt: AuditFilter, *, newest_first: bool = False) -> Select[AuditEvent]:
    """``SELECT`` of the matching events in chain order (or newest first)."""
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
    return _where(select(AuditEvent), flt).order_by(order)


def count_events(session: Session, flt: AuditFilter) -> int:
    return int(session.execute(_where(select(func.count(AuditEvent.id)), flt)).scalar_one())


def iter_events(
    session: Session, flt: AuditFilter, *, batch: int = 1000, limit: int | None = None
) -> Iterator[AuditEvent]:
    """Yield matching events in chain order, ``batch`` rows per query (bounded memory)."""
    last: int | None = None
    remaining = limit
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        stmt = select_events(flt).limit(size)
        if last is not None:
            stmt = stmt.where(AuditEvent.seq > last)
        rows = list(session.execute(stmt).scalars())
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        if remaining is not None:
            remaining -= len(rows)
        session.expunge_all()


def event_dict(row: AuditEvent) -> dict[str, Any]:
    """A JSON-ready dict of one event (times as ISO 8601 UTC)."""
    out: dict[str, Any] = {}
    for name in EXPORT_COLUMNS:
        value = getattr(row, name)
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        out[name] = value
    return out
