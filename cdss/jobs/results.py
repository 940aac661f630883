"""Result and Delivery rows for a job's encoded objects (part of the job's final transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cdss.config import Settings
from cdss.db import Delivery, DeliveryState, Result, utcnow
from cdss.route.destinations import delivery_targets

__all__ = ["StoredResult", "record_results", "sweep_orphan_results"]


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
        for target in delivery_targets(settings, obj.kind, calling_ae_title):
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


def sweep_orphan_results(
    db: Any, spool: Any, *, older_than_s: float = 3600.0, max_fraction: float = 0.5
) -> int:
    """Delete result files that no Result row references (an attempt that crashed before its commit).

    Parameters
    ----------
    older_than_s
        Only files older than this are considered, so that an attempt in flight in another
        process (files written, commit pending) is never touched.
    max_fraction
        Safety stop: when more than this fraction of the (more than 10) old files is
        unreferenced, the spool and the database do not belong together (e.g. a new, empty
        database); nothing is deleted and an error is logged.

    Returns
    -------
    int
        Number of files removed.
    """
    from sqlalchemy import select

    from cdss.logs import get_logger
    from cdss.store import SpoolArea

    candidates = list(spool.iter_keys(SpoolArea.RESULTS, older_than_s=older_than_s))
    orphans: list[str] = []
    for start in range(0, len(candidates), 500):
        chunk = candidates[start : start + 500]
        with db.session() as session:
            referenced = set(
                session.execute(select(Result.spool_key).where(Result.spool_key.in_(chunk))).scalars()
            )
        orphans.extend(key for key in chunk if key not in referenced)
    log = get_logger(__name__)
    if len(candidates) > 10 and len(orphans) > max_fraction * len(candidates):
        log.error(
            "result orphan sweep refused: the database does not reference most result files; "
            "check database.url and storage.path",
            unreferenced=len(orphans),
            files=len(candidates),
        )
        return 0
    removed = sum(1 for key in orphans if spool.delete(key))
    if removed:
        log.info("removed result files of attempts that never committed", count=removed)
    return removed
