"""Response models of the admin API (they are the OpenAPI documentation of every field)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cdss.db.models import DeliveryState, JobState, Role

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(BaseModel):
    """An error; ``detail`` says what is wrong and what to do."""

    detail: Any = Field(..., description="Human-readable reason (or validation errors).")


class StudyStatus(StrEnum):
    """Where a study stands, derived from its jobs and deliveries.

    ``failed``: a dead job or delivery (needs action); ``in_progress``: jobs or deliveries waiting
    or running; ``complete``: every job finished and every delivery delivered; ``received``: no
    analysis job (nothing applicable yet).
    """

    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    RECEIVED = "received"


class Page(_Out, Generic[T]):
    total: int = Field(..., description="Number of matching records (all pages).")
    limit: int = Field(..., description="Page size used.")
    offset: int = Field(..., description="Index of the first record of this page.")
    items: list[T] = Field(..., description="The records of this page.")


class FindingOut(_Out):
    """The analysis of one image of a study."""

    job_id: int = Field(..., description="Analysis job id.")
    instance_id: int = Field(..., description="Analysed instance (database id).")
    analysis: str | None = Field(None, description="Analysis the image was routed to (null until routed).")
    state: JobState = Field(..., description="Job state.")
    summary: dict[str, Any] | None = Field(None, description="Findings as recorded by the job (no pixels).")
    text: str | None = Field(None, description="One-line human-readable summary of the findings.")


class StudyOut(_Out):
    """A study known to the node."""

    id: int = Field(..., description="Database id.")
    study_instance_uid: str
    patient_id: str | None = Field(None, description="Patient ID (PHI).")
    patient_name: str | None = Field(None, description="Patient name (PHI), DICOM PN form.")
    accession_number: str | None = None
    study_date: str | None = Field(None, description="StudyDate, YYYYMMDD.")
    study_description: str | None = None
    created_at: dt.datetime = Field(..., description="When the first instance arrived (UTC).")
    instances: int = Field(..., description="Instances received.")
    modalities: list[str] = Field(default_factory=list, description="Modalities of its instances.")
    calling_aes: list[str] = Field(default_factory=list, description="AE titles that sent its instances.")
    status: StudyStatus
    analyses: list[str] = Field(default_factory=list, description="Analyses run on its images.")
    findings: list[FindingOut] = Field(default_factory=list, description="One entry per analysis job.")


class InstanceOut(_Out):
    """A received SOP instance (an image)."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_id: int
    study_instance_uid: str
    accession_number: str | None = None
    patient_id: str | None = Field(None, description="Patient ID (PHI).")
    transfer_syntax_uid: str
    size_bytes: int
    calling_ae_title: str
    called_ae_title: str | None = None
    peer_address: str | None = None
    received_at: dt.datetime
    modality: str | None = None
    body_part_examined: str | None = None
    view_position: str | None = None
    laterality: str | None = None
    photometric_interpretation: str | None = None
    rows: int | None = None
    columns: int | None = None
    instance_number: int | None = None


class JobOut(_Out):
    """An analysis job (one per received instance)."""

    id: int
    instance_id: int
    study_id: int
    study_instance_uid: str
    accession_number: str | None = None
    patient_id: str | None = Field(None, description="Patient ID (PHI).")
    calling_ae_title: str
    modality: str | None = None
    state: JobState
    analysis: str | None = None
    route_reason: str | None = None
    attempts: int
    max_attempts: int
    next_run_at: dt.datetime
    last_error: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_s: float | None = Field(
        None, description="Analysis + encoding time of the last attempt, seconds."
    )
    summary: dict[str, Any] | None = Field(None, description="Findings (no pixels).")
    summary_text: str | None = Field(None, description="One-line human-readable findings.")


class ResultOut(_Out):
    """A DICOM object the node produced."""

    id: int
    job_id: int
    kind: str = Field(..., description="SEG, SR, GSPS or SC.")
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    size_bytes: int
    model_name: str
    model_version: str
    created_at: dt.datetime
    study_instance_uid: str
    accession_number: str | None = None
    patient_id: str | None = Field(None, description="Patient ID (PHI).")
    analysis: str | None = None


class DeliveryOut(_Out):
    """Sending one result to one destination."""

    id: int
    result_id: int
    job_id: int
    kind: str = Field(..., description="Result kind (SEG, SR, GSPS, SC).")
    destination: str
    ae_title: str
    host: str
    port: int
    state: DeliveryState
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None = Field(None, description="DIMSE status of the last C-STORE response.")
    last_error: str | None = None
    created_at: dt.datetime
    delivered_at: dt.datetime | None = None
    study_instance_uid: str
    accession_number: str | None = None
    patient_id: str | None = Field(None, description="Patient ID (PHI).")


