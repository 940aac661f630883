"""Result and Delivery rows for a job's encoded objects (part of the job's final transaction)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from cdss.config import Settings
from cdss.db import Delivery, DeliveryState, Result, utcnow
from cdss.route.destinations import delivery_targets

__all__ = ["StoredResult", "record_results"]


@dataclass(frozen=True)
class StoredResult:
    """An encoded result object already written to the spool."""

    kind: str  # SEG, SR, GSPS, SC
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    spool_key: str
    sha256: str
    size_bytes: int
    model_name: str
    model_version: str
    #: A SEG's profile (``standard`` / ``ohif``): it decides which destinations get it.
    seg_profile: str | None = None


def record_results(
    session: Session,
    job_id: int,
    objects: list[StoredResult],
    settings: Settings,
    calling_ae_title: str | None,
) -> list[Result]:
    """Add a Result row per object and a pending Delivery per destination that wants it.

    Destinations come from :func:`cdss.route.destinations.delivery_targets` (``[[destinations]]``
    flags and ``dispatch.return_to_calling_ae``). Nothing is committed here: the caller's
    transaction also ends the job, so results, deliveries and the job's state appear together
    or not at all.
    """
    now = utcnow()
    rows: list[Result] = []
    for obj in objects:
        result = Result(
            job_id=job_id,
            kind=obj.kind,
            sop_class_uid=obj.sop_class_uid,
            sop_instance_uid=obj.sop_instance_uid,
            series_instance_uid=obj.series_instance_uid,
            spool_key=obj.spool_key,
            sha256=obj.sha256,
            size_bytes=obj.size_bytes,
            model_name=obj.model_name[:64],
            model_version=obj.model_version[:32],
            created_at=now,
        )
        session.add(result)
        session.flush()
        for target in delivery_targets(settings, obj.kind, calling_ae_title, obj.seg_profile):
            session.add(
                Delivery(
                    result_id=result.id,
                    destination=target.name[:64],
                    ae_title=target.ae_title,
                    host=target.host,
                    port=target.port,
                    state=DeliveryState.PENDING,
                    attempts=0,
                    max_attempts=settings.dispatch.max_attempts,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        rows.append(result)
    session.flush()
    return rows
