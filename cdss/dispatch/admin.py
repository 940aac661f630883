"""Administrator actions on deliveries, each with its audit event in the same transaction.

The admin API (``POST /api/v1/deliveries/{id}/retry``) and ``cdss deliveries retry`` both call
:func:`retry`: the delivery's return to ``pending`` and its 110102 *Begin Transferring DICOM
Instances* event (action E, the result is sent again) commit together. A request the state
machine refuses is recorded with outcome 4 (minor failure) and the error is raised again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.audit import Action, EventID, Outcome, job_participants, record_event
from cdss.db import Database, Delivery, Result, utcnow
from cdss.dispatch.states import DeliveryStateError, requeue_delivery

__all__ = ["retry"]


def _audit(
    session: Session,
    *,
    ok: bool,
    user: str,
    source: str | None,
    job_id: int | None,
    description: str,
    detail: dict[str, Any],
) -> None:
    who = job_participants(session, job_id)
    record_event(
        session,
        EventID.BEGIN_TRANSFERRING,
        action=Action.EXECUTE,
        outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        user=user,
        source=source,
        study_instance_uid=who.study_instance_uid,
        patient_id=who.patient_id,
        accession_number=who.accession_number,
        description=description,
        detail=detail,
    )


def _facts(session: Session, delivery_id: int) -> tuple[int | None, dict[str, Any]]:
    row = session.execute(
        select(Delivery.result_id, Delivery.destination, Delivery.state, Result.kind, Result.job_id)
        .join(Result, Result.id == Delivery.result_id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None, {}
    facts = {"result_id": row.result_id, "destination": row.destination, "kind": row.kind}
    return row.job_id, {**facts, "state": row.state.value}


def retry(
    db: Database, delivery_id: int, *, user: str, source: str | None, now: dt.datetime | None = None
) -> Delivery:
    """Send a dead delivery again (fresh attempt budget, starting now), audited (module docstring).

    Parameters
    ----------
    user, source
        Who asked (API token name, ``cli:<login>``) and from where (client address, host name).

    Raises
    ------
    DeliveryStateError
        Unknown delivery, or one that is not dead (the refusal is audited first).
    """
    now = now or utcnow()
    detail: dict[str, Any] = {"delivery_id": delivery_id, "request": "retry"}
    try:
        with db.session() as session:
            job_id, facts = _facts(session, delivery_id)
            delivery = requeue_delivery(session, delivery_id, now=now)
            facts.pop("state", None)
            _audit(
                session,
                ok=True,
                user=user,
                source=source,
                job_id=job_id,
                description=(
                    f"delivery {delivery_id} ({facts.get('kind')} to {delivery.destination}) queued again"
                ),
                detail={**detail, **facts},
            )
            session.expunge(delivery)
            return delivery
    except DeliveryStateError as exc:
        with db.session() as session:
            job_id, facts = _facts(session, delivery_id)
            _audit(
                session,
                ok=False,
                user=user,
                source=source,
                job_id=job_id,
                description=f"retry of delivery {delivery_id} refused: {exc}",
                detail={**detail, **facts},
            )
        raise