class AuditEventOut(_Out):
    """One audit event (DICOM PS3.15 A.5 vocabulary) with its hash-chain fields."""

    seq: int = Field(..., description="Position in the chain (gap-free, from 1).")
    occurred_at: dt.datetime
    event_id: str = Field(..., description="DCM Event ID code, e.g. 110112.")
    event_name: str = Field(..., description="Event ID meaning, e.g. Query.")
    event_type: str | None = Field(None, description="Event Type Code meaning (subtype), e.g. Login.")
    action: str = Field(..., description="Event Action Code: C R U D E.")
    outcome: int = Field(
        ..., description="Event Outcome Indicator: 0 success, 4 minor, 8 serious, 12 major failure."
    )
    user: str | None = Field(None, description="Who: token name, AETITLE=…, or cdss.")
    source: str | None = Field(None, description="From where (network address).")
    study_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    description: str
    detail: dict[str, Any] | None = None
    prev_hash: str = Field(..., description="Hash of the previous event (64 hex).")
    hash: str = Field(..., description="SHA-256(prev_hash || canonical(row)), 64 hex.")


class StudyPage(Page[StudyOut]):
    """A page of studies."""


class InstancePage(Page[InstanceOut]):
    """A page of instances."""


class JobPage(Page[JobOut]):
    """A page of jobs."""


class ResultPage(Page[ResultOut]):
    """A page of results."""


class DeliveryPage(Page[DeliveryOut]):
    """A page of deliveries."""


class AuditPage(Page[AuditEventOut]):
    """A page of audit events."""


class TimelineEntry(_Out):
    """One step in a study's history."""

    at: dt.datetime = Field(..., description="When (UTC).")
    stage: str = Field(
        ...,
        description="received, analysis_queued, analysis_started, analysed, not_applicable, failed, "
        "result_created, delivery_queued, delivered, delivery_failed, audit.",
    )
    description: str
    ref_type: str = Field(..., description="instance, job, result, delivery or audit_event.")
    ref_id: int = Field(..., description="Database id (audit: seq).")


class StudyHistory(_Out):
    """Everything the node did with one study, in order."""

    study: StudyOut
    received_at: dt.datetime | None = Field(None, description="First instance received.")
    analysed_at: dt.datetime | None = Field(None, description="Last analysis finished.")
    delivered_at: dt.datetime | None = Field(None, description="Last result delivered.")
    instances: list[InstanceOut]
    jobs: list[JobOut]
    results: list[ResultOut]
    deliveries: list[DeliveryOut]
    audit_events: list[AuditEventOut]
    timeline: list[TimelineEntry]


class WorkersOut(_Out):
    alive: int = Field(..., description="Worker threads/processes running.")
    expected: int = Field(..., description="Workers the configuration asks for.")


class StatsOut(_Out):
    """Queue and throughput counters (no patient data)."""

    generated_at: dt.datetime
    jobs: dict[str, int] = Field(..., description="Jobs per state (every state listed).")
    deliveries: dict[str, int] = Field(..., description="Deliveries per state (every state listed).")
    received: int = Field(..., description="Instances received.")
    studies: int = Field(..., description="Studies known.")
    analysed: int = Field(..., description="Jobs that succeeded.")
    not_applicable: int = Field(..., description="Jobs with no applicable analysis.")
    results: int = Field(..., description="Result objects produced.")
    delivered: int = Field(..., description="Deliveries completed.")
    failed: int = Field(..., description="Dead jobs + dead deliveries (need action).")
    queue_depth: dict[str, int] = Field(
        ..., description="Waiting work: jobs (queued), deliveries (pending); as the cdss_queue_depth gauge."
    )
    workers: WorkersOut | None = Field(None, description="Null when the API runs without a node.")
    backend_queue_depth: dict[str, int] | None = Field(
        None,
        description="Queue lengths reported by the job backend itself (e.g. the broker), when available.",
    )


class CheckOut(_Out):
    ok: bool
    detail: str = Field(..., description="What was checked (no patient data).")


class ReadyOut(_Out):
    """Readiness: database reachable, spool above its watermark, workers alive."""

    ready: bool
    checks: dict[str, CheckOut]


class HealthOut(_Out):
    status: str = Field("ok", description="Always ok while the process answers.")


class WhoAmI(_Out):
    name: str = Field(..., description="Token name.")
    role: Role


class TokenOut(_Out):
    """An API token (never its secret)."""

    name: str
    role: Role
    active: bool
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None


class TokenCreate(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    role: Role


class TokenCreated(TokenOut):
    token: str = Field(..., description="The secret; shown once, store it now.")


class ChainProblemOut(_Out):
    seq: int | None = Field(None, description="First bad seq.")
    kind: str = Field(
        ..., description="edited, deleted, link_broken, reordered, bad_start, truncated, anchor_mismatch."
    )
    message: str


class VerifyOut(_Out):
    """Result of walking the audit hash chain."""

    ok: bool
    events: int
    first_seq: int | None = None
    head_seq: int | None = Field(
        None, description="Newest seq; keep (head_seq, head_hash) outside as an anchor."
    )
    head_hash: str | None = None
    anchors_checked: int = 0
    problem: ChainProblemOut | None = None
