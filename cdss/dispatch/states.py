"""Delivery state machine: claim per destination with a lease, record C-STORE outcomes, retry, dead letter.

::

    pending ──claim (lease, attempts+1)──▶ sending ──0000/B000/B006/B007──▶ delivered
       ▲                                     │
       │◀── any other status / no association / timeout, attempts < max (back-off) ┘
       │                                     └── attempts = max ──▶ dead ──retry_delivery──▶ pending
       │◀── lease expired / sender process gone (reconcile)

A batch is claimed for one destination (same name, AE title, host and port) so that it is sent
over one association. Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and the write lock on
SQLite, so concurrent dispatcher threads or processes never send the same delivery at the same time.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from cdss.audit import Action, EventID, Outcome, record_event
from cdss.config import DispatchSettings
from cdss.db import Database, Delivery, DeliveryState, Instance, Job, Result, Series, Study, utcnow
from cdss.leases import backoff_s, owner_is_gone

__all__ = [
    "DELIVERED_STATUSES",
    "ClaimedDelivery",
    "DeliveryStateError",
    "RecordReport",
    "SendOutcome",
    "claim_batch",
    "count_deliveries",
    "reconcile_deliveries",
    "record_outcomes",
    "requeue_delivery",
    "retry_delivery",
]

#: C-STORE statuses that count as delivered (success and the three storage warnings).
DELIVERED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})

_ERROR_CHARS = 2000


class DeliveryStateError(ValueError):
    """A transition the delivery's state does not allow (the message says which)."""


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery leased to a dispatcher, with what is needed to send it."""

    id: int
    result_id: int
    job_id: int
    destination: str
    ae_title: str
    host: str
    port: int
    attempts: int
    max_attempts: int
    spool_key: str
    sop_class_uid: str
    sop_instance_uid: str
    kind: str

    @property
    def target(self) -> tuple[str, str, str, int]:
        return (self.destination, self.ae_title, self.host, self.port)


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one object in a C-STORE attempt.

    ``status`` is the DIMSE status of the C-STORE-RSP, or ``None`` when no response came
    (no association, presentation context refused, timeout, abort); ``error`` says why.
    """

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and self.status in DELIVERED_STATUSES


@dataclass
class RecordReport:
    delivered: list[int]
    retry: list[int]
    dead: list[int]
    lost: list[int]
    #: job id -> seconds from receipt of its source instance to its last delivery (jobs now fully delivered)
    completed_jobs: dict[int, float]


def _due(model: Any, now: dt.datetime) -> list[Any]:
    return [model.state == DeliveryState.PENDING, model.next_attempt_at <= now]


