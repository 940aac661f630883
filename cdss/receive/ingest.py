"""Taking one received dataset into the node: validate → spool (fsync) → one DB transaction.

This is the whole C-STORE decision, independent of pynetdicom (the SCP handler in
:mod:`cdss.receive.server` only unpacks the event and packs the response). Invariants kept here:

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

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from cdss.audit import Action, EventID, Outcome, record_event
from cdss.config import Settings
from cdss.db import Database, Instance, Job, JobState, Series, Study
from cdss.logs import exception_frames, get_logger
from cdss.metrics import INSTANCES_RECEIVED, STORE_FAILURES, STORE_SECONDS
from cdss.receive.status import StoreStatus, outcome_label
from cdss.receive.validate import Rejection, ValidatedDataset, validate
from cdss.store import Spool, SpoolError, SpoolFullError

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "Ingestor",
    "ReceivedDataset",
    "StoreOutcome",
    "file_bytes",
]

log = get_logger(__name__)

#: Implementation Class UID of the node (association negotiation and file meta). Derived once
#: from a fixed string (``generate_uid(prefix=None, entropy_srcs=["cdss", "implementation class"])``).
IMPLEMENTATION_CLASS_UID = "2.25.175571037290874804414380025907691894565"
#: Implementation Version Name used during association negotiation (not written to files, so
#: that the stored bytes - and thus duplicate detection - do not change across releases).
IMPLEMENTATION_VERSION_NAME = "CDSS_0_1"


@dataclass(frozen=True)
class ReceivedDataset:
    """One C-STORE request as the handler saw it."""

    raw: bytes  # dataset bytes exactly as received (no file meta)
    transfer_syntax: str
    command_sop_class_uid: str
    command_sop_instance_uid: str
    calling_aet: str
    called_aet: str
    peer_address: str


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


def file_bytes(validated: ValidatedDataset, raw: bytes, transfer_syntax: str) -> bytes:
    """The DICOM file stored for a received dataset: zero preamble, our file meta, bytes as received.

    The preamble is zero (CVE-2019-11687: no executable polyglots). The meta holds only values
    derived from the dataset and the transfer syntax, so re-sending the same dataset yields
    the same bytes and the same spool key.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = validated.sop_class_uid
    meta.MediaStorageSOPInstanceUID = validated.sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    buffer.write(raw)
    return buffer.getvalue()


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    """A tag value as text clipped to its column size (peer data is not trusted to fit)."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        try:
            value = "\\".join(str(v) for v in value)
        except TypeError:
            value = str(value)
    text = str(value).replace("\x00", "").strip()
    return text[:limit] or None


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        number = int(value)
    except Exception:
        return None
    return number if -(2**31) <= number < 2**31 else None


def _insert_ignore(session: Session, model: type, values: dict[str, Any], key: str) -> None:
    """``INSERT … ON CONFLICT (key) DO NOTHING`` on PostgreSQL and SQLite."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=[key]))


