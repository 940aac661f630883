"""The rows one C-STORE writes: study/series/instance, the queued job and the audit events.

All SQL of receiving lives here; :mod:`cdss.receive.ingest` makes the decision (validate →
spool → one transaction) and calls these functions inside its transactions. Tag values are
peer data: they are clipped to their column sizes and never trusted to fit or to parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cdss.audit import Action, EventID, Outcome, record_event
from cdss.config import JobSettings
from cdss.db import Instance, Job, JobState, Series, Study
from cdss.receive.validate import ValidatedDataset

__all__ = [
    "Duplicate",
    "NewInstance",
    "QueueFull",
    "ReceivedDataset",
    "audit_refused",
    "find_duplicate",
    "insert_instance",
    "instance_exists",
    "is_referenced",
]


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
class Duplicate:
    """A stored instance with the same SOP Instance UID."""

    instance_id: int
    identical: bool  # same bytes (idempotent re-send) or a conflict (first copy kept)


@dataclass(frozen=True)
class NewInstance:
    """What :func:`insert_instance` added."""

    instance_id: int
    job_id: int
    mismatches: list[str]  # relational findings, kept as received (the first rows win)


class QueueFull(Exception):
    """More than ``jobs.max_queue_depth`` jobs are queued; the transaction must roll back."""


def _text(ds: Dataset | None, keyword: str, limit: int) -> str | None:
    """A tag value as text clipped to its column size (peer data is not trusted to fit)."""
    if ds is None:
        return None
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


def is_referenced(session: Session, spool_key: str) -> bool:
    """Whether a committed instance row references the spool file ``spool_key``."""
    return (
        session.execute(select(Instance.id).where(Instance.spool_key == spool_key).limit(1)).first()
        is not None
    )


def instance_exists(session: Session, sop_instance_uid: str) -> bool:
    """Whether an instance row with this SOP Instance UID is committed (a read, no audit)."""
    row = session.execute(
        select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid).limit(1)
    ).first()
    return row is not None


def find_duplicate(
    session: Session, item: ReceivedDataset, validated: ValidatedDataset, sha: str
) -> Duplicate | None:
    """An instance already stored under this SOP Instance UID, audited as a duplicate; else ``None``."""
    row = session.execute(
        select(Instance.id, Instance.sha256).where(Instance.sop_instance_uid == validated.sop_instance_uid)
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
    return Duplicate(row.id, same)


def insert_instance(
    session: Session,
    jobs: JobSettings,
    item: ReceivedDataset,
    validated: ValidatedDataset,
    key: str,
    sha: str,
    size: int,
) -> NewInstance:
    """Add the study/series (if new), the instance, its queued job and the audit event.

    Raises
    ------
    QueueFull
        ``jobs.max_queue_depth`` jobs are already queued.
    sqlalchemy.exc.IntegrityError
        The SOP Instance UID was committed meanwhile by another association.
    """
    ds = validated.dataset
    queued = session.execute(
        select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)
    ).scalar_one()
    if queued >= jobs.max_queue_depth:
        raise QueueFull
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
        select(Study.id, Study.patient_id).where(Study.study_instance_uid == validated.study_instance_uid)
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
        select(Series.id, Series.study_id).where(Series.series_instance_uid == validated.series_instance_uid)
    ).one()
    series_id = series.id
    if series.study_id != study_id:
        mismatches.append("SeriesInstanceUID already belongs to another study")
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
    job = Job(instance_id=instance.id, state=JobState.QUEUED, max_attempts=jobs.max_attempts)
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
    return NewInstance(instance.id, job.id, mismatches)


def audit_refused(
    session: Session,
    item: ReceivedDataset,
    validated: ValidatedDataset | None,
    *,
    status: int,
    reason: str,
    message: str,
    offending: int | None,
) -> None:
    """Audit a C-STORE answered with a failure ``status`` (serious unless 0xA7xx, out of resources)."""
    ds = validated.dataset if validated else None
    serious = (status & 0xFF00) != 0xA700
    record_event(
        session,
        EventID.INSTANCES_TRANSFERRED,
        action=Action.CREATE,
        outcome=Outcome.SERIOUS_FAILURE if serious else Outcome.MINOR_FAILURE,
        user=f"AETITLE={item.calling_aet}",
        source=item.peer_address,
        study_instance_uid=validated.study_instance_uid if validated else None,
        patient_id=_text(ds, "PatientID", 64),
        accession_number=_text(ds, "AccessionNumber", 16),
        description=f"C-STORE refused with 0x{status:04X}: {message}",
        detail={
            "status": f"0x{status:04X}",
            "reason": reason,
            "sop_instance_uid": validated.sop_instance_uid if validated else None,
            "sop_class_uid": validated.sop_class_uid if validated else item.command_sop_class_uid[:64],
            "offending_element": f"{offending:08X}" if offending else None,
            "called_aet": item.called_aet,
            "size_bytes": len(item.raw),
        },
    )