def claim_batch(
    db: Database, owner: str, lease_s: float, limit: int, *, now: dt.datetime | None = None
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due pending deliveries, all to the destination of the oldest one.

    Returns an empty list when nothing is due.
    """
    now = now or utcnow()
    cand = aliased(Delivery, name="cand")
    with db.session() as session:
        first = session.execute(
            select(cand.destination, cand.ae_title, cand.host, cand.port)
            .where(*_due(cand, now))
            .order_by(cand.next_attempt_at, cand.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if first is None:
            return []
        ids = (
            select(cand.id)
            .where(
                *_due(cand, now),
                cand.destination == first.destination,
                cand.ae_title == first.ae_title,
                cand.host == first.host,
                cand.port == first.port,
            )
            .order_by(cand.next_attempt_at, cand.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = list(
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.state == DeliveryState.PENDING)
                .values(
                    state=DeliveryState.SENDING,
                    lease_owner=owner,
                    lease_expires_at=now + dt.timedelta(seconds=lease_s),
                    attempts=Delivery.attempts + 1,
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).scalars()
        )
        if not claimed:
            return []
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.result_id,
                Result.job_id,
                Delivery.destination,
                Delivery.ae_title,
                Delivery.host,
                Delivery.port,
                Delivery.attempts,
                Delivery.max_attempts,
                Result.spool_key,
                Result.sop_class_uid,
                Result.sop_instance_uid,
                Result.kind,
            )
            .join(Result, Result.id == Delivery.result_id)
            .where(Delivery.id.in_(claimed))
            .order_by(Delivery.id)
        ).all()
    return [ClaimedDelivery(**row._asdict()) for row in rows]


def _participants(session: Any, result_ids: list[int]) -> dict[int, Any]:
    rows = session.execute(
        select(
            Result.id.label("result_id"),
            Result.job_id,
            Study.study_instance_uid,
            Study.patient_id,
            Study.accession_number,
            Instance.received_at,
        )
        .join(Job, Job.id == Result.job_id)
        .join(Instance, Instance.id == Job.instance_id)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Result.id.in_(result_ids))
    ).all()
    return {r.result_id: r for r in rows}


def record_outcomes(
    db: Database,
    owner: str,
    outcomes: list[tuple[ClaimedDelivery, SendOutcome]],
    settings: DispatchSettings,
    *,
    now: dt.datetime | None = None,
) -> RecordReport:
    """Record one association's outcomes in one transaction, with audit events.

    Delivered objects get one 110104 *DICOM Instances Transferred* event (action ``R``) per
    study and destination; dead-lettered ones an event with outcome *serious failure* and the
    reason. A delivery whose lease was lost meanwhile is left alone (reported as ``lost``).
    """
    now = now or utcnow()
    report = RecordReport([], [], [], [], {})
    if not outcomes:
        return report
    with db.session() as session:
        by_id = {c.id: (c, o) for c, o in outcomes}
        rows = session.execute(
            select(Delivery)
            .where(
                Delivery.id.in_(list(by_id)),
                Delivery.state == DeliveryState.SENDING,
                Delivery.lease_owner == owner,
            )
            .with_for_update()
        ).scalars()
        held = {d.id: d for d in rows}
        report.lost = sorted(set(by_id) - set(held))
        people = _participants(session, [c.result_id for c, _ in outcomes])
        sent: dict[tuple[str, tuple[str, str, str, int]], list[ClaimedDelivery]] = defaultdict(list)
        dead: dict[tuple[str, tuple[str, str, str, int]], list[tuple[ClaimedDelivery, str]]] = defaultdict(
            list
        )
        for delivery_id, delivery in held.items():
            claimed, outcome = by_id[delivery_id]
            delivery.last_status = outcome.status
            delivery.lease_owner = None
            delivery.lease_expires_at = None
            study = people[claimed.result_id].study_instance_uid if claimed.result_id in people else ""
            if outcome.delivered:
                delivery.state = DeliveryState.DELIVERED
                delivery.delivered_at = now
                delivery.last_error = None
                report.delivered.append(delivery_id)
                sent[(study, claimed.target)].append(claimed)
                continue
            reason = outcome.error or (
                f"C-STORE status 0x{outcome.status:04X}" if outcome.status is not None else "no response"
            )
            delivery.last_error = reason[:_ERROR_CHARS]
            if delivery.attempts >= delivery.max_attempts:
                delivery.state = DeliveryState.DEAD
                report.dead.append(delivery_id)
                dead[(study, claimed.target)].append((claimed, reason))
            else:
                delivery.state = DeliveryState.PENDING
                delivery.next_attempt_at = now + dt.timedelta(
                    seconds=backoff_s(settings.initial_backoff_s, delivery.attempts, settings.max_backoff_s)
                )
                report.retry.append(delivery_id)
        session.flush()

        for (study, target), items in sent.items():
            _audit_transfer(session, people, study, target, items, Outcome.SUCCESS, "")
        for (study, target), failures in dead.items():
            items = [c for c, _ in failures]
            reasons = sorted({r for _, r in failures})
            _audit_transfer(
                session, people, study, target, items, Outcome.SERIOUS_FAILURE, "; ".join(reasons)
            )

        jobs = {by_id[i][0].job_id for i in report.delivered}
        for job_id in sorted(jobs):
            remaining = session.execute(
                select(func.count())
                .select_from(Delivery)
                .join(Result, Result.id == Delivery.result_id)
                .where(Result.job_id == job_id, Delivery.state != DeliveryState.DELIVERED)
            ).scalar_one()
            if remaining == 0:
                received = next(p.received_at for p in people.values() if p.job_id == job_id)
                report.completed_jobs[job_id] = (now - received).total_seconds()
    return report


def _audit_transfer(
    session: Any,
    people: dict[int, Any],
    study: str,
    target: tuple[str, str, str, int],
    items: list[ClaimedDelivery],
    outcome: Outcome,
    reason: str,
) -> None:
    name, ae_title, host, port = target
    who = people.get(items[0].result_id)
    if outcome is Outcome.SUCCESS:
        description = f"{len(items)} result object(s) sent to {name} ({ae_title}@{host}:{port})"
    else:
        description = (
            f"{len(items)} result object(s) dead-lettered for {name} ({ae_title}@{host}:{port}) "
            f"after {max(i.attempts for i in items)} attempts: {reason}"
        )
    classes = sorted({i.sop_class_uid for i in items})
    detail: dict[str, Any] = {
        "destination": name,
        "ae_title": ae_title,
        "host": host,
        "port": port,
        "delivery_ids": [i.id for i in items],
        "sop_instance_uids": [i.sop_instance_uid for i in items],
        "kinds": [i.kind for i in items],
    }
    if len(classes) == 1:
        detail["sop_class_uid"] = classes[0]
    else:
        detail["sop_class_uids"] = classes
    if reason:
        detail["reason"] = reason[:_ERROR_CHARS]
    record_event(
        session,
        EventID.INSTANCES_TRANSFERRED,
        action=Action.READ,
        outcome=outcome,
        user=f"AETITLE={ae_title}",
        source=host,
        study_instance_uid=study or None,
        patient_id=who.patient_id if who else None,
        accession_number=who.accession_number if who else None,
        description=description,
        detail=detail,
    )


def reconcile_deliveries(db: Database, *, now: dt.datetime | None = None) -> list[int]:
    """Return ``sending`` deliveries whose lease expired (or whose sender exited) to ``pending``.

    The object may have reached the destination before the sender died; sending it again is
    harmless (same SOP Instance UID: the PACS keeps one copy). Returns the ids requeued or
    dead-lettered.
    """
    now = now or utcnow()
    with db.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.lease_owner, Delivery.lease_expires_at).where(
                Delivery.state == DeliveryState.SENDING
            )
        ).all()
    changed: list[int] = []
    for row in rows:
        gone = owner_is_gone(row.lease_owner)
        if not (gone or row.lease_expires_at is None or row.lease_expires_at < now):
            continue
        with db.session() as session:
            cond = [Delivery.id == row.id, Delivery.state == DeliveryState.SENDING]
            cond.append(
                Delivery.lease_owner == row.lease_owner if row.lease_owner else Delivery.lease_owner.is_(None)
            )
            if not gone:
                cond.append(Delivery.lease_expires_at < now)
            d = session.execute(select(Delivery).where(*cond).with_for_update()).scalar_one_or_none()
            if d is None:
                continue
            d.last_error = f"sender {row.lease_owner} {'exited' if gone else 'did not finish in time'}"
            d.lease_owner = None
            d.lease_expires_at = None
            d.state = DeliveryState.DEAD if d.attempts >= d.max_attempts else DeliveryState.PENDING
            d.next_attempt_at = now
            changed.append(d.id)
    return changed


def requeue_delivery(session: Session, delivery_id: int, *, now: dt.datetime) -> Delivery:
    """Inside the caller's transaction: a dead delivery back to ``pending`` now, fresh attempts.

    Raises :class:`DeliveryStateError` for an unknown delivery or one that is not dead.
    """
    d = session.execute(
        select(Delivery).where(Delivery.id == delivery_id).with_for_update()
    ).scalar_one_or_none()
    if d is None:
        raise DeliveryStateError(f"delivery {delivery_id} does not exist")
    if d.state is not DeliveryState.DEAD:
        raise DeliveryStateError(
            f"delivery {delivery_id} is {d.state.value}; only dead deliveries are retried"
        )
    d.state = DeliveryState.PENDING
    d.attempts = 0
    d.next_attempt_at = now
    session.flush()
    return d


def retry_delivery(db: Database, delivery_id: int, *, now: dt.datetime | None = None) -> Delivery:
    """Send a dead delivery again (one transaction, not audited; administrators use
    :func:`cdss.dispatch.admin.retry`, which audits the request in the same transaction).

    Raises
    ------
    DeliveryStateError
        Unknown delivery, or one that is not dead.
    """
    with db.session() as session:
        d = requeue_delivery(session, delivery_id, now=now or utcnow())
        session.expunge(d)
        return d


def count_deliveries(db: Database) -> dict[DeliveryState, int]:
    """Number of deliveries per state (every state present)."""
    with db.session() as session:
        rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
    counts = dict.fromkeys(DeliveryState, 0)
    counts.update({state: n for state, n in rows})
    return counts
