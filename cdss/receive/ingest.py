"""Taking one received dataset into the node: validate → spool (fsync) → one DB transaction.

This is the whole C-STORE decision, independent of pynetdicom (the SCP handler in
:mod:`cdss.receive.server` only unpacks the event and packs the response) and of SQL (the rows
and audit events are written by :mod:`cdss.receive.records`). Invariants kept here:

1. **No success before durability.** ``0x0000`` only after :meth:`Spool.store_instance` returned
   (file and directory fsynced) and one transaction holding the study/series/instance rows, the
   instance's queued :class:`~cdss.db.models.Job` and its audit event committed.
2. **Peer data never names a file**: the spool key is the SHA-256 of the bytes.
3. **Nothing left behind on failure**: a file this call created is deleted again when the
   transaction does not commit (files that already existed belong to an earlier, committed
   store and are kept). A crash between the two leaves an unreferenced file that
   :func:`cdss.store.orphans.sweep_orphans` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cdss.config import Settings
from cdss.db import Database
from cdss.logs import exception_frames, get_logger
from cdss.metrics import INSTANCES_RECEIVED, STORE_FAILURES, STORE_SECONDS
from cdss.receive.records import (
    QueueFull,
    ReceivedDataset,
    audit_refused,
    find_duplicate,
    insert_instance,
    instance_exists,
    is_referenced,
)
from cdss.receive.status import StoreStatus, outcome_label
from cdss.receive.validate import Rejection, ValidatedDataset, validate
from cdss.store import Spool, SpoolError, SpoolFullError

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "Ingestor",
    "ReceivedDataset",
    "StoreOutcome",
    "count_store",
    "file_header",
]

log = get_logger(__name__)

#: Implementation Class UID of the node (association negotiation and file meta). Derived once
#: from a fixed string (``generate_uid(prefix=None, entropy_srcs=["cdss", "implementation class"])``).
IMPLEMENTATION_CLASS_UID = "2.25.175571037290874804414380025907691894565"
#: Implementation Version Name used during association negotiation (not written to files, so
#: that the stored bytes - and thus duplicate detection - do not change across releases).
IMPLEMENTATION_VERSION_NAME = "CDSS_0_1"


@dataclass(frozen=True)
class StoreOutcome:
    """The decision for one C-STORE."""

    status: int
    reason: str  # "stored", "duplicate", "conflict" or a failure reason (metric label)
    message: str = ""  # Error Comment for failures (no patient data)
    offending: int | None = None
    instance_id: int | None = None
    job_id: int | None = None
    duplicate: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def count_store(status: int, reason: str, duplicate: bool, seconds: float) -> None:
    """Count one answered C-STORE in the Prometheus metrics of this process.

    Receiver processes other than the node's own (``dicom.receiver_processes`` > 1) send their
    outcomes to the node, which counts them here, so that ``/metrics`` shows every C-STORE.
    """
    STORE_SECONDS.observe(seconds)
    INSTANCES_RECEIVED.labels(outcome_label(status, duplicate=duplicate)).inc()
    if status != StoreStatus.SUCCESS:
        STORE_FAILURES.labels(f"0x{status:04X}", reason).inc()


class _ContentLocks:
    """Serialise stores of identical content, across threads and across receiver processes.

    A failing store deletes the spool file it created unless a committed row references it;
    without this lock a concurrent store of the same bytes (which found the file already there)
    could commit a reference to a file that is being deleted. Threads of one process share a
    :class:`threading.Lock` per shard; processes sharing the spool also take an exclusive
    ``flock`` on the shard's lock file (``<spool>/locks/NN.lock``).
    """

    SHARDS = 64

    def __init__(self, directory: Path | None):
        self._threads = [threading.Lock() for _ in range(self.SHARDS)]
        self._dir = directory
        self._fds: dict[int, int] = {}
        self._guard = threading.Lock()

    def _fd(self, shard: int) -> int | None:
        if self._dir is None:
            return None
        with self._guard:
            fd = self._fds.get(shard)
            if fd is None:
                self._dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._dir / f"{shard:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                self._fds[shard] = fd
            return fd

    @contextlib.contextmanager
    def hold(self, sha256: str) -> Iterator[None]:
        shard = int(sha256[:4], 16) % self.SHARDS
        with self._threads[shard]:
            fd = self._fd(shard)
            if fd is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._guard:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()


def file_header(validated: ValidatedDataset, transfer_syntax: str) -> bytes:
    """What the stored file holds before the dataset as received: zero preamble, ``DICM``, our
    file meta. The file is this header followed by the received bytes, unchanged.

    The preamble is zero (CVE-2019-11687: no executable polyglots). The meta holds only values
    derived from the dataset and the transfer syntax, so re-sending the same dataset yields
    the same bytes and the same spool key. The two parts are hashed and written one after the
    other, never joined: joining copies the whole image once more (6 ms of CPU for 8 MB here,
    an eighth of what a C-STORE costs the receiver; docs/operations.md).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(validated.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(validated.sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


class Ingestor:
    """Turns received datasets into durable instances and queued jobs.

    Parameters
    ----------
    settings
        Node settings (``dicom`` limits, ``jobs.max_queue_depth`` and ``jobs.max_attempts``).
    db
        The node database.
    spool
        The instance spool.
    on_job_created
        Called with the new job id after the transaction committed (never for duplicates or
        failures). Exceptions it raises are logged; the job is already durable and queued.
    on_outcome
        Called with ``(status, reason, duplicate, seconds)`` after each C-STORE was decided
        (a receiver process forwards them to the node's metrics, see :func:`count_store`).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        spool: Spool,
        on_job_created: Callable[[int], None] | None = None,
        *,
        on_outcome: Callable[[int, str, bool, float], None] | None = None,
    ):
        self.settings = settings
        self.db = db
        self.spool = spool
        self.on_job_created = on_job_created
        self.on_outcome = on_outcome
        # Serialises stores of identical content (threads, and the other receiver processes
        # when there are several) so that a failing store never deletes a file a concurrent
        # identical store is about to reference.
        shared = settings.dicom.receiver_processes > 1
        self._locks = _ContentLocks(spool.root / "locks" if shared else None)

    def close(self) -> None:
        """Release the lock files (when several receiver processes share the spool)."""
        self._locks.close()

    # ------------------------------------------------------------------ public
    def ingest(self, item: ReceivedDataset) -> StoreOutcome:
        """Decide and perform one C-STORE; never raises.

        Returns
        -------
        StoreOutcome
            Status to answer (:class:`~cdss.receive.status.StoreStatus`) and what happened.
        """
        started = time.perf_counter()
        try:
            outcome = self._ingest(item)
        except Exception as exc:  # never crash the association; no PHI in the log
            log.error(
                "c_store_internal_error",
                error=type(exc).__name__,
                where=exception_frames(exc),
                calling_aet=item.calling_aet,
            )
            outcome = StoreOutcome(
                StoreStatus.PROCESSING_FAILURE, "internal_error", "internal error; see node log"
            )
            self._audit_failure(item, None, outcome)
        elapsed = time.perf_counter() - started
        count_store(outcome.status, outcome.reason, outcome.duplicate, elapsed)
        if self.on_outcome is not None:
            with contextlib.suppress(Exception):
                self.on_outcome(int(outcome.status), outcome.reason, outcome.duplicate, elapsed)
        log.info(
            "c_store",
            status=f"0x{outcome.status:04X}",
            reason=outcome.reason,
            calling_aet=item.calling_aet,
            instance_id=outcome.instance_id,
            job_id=outcome.job_id,
            bytes=len(item.raw),
            ms=round(elapsed * 1000, 1),
        )
        if outcome.job_id is not None and self.on_job_created is not None:
            try:
                self.on_job_created(outcome.job_id)
            except Exception as exc:
                log.error(
                    "on_job_created_failed",
                    job_id=outcome.job_id,
                    error=type(exc).__name__,
                    where=exception_frames(exc),
                )
        return outcome

    # ------------------------------------------------------------------ steps
    def _ingest(self, item: ReceivedDataset) -> StoreOutcome:
        dicom = self.settings.dicom
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            validated = validate(
                item.raw,
                item.transfer_syntax,
                command_sop_class_uid=item.command_sop_class_uid,
                command_sop_instance_uid=item.command_sop_instance_uid,
                max_bytes=dicom.max_dataset_mb * 1024 * 1024,
                max_image_pixels=dicom.max_image_pixels,
            )
        except Rejection as rej:
            outcome = StoreOutcome(rej.status, rej.reason, rej.message, rej.offending)
            self._audit_failure(item, None, outcome)
            return outcome
        timings["validate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        header = file_header(validated, item.transfer_syntax)
        digest = hashlib.sha256(header)
        digest.update(item.raw)
        sha = digest.hexdigest()
        data = (header, item.raw)
        timings["hash"] = time.perf_counter() - t0
        with self._locks.hold(sha):
            return self._store(item, validated, data, sha, timings)

    def _store(
        self,
        item: ReceivedDataset,
        validated: ValidatedDataset,
        data: tuple[bytes, bytes],
        sha: str,
        timings: dict[str, float],
    ) -> StoreOutcome:
        # 1. Duplicate? (answered from the database; works even when the disk is full)
        t = time.perf_counter()
        try:
            duplicate = self._duplicate(item, validated, sha)
        except SQLAlchemyError as exc:
            return self._refuse(
                item, validated, "database_unavailable", f"database unavailable ({type(exc).__name__})"
            )
        if duplicate is not None:
            return duplicate
        timings["lookup"] = time.perf_counter() - t
        # 2. Resources.
        if self.spool.below_watermark(len(data[0]) + len(data[1])):
            return self._refuse(item, validated, "disk_full", "spool below free-space watermark")
        # 3. Durable file.
        t = time.perf_counter()
        try:
            stored = self.spool.store_instance(data, sha256=sha)
        except SpoolFullError:
            return self._refuse(item, validated, "disk_full", "spool below free-space watermark")
        except SpoolError as exc:
            log.error("spool_write_failed", error=str(exc))
            return self._refuse(item, validated, "spool_write_failed", "spool write failed")
        timings["spool"] = time.perf_counter() - t
        # 4. One transaction: rows + job + audit.
        t = time.perf_counter()
        try:
            instance_id, job_id = self._commit(item, validated, stored.key, stored.sha256, stored.size)
        except IntegrityError:
            # The same SOP Instance UID was committed meanwhile by another association (or
            # process). Its row may reference this very file (identical content): _discard
            # checks references before deleting.
            self._discard(stored.key, stored.created)
            try:
                duplicate = self._duplicate(item, validated, sha)
            except SQLAlchemyError as exc:
                return self._refuse(
                    item, validated, "database_unavailable", f"database unavailable ({type(exc).__name__})"
                )
            if duplicate is not None:
                return duplicate
            raise
        except QueueFull:
            self._discard(stored.key, stored.created)
            return self._refuse(
                item, validated, "queue_full", f"more than {self.settings.jobs.max_queue_depth} jobs queued"
            )
        except SQLAlchemyError as exc:
            self._discard(stored.key, stored.created)
            log.error("database_error_on_store", error=type(exc).__name__)
            return self._refuse(
                item, validated, "database_unavailable", f"database unavailable ({type(exc).__name__})"
            )
        except BaseException:
            self._discard(stored.key, stored.created)
            raise
        timings["commit"] = time.perf_counter() - t
        return StoreOutcome(
            StoreStatus.SUCCESS, "stored", instance_id=instance_id, job_id=job_id, timings=timings
        )

    def _discard(self, key: str, created: bool) -> None:
        """Delete a file this store created, unless a committed row references it."""
        if not created:
            return
        try:
            with self.db.read_session() as session:
                if is_referenced(session, key):
                    return
        except SQLAlchemyError:
            pass  # database down: nobody can have committed a reference meanwhile
        try:
            self.spool.delete(key)
        except OSError as exc:  # sweep_orphans removes it later
            log.error("spool_cleanup_failed", error=str(exc))

    def _duplicate(self, item: ReceivedDataset, validated: ValidatedDataset, sha: str) -> StoreOutcome | None:
        # Almost every C-STORE is new: ask without the write lock first (concurrent associations
        # then wait for each other only in their commit); a duplicate is audited in a write session.
        with self.db.read_session() as session:
            if not instance_exists(session, validated.sop_instance_uid):
                return None
        with self.db.session() as session:
            dup = find_duplicate(session, item, validated, sha)
        if dup is None:
            return None
        if not dup.identical:
            log.warning("duplicate_conflict", instance_id=dup.instance_id, calling_aet=item.calling_aet)
        return StoreOutcome(
            StoreStatus.SUCCESS,
            "duplicate" if dup.identical else "conflict",
            instance_id=dup.instance_id,
            duplicate=True,
        )

    def _commit(
        self, item: ReceivedDataset, validated: ValidatedDataset, key: str, sha: str, size: int
    ) -> tuple[int, int]:
        with self.db.session() as session:
            new = insert_instance(session, self.settings.jobs, item, validated, key, sha, size)
        if new.mismatches:
            # Kept as received (the first rows win); the audit event carries the finding.
            log.warning("relational_mismatch", findings=new.mismatches, calling_aet=item.calling_aet)
        return new.instance_id, new.job_id

    # ------------------------------------------------------------------ failures
    def _refuse(
        self, item: ReceivedDataset, validated: ValidatedDataset, reason: str, message: str
    ) -> StoreOutcome:
        outcome = StoreOutcome(StoreStatus.OUT_OF_RESOURCES, reason, message)
        self._audit_failure(item, validated, outcome)
        return outcome

    def _audit_failure(
        self, item: ReceivedDataset, validated: ValidatedDataset | None, outcome: StoreOutcome
    ) -> None:
        """Audit a refused C-STORE (best effort: when the database is down only the log and
        the metric record it)."""
        try:
            with self.db.session() as session:
                audit_refused(
                    session,
                    item,
                    validated,
                    status=outcome.status,
                    reason=outcome.reason,
                    message=outcome.message,
                    offending=outcome.offending,
                )
        except SQLAlchemyError as exc:
            log.error(
                "audit_unavailable",
                status=f"0x{outcome.status:04X}",
                reason=outcome.reason,
                error=type(exc).__name__,
            )
