"""Removing spool files that no committed row references (a crash between fsync and commit).

Both areas of the spool are written *before* the transaction that references them commits
(DESIGN.md invariant 1 for instances; the job's final transaction for results), so a crash in
between leaves an unreferenced file. :func:`sweep_orphans` removes such files once they are old
enough that no store in flight can still commit a reference to them.
"""

from __future__ import annotations

from sqlalchemy import select

from cdss.db import Database, Instance, Result
from cdss.logs import get_logger
from cdss.store.spool import Spool, SpoolArea

__all__ = ["sweep_orphans"]

log = get_logger(__name__)

#: The column that references the files of each spool area.
_REFERENCED_BY = {SpoolArea.INSTANCES: Instance.spool_key, SpoolArea.RESULTS: Result.spool_key}
_CHUNK = 500


def sweep_orphans(
    db: Database, spool: Spool, area: SpoolArea, *, older_than_s: float = 3600.0, max_fraction: float = 0.5
) -> int:
    """Delete the files of ``area`` that no row references (instance rows, result rows).

    Parameters
    ----------
    area
        :attr:`SpoolArea.INSTANCES` (referenced by ``instances.spool_key``) or
        :attr:`SpoolArea.RESULTS` (``results.spool_key``).
    older_than_s
        Only files older than this (seconds, modification time) are considered, so that a
        store in flight in another process (file written, commit pending) is never touched.
    max_fraction
        Safety stop: when more than this fraction of the (more than 10) old files is
        unreferenced, the spool and the database do not belong together (e.g.
        ``database.url`` points at a new, empty database); nothing is deleted and an error is
        logged.

    Returns
    -------
    int
        Number of files removed.
    """
    area = SpoolArea(area)
    column = _REFERENCED_BY[area]
    candidates = list(spool.iter_keys(area, older_than_s=older_than_s))
    orphans: list[str] = []
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        with db.session() as session:
            referenced = set(session.execute(select(column).where(column.in_(chunk))).scalars())
        orphans.extend(key for key in chunk if key not in referenced)
    if len(candidates) > 10 and len(orphans) > max_fraction * len(candidates):
        log.error(
            "spool orphan sweep refused",
            area=area.value,
            unreferenced=len(orphans),
            files=len(candidates),
            hint="the database does not reference most spool files; check database.url and storage.path",
        )
        return 0
    removed = sum(1 for key in orphans if spool.delete(key))
    if removed:
        log.warning(
            "spool files that no committed row references were removed", area=area.value, count=removed
        )
    return removed