class _QueueFull(Exception):
    pass


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
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        spool: Spool,
        on_job_created: Callable[[int], None] | None = None,
    ):
        self.settings = settings
        self.db = db
        self.spool = spool
        self.on_job_created = on_job_created
        # Serialises stores of identical content inside this process so that a failing store
        # never deletes a file a concurrent identical store is about to reference.
        self._locks = [threading.Lock() for _ in range(64)]

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
        STORE_SECONDS.observe(elapsed)
        INSTANCES_RECEIVED.labels(outcome_label(outcome.status, duplicate=outcome.duplicate)).inc()
        if outcome.status != StoreStatus.SUCCESS:
            STORE_FAILURES.labels(f"0x{outcome.status:04X}", outcome.reason).inc()
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
        data = file_bytes(validated, item.raw, item.transfer_syntax)
        sha = hashlib.sha256(data).hexdigest()
        timings["hash"] = time.perf_counter() - t0
        with self._locks[int(sha[:4], 16) % len(self._locks)]:
            return self._store(item, validated, data, sha, timings)

    def _store(
        self,
        item: ReceivedDataset,
        validated: ValidatedDataset,
        data: bytes,
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
        if self.spool.below_watermark(len(data)):
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
        except _QueueFull:
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
            with self.db.session() as session:
                if session.execute(select(Instance.id).where(Instance.spool_key == key).limit(1)).first():
                    return
        except SQLAlchemyError:
            pass  # database down: nobody can have committed a reference meanwhile
        try:
            self.spool.delete(key)
        except OSError as exc:  # sweep_orphans removes it later
            log.error("spool_cleanup_failed", error=str(exc))

    def _duplicate(self, item: ReceivedDataset, validated: ValidatedDataset, sha: str) -> StoreOutcome | None:
        with self.db.session() as session:
            row = session.execute(
                select(Instance.id, Instance.sha256).where(
                    Instance.sop_instance_uid == validated.sop_instance_uid
                )
            ).first()
            if row is None:
                return None
            ds = validated.dataset
            same = row.sha256 == sha
            record_event(
                session,
                EventID.INSTANCES_TRANSFERRED,
                action=Action.CREATE,
                outcome=Outcome.SUCCESS if same else Outcome.MINOR_FAILURE,
                user=f"AETITLE={item.calling_aet}",
                source=item.peer_address,
                study_instance_uid=validated.study_instance_uid,
                patient_id=_text(ds, "PatientID", 64),
                accession_number=_text(ds, "AccessionNumber", 16),
                description=(
                    "duplicate of a stored instance (identical content): acknowledged, no new job"
                    if same
                    else "SOP Instance UID already stored with different content: the first copy is kept, "
                    "this one is discarded (duplicate policy keep-first)"
                ),
                detail={
                    "status": "0x0000",
                    "sop_instance_uid": validated.sop_instance_uid,
                    "sop_class_uid": validated.sop_class_uid,
                    "instance_id": row.id,
                    "sha256": sha,
                    "stored_sha256": row.sha256,
                    "called_aet": item.called_aet,
                    "duplicate": "identical" if same else "conflict",
                },
            )
        if not same:
            log.warning("duplicate_conflict", instance_id=row.id, calling_aet=item.calling_aet)
        return StoreOutcome(
            StoreStatus.SUCCESS,
            "duplicate" if same else "conflict",
            instance_id=row.id,
            duplicate=True,
        )

    def _commit(
        self, item: ReceivedDataset, validated: ValidatedDataset, key: str, sha: str, size: int
    ) -> tuple[int, int]:
        ds = validated.dataset
        with self.db.session() as session:
            queued = session.execute(
                select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)
            ).scalar_one()
            if queued >= self.settings.jobs.max_queue_depth:
                raise _QueueFull
            _insert_ignore(
                session,
                Study,
                {
                    "study_instance_uid": validated.study_instance_uid,
                    "patient_id": _text(ds, "PatientID", 64),
                    "patient_name": _text(ds, "PatientName", 324),
                    "accession_number": _text(ds, "AccessionNumber", 16),
                    "study_date": _text(ds, "StudyDate", 8),
                    "study_description": _text(ds, "StudyDescription", 64),
                },
                "study_instance_uid",
            )
            study = session.execute(
                select(Study.id, Study.patient_id).where(
                    Study.study_instance_uid == validated.study_instance_uid
                )
            ).one()
            study_id = study.id
            mismatches = []
            if study.patient_id != _text(ds, "PatientID", 64):
                mismatches.append("PatientID differs from the study's first instance")
            _insert_ignore(
                session,
                Series,
                {
                    "series_instance_uid": validated.series_instance_uid,
                    "study_id": study_id,
                    "modality": _text(ds, "Modality", 16),
                    "body_part_examined": _text(ds, "BodyPartExamined", 64),
                    "series_description": _text(ds, "SeriesDescription", 64),
                    "series_number": _int_or_none(ds, "SeriesNumber"),
                },
                "series_instance_uid",
            )
            series = session.execute(
                select(Series.id, Series.study_id).where(
                    Series.series_instance_uid == validated.series_instance_uid
                )
            ).one()
            series_id = series.id
            if series.study_id != study_id:
                mismatches.append("SeriesInstanceUID already belongs to another study")
            if mismatches:
                # Kept as received (the first rows win); the audit event carries the finding.
                log.warning("relational_mismatch", findings=mismatches, calling_aet=item.calling_aet)
            instance = Instance(
                sop_instance_uid=validated.sop_instance_uid,
                sop_class_uid=validated.sop_class_uid,
                series_id=series_id,
                transfer_syntax_uid=item.transfer_syntax,
                sha256=sha,
                spool_key=key,
                size_bytes=size,
                calling_ae_title=item.calling_aet[:16],
                called_ae_title=item.called_aet[:16] or None,
                peer_address=item.peer_address[:64] or None,
                modality=_text(ds, "Modality", 16),
                body_part_examined=_text(ds, "BodyPartExamined", 64),
                view_position=_text(ds, "ViewPosition", 16),
                laterality=_text(ds, "ImageLaterality", 16) or _text(ds, "Laterality", 16),
                image_type=_text(ds, "ImageType", 128),
                photometric_interpretation=_text(ds, "PhotometricInterpretation", 16),
                rows=_int_or_none(ds, "Rows"),
                columns=_int_or_none(ds, "Columns"),
                presentation_intent=_text(ds, "PresentationIntentType", 32),
                instance_number=_int_or_none(ds, "InstanceNumber"),
            )
            session.add(instance)
            session.flush()
            job = Job(
                instance_id=instance.id,
                state=JobState.QUEUED,
                max_attempts=self.settings.jobs.max_attempts,
            )
            session.add(job)
            session.flush()
            record_event(
                session,
                EventID.INSTANCES_TRANSFERRED,
                action=Action.CREATE,
                outcome=Outcome.SUCCESS,
                user=f"AETITLE={item.calling_aet}",
                source=item.peer_address,
                study_instance_uid=validated.study_instance_uid,
                patient_id=_text(ds, "PatientID", 64),
                accession_number=_text(ds, "AccessionNumber", 16),
                description="instance received and stored; analysis job queued",
                detail={
                    "status": "0x0000",
                    "sop_instance_uid": validated.sop_instance_uid,
                    "sop_class_uid": validated.sop_class_uid,
                    "transfer_syntax_uid": item.transfer_syntax,
                    "instance_id": instance.id,
                    "job_id": job.id,
                    "sha256": sha,
                    "size_bytes": size,
                    "called_aet": item.called_aet,
                    "relational_mismatch": mismatches or None,
                },
            )
            return instance.id, job.id

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
        ds = validated.dataset if validated else None
        serious = (outcome.status & 0xFF00) != 0xA700
        try:
            with self.db.session() as session:
                record_event(
                    session,
                    EventID.INSTANCES_TRANSFERRED,
                    action=Action.CREATE,
                    outcome=Outcome.SERIOUS_FAILURE if serious else Outcome.MINOR_FAILURE,
                    user=f"AETITLE={item.calling_aet}",
                    source=item.peer_address,
                    study_instance_uid=validated.study_instance_uid if validated else None,
                    patient_id=_text(ds, "PatientID", 64) if ds is not None else None,
                    accession_number=_text(ds, "AccessionNumber", 16) if ds is not None else None,
                    description=f"C-STORE refused with 0x{outcome.status:04X}: {outcome.message}",
                    detail={
                        "status": f"0x{outcome.status:04X}",
                        "reason": outcome.reason,
                        "sop_instance_uid": validated.sop_instance_uid if validated else None,
                        "sop_class_uid": validated.sop_class_uid
                        if validated
                        else item.command_sop_class_uid[:64],
                        "offending_element": f"{outcome.offending:08X}" if outcome.offending else None,
                        "called_aet": item.called_aet,
                        "size_bytes": len(item.raw),
                    },
                )
        except SQLAlchemyError as exc:
            log.error(
                "audit_unavailable",
                status=f"0x{outcome.status:04X}",
                reason=outcome.reason,
                error=type(exc).__name__,
            )
