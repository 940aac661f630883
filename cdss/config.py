"""Typed settings for the node: one TOML file plus ``CDSS_*`` environment overrides.

Every key has a documented default (the ``Field`` descriptions below are the reference
documentation; ``cdss config show`` prints the effective values and ``docs/configuration.md``
is generated from the same models).

Environment overrides
---------------------
``CDSS_<SECTION>_<KEY>`` overrides ``[section] key``, e.g. ``CDSS_DICOM_PORT=11113`` or
``CDSS_DATABASE_URL=postgresql+psycopg://localhost/cdss``.  List values are given as JSON
(``CDSS_DICOM_ALLOWED_CALLING_AETS='["MODALITY1","CR2"]'``) or comma separated
(``MODALITY1,CR2``).  Arrays of tables (``[[destinations]]``, ``[[peers]]``,
``[[route.rules]]``) are overridden as a whole with JSON, e.g.
``CDSS_DESTINATIONS='[{"name":"pacs","ae_title":"ORTHANC","host":"127.0.0.1","port":4242}]'``.
``CDSS_CONFIG`` names the TOML file when ``--config`` is not given.

Nothing here reads settings at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ApiSettings",
    "AuditSettings",
    "ConfigError",
    "DatabaseSettings",
    "Destination",
    "DicomSettings",
    "DispatchSettings",
    "JobSettings",
    "LoggingSettings",
    "ModelSettings",
    "Peer",
    "ResultSettings",
    "RouteRule",
    "RouteSettings",
    "Settings",
    "StorageSettings",
    "load_settings",
]

ENV_PREFIX = "CDSS_"


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid; the message says which key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _ae_title(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 16 or any(c in value for c in "\\") or not value.isascii():
        raise ValueError(f"AE title {value!r} must be 1-16 ASCII characters without backslash")
    return value


AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class ReceiverReactor(StrEnum):
    """How an association's pynetdicom threads wait for work (``dicom.reactor``)."""

    WAKING = "waking"
    POLLING = "polling"


class DicomSettings(_Section):
    """``[dicom]``: the receiving Application Entity."""

    ae_title: AETitle = Field("CDSS", description="Called AE title of the node.")
    port: int = Field(11112, ge=1, le=65535, description="TCP port of the DICOM listener.")
    bind: str = Field("0.0.0.0", description="Address the DICOM listener binds to.")
    require_called_aet: bool = Field(
        True, description="Reject associations whose Called AE title is not `ae_title`."
    )
    allowed_calling_aets: list[str] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate; empty list = any AE title.",
    )
    allowed_addresses: list[str] = Field(
        default_factory=list,
        description="Peer IP addresses or CIDR networks allowed to associate; empty list = any.",
    )
    max_associations: int = Field(
        10, ge=1, le=1000, description="Concurrent associations accepted (per receiver process)."
    )
    receiver_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that accept associations on the one DICOM port (SO_REUSEPORT; the kernel "
        "spreads new connections over them). Each runs its own C-STORE handlers, so concurrent "
        "modalities are not limited by one Python interpreter; 2 or more pay off with several "
        "simultaneous senders (see docs/operations.md, Measured).",
    )
    max_pdu_size: int = Field(
        262144, ge=0, description="Maximum PDU size the node receives, bytes (0 = unlimited)."
    )
    reactor: ReceiverReactor = Field(
        ReceiverReactor.WAKING,
        description="How each association's two pynetdicom threads wait for work: `waking` (block on "
        "the socket and wake each other; cdss.receive.reactors) or `polling` (pynetdicom's own 1 ms "
        "polling loops, the fallback). See docs/operations.md, Concurrent modalities.",
    )
    acse_timeout_s: float = Field(30, gt=0, description="ACSE (association) timeout, seconds.")
    dimse_timeout_s: float = Field(30, gt=0, description="DIMSE message timeout, seconds.")
    network_timeout_s: float = Field(60, gt=0, description="Idle network timeout, seconds.")
    max_image_pixels: int = Field(
        120_000_000,
        gt=0,
        description="Largest Rows x Columns x Frames x Samples accepted, checked on the header before any "
        "decoding; larger images are refused with 0xA710 (out of resources, permanent for that image). "
        "Inconsistent pixel attributes (0 rows, Bits Allocated 12, ...) get 0xA910 "
        "(see docs/dicom-conformance.md).",
    )
    max_dataset_mb: int = Field(
        1024,
        gt=0,
        description="Largest single dataset accepted, MiB. Datasets are buffered in memory while they "
        "arrive, so an association whose message grows beyond this is closed while receiving (the SCU "
        "sees the association aborted); a deflated dataset inflating beyond it gets 0xA710.",
    )
    tls_enabled: bool = Field(False, description="Serve DICOM over TLS (BCP 195, TLS 1.2+).")
    tls_certificate: Path | None = Field(None, description="PEM certificate of the node (TLS).")
    tls_private_key: Path | None = Field(None, description="PEM private key of the node (TLS).")
    tls_ca_certificates: Path | None = Field(
        None, description="PEM bundle of CAs whose client certificates are accepted (mutual TLS)."
    )
    tls_require_client_certificate: bool = Field(
        True,
        description="Require and verify a client certificate (mutual TLS, IHE ATNA node authentication).",
    )

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, v: str) -> str:
        return _ae_title(v)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_aets(cls, v: list[str]) -> list[str]:
        return [_ae_title(a) for a in v]


class StorageSettings(_Section):
    """``[storage]``: the durable instance spool."""

    path: Path = Field(Path("var/spool"), description="Spool directory for received instances and results.")
    min_free_mb: int = Field(
        1024,
        ge=0,
        description="Free-space watermark, MiB: below it C-STORE answers 0xA700 (out of resources).",
    )
    fsync: bool = Field(
        True,
        description="fsync file and directory before acknowledging (turn off only for throw-away test nodes).",
    )


class DatabaseSettings(_Section):
    """``[database]``: the audit and job database."""

    url: str = Field(
        "sqlite:///var/cdss.db",
        description="SQLAlchemy URL. SQLite (WAL, synchronous=FULL) by default; "
        "`postgresql+psycopg://user@host/db` for scale-out.",
    )
    pool_size: int = Field(10, ge=1, description="Connection pool size (PostgreSQL).")
    echo: bool = Field(False, description="Log SQL statements (debugging only; may contain PHI).")


class ApiSettings(_Section):
    """``[api]``: the admin/audit HTTP API and dashboard."""

    enabled: bool = Field(True, description="Serve the admin API inside `cdss serve`.")
    host: str = Field("127.0.0.1", description="Address the admin API binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the admin API.")
    metrics_require_token: bool = Field(
        True,
        description="`/metrics` needs a Bearer token (any role). Set false to let Prometheus scrape "
        "anonymously on a trusted network; metrics carry no patient data.",
    )
    session_idle_s: float = Field(
        1800.0,
        gt=0,
        description="A token's first use after this idle time is recorded as a User Authentication "
        "(110114) Login audit event, seconds.",
    )
    dashboard: bool = Field(True, description="Serve the dashboard at `/dashboard/`.")


class SegProfile(StrEnum):
    """How a SEG of a radiograph is written (``results.seg_profile``)."""

    STANDARD = "standard"
    OHIF = "ohif"


class Destination(_Section):
    """``[[destinations]]``: a DICOM peer (PACS, viewer) that receives every result."""

    name: str = Field(..., min_length=1, description="Name used in logs, audit and the API.")
    ae_title: AETitle = Field(..., description="Called AE title of the destination.")
    host: str = Field(..., description="Host name or IP address of the destination.")
    port: int = Field(..., ge=1, le=65535, description="TCP port of the destination.")
    calling_ae_title: AETitle | None = Field(
        None, description="Calling AE title used towards this destination (default: dicom.ae_title)."
    )
    send_seg: bool = Field(True, description="Send the DICOM Segmentation.")
    send_sr: bool = Field(True, description="Send the TID 1500 Structured Report.")
    send_gsps: bool = Field(True, description="Send the Grayscale Softcopy Presentation State.")
    send_sc: bool = Field(
        False,
        description="Send a Secondary Capture with the result text and drawings burned in (for a PACS "
        "or viewer that shows only images: no SR overlay, no GSPS). Set it per destination; such a "
        "destination may also turn send_seg / send_sr / send_gsps off.",
    )
    seg_profile: SegProfile | None = Field(
        None,
        description="How the SEG sent here is written: `standard` or `ohif` (see results.seg_profile); "
        "empty = results.seg_profile. When destinations differ, the node writes one SEG per profile "
        "(the second in its own series, results.series_number_base + 4) and each destination gets "
        "only the one in its profile.",
    )
    tls: bool = Field(False, description="Use TLS towards this destination.")
    tls_ca_certificates: Path | None = Field(None, description="CA bundle to verify the destination.")
    tls_certificate: Path | None = Field(None, description="Client certificate (mutual TLS).")
    tls_private_key: Path | None = Field(None, description="Client private key (mutual TLS).")

    @field_validator("ae_title", "calling_ae_title")
    @classmethod
    def _check_ae(cls, v: str | None) -> str | None:
        return None if v is None else _ae_title(v)


class Peer(_Section):
    """``[[peers]]``: the network address of a known calling AE (for ``return_to_calling_ae``)."""

    ae_title: AETitle = Field(..., description="Calling AE title of the modality or PACS.")
    host: str = Field(..., description="Host name or IP address where it accepts C-STORE.")
    port: int = Field(..., ge=1, le=65535, description="Its C-STORE port.")

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, v: str) -> str:
        return _ae_title(v)


class DispatchSettings(_Section):
    """``[dispatch]``: sending results (C-STORE SCU)."""

    return_to_calling_ae: bool = Field(
        False,
        description="Also send results to the calling AE's address configured in [[peers]].",
    )
    max_attempts: int = Field(8, ge=1, description="Attempts per delivery before it is dead-lettered.")
    initial_backoff_s: float = Field(5.0, gt=0, description="First retry delay, seconds (doubles each time).")
    max_backoff_s: float = Field(3600.0, gt=0, description="Longest retry delay, seconds.")
    connect_timeout_s: float = Field(
        15.0, gt=0, description="TCP/ACSE timeout towards destinations, seconds."
    )
    workers: int = Field(2, ge=1, description="Concurrent delivery threads.")
    batch_size: int = Field(
        32, ge=1, le=500, description="Deliveries to one destination sent over one association at most."
    )
    lease_s: float = Field(
        120.0, gt=0, description="A claimed delivery returns to the queue if not finished by then, seconds."
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often idle delivery threads look for work, seconds."
    )


class JobBackend(StrEnum):
    LOCAL = "local"
    CELERY = "celery"


class JobSettings(_Section):
    """``[jobs]``: the analysis job queue."""

    backend: JobBackend = Field(JobBackend.LOCAL, description="`local` (in-process threads) or `celery`.")
    workers: int = Field(1, ge=0, description="In-process analysis workers (0 = receive only).")
    lease_s: float = Field(
        300.0, gt=0, description="A claimed job returns to the queue if not finished by then."
    )
    max_attempts: int = Field(3, ge=1, description="Analysis attempts before a job is dead.")
    retry_backoff_s: float = Field(10.0, ge=0, description="Delay before a failed job is retried, seconds.")
    poll_interval_s: float = Field(0.5, gt=0, description="How often idle workers look for work, seconds.")
    max_queue_depth: int = Field(
        10000, ge=1, description="Queued jobs above which C-STORE answers 0xA700 (back-pressure)."
    )
    broker_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672//", description="Celery broker URL (backend = celery)."
    )
    celery_queue: str = Field(
        "cdss.jobs", description="Celery queue that carries job ids (backend = celery)."
    )
    republish_after_s: float = Field(
        300.0,
        gt=0,
        description="Celery backend: a queued job not picked up for this long is published again "
        "(covers messages lost between commit and publish; duplicates are harmless).",
    )
    reconcile_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often expired leases are returned to the queue and gauges refreshed, seconds.",
    )
    for_processing_wait_s: float = Field(
        10.0,
        ge=0,
        description="A FOR PROCESSING image waits this long after receipt for the FOR PRESENTATION image "
        "of the same acquisition, which is analysed and referenced instead (see docs/operations.md).",
    )
    batch_size: int = Field(
        0,
        ge=0,
        description="Jobs a worker claims at once and analyses together: one batched model call per "
        "analysis (lumbar, cervical), then each job's own encode/store/commit transaction; 1 = one job "
        "at a time; 0 = auto: 8 when the models run on a GPU, 1 on the CPU (where batching the shipped "
        "models measured no faster, docs/operations.md). Under a backlog batches fill by themselves; "
        "a lone image is not delayed.",
    )
    batch_wait_s: float = Field(
        0.0,
        ge=0,
        description="When fewer than batch_size jobs are due, wait up to this long (seconds) for more "
        "to arrive before analysing; 0 = start at once with what is due.",
    )


class Analysis(StrEnum):
    """The analysis an image is routed to."""

    LUMBAR_LATERAL = "lumbar_lateral"
    LUMBAR_AP = "lumbar_ap"
    CERVICAL_OBLIQUE = "cervical_oblique"
    NOT_APPLICABLE = "not_applicable"


class RouteRule(_Section):
    """``[[route.rules]]``: an extra routing rule, tried before the built-in ones.

    Every non-empty condition must hold (case-insensitive; each is a list of accepted values;
    ``*`` matches anything, including a missing tag).
    """

    analysis: Analysis = Field(..., description="Analysis to run when the rule matches.")
    modality: list[str] = Field(default_factory=lambda: ["*"], description="Accepted Modality values.")
    body_part: list[str] = Field(
        default_factory=lambda: ["*"], description="Accepted BodyPartExamined (normalised) values."
    )
    view: list[str] = Field(
        default_factory=lambda: ["*"], description="Accepted normalised views: LAT, AP, PA, OBL, `*`."
    )
    calling_aet: list[str] = Field(default_factory=lambda: ["*"], description="Accepted calling AE titles.")
    series_description_contains: str | None = Field(
        None, description="Substring required in SeriesDescription or ProtocolName (case-insensitive)."
    )


class RouteSettings(_Section):
    """``[route]``: which analysis applies to an image."""

    rules: list[RouteRule] = Field(default_factory=list, description="Site rules tried first, in order.")
    use_builtin_rules: bool = Field(
        True, description="Fall back to the built-in tag heuristics when no site rule matches."
    )
    view_classifier: bool = Field(
        True,
        description="Use the view classifier (pixels) when the tags are absent, incomplete or "
        "contradictory, and as a veto on analyses the tags chose (docs/operations.md).",
    )
    view_weights: Path | None = Field(
        None, description="View classifier weights (.pt); empty = the shipped synthetic-data model."
    )
    classifier_min_probability: float = Field(
        0.65,
        ge=0,
        le=1,
        description="The classifier decides an image whose tags do not only when its top class has at "
        "least this probability (chosen on validation data, docs/models/view.md).",
    )
    classifier_veto_probability: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Stop an analysis the tags (or a site rule) chose when the classifier gives at least "
        "this probability to 'not this region' (other + the other spine region).",
    )


class ModelSettings(_Section):
    """``[models]``: the analysis models (shipped weights by default)."""

    device: str = Field("auto", description="`auto` (CUDA when present), `cpu` or `cuda[:N]`.")
    lumbar_weights: Path | None = Field(
        None, description="Lumbar segmentation weights (.pt); empty = the shipped synthetic-data model."
    )
    lumbar_ap_weights: Path | None = Field(
        None, description="AP lumbar segmentation weights (.pt); empty = the shipped model."
    )
    cervical_weights: Path | None = Field(
        None, description="Cervical stenosis weights (.pt); empty = the shipped synthetic-data model."
    )
    listhesis_threshold_percent: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Slip below this percentage is reported as 'no listhesis' (see docs/analysis.md).",
    )
    grade_margin_pp: float = Field(
        1.5,
        ge=0,
        le=25,
        description="A lateral level whose slip is within this many percentage points (plus "
        "grade_margin_fraction of the slip itself) of a grade boundary (the listhesis threshold, "
        "25, 50, 75, 100 %) is reported 'not measured' with the boundary as the reason, never with "
        "a grade that a small measurement error would change (0 and 0 = off; docs/models/lumbar.md, "
        "'Grade boundary').",
    )
    grade_margin_fraction: float = Field(
        0.08,
        ge=0,
        le=0.5,
        description="Part of the grade margin that grows with the slip: the band around a grade "
        "boundary is grade_margin_pp + this fraction × |slip|, because an error in the endplate "
        "width (the denominator of slip %) changes a large slip by more points than a small one "
        "(docs/models/lumbar.md, 'Grade boundary').",
    )
    cervical_operating_point: float | None = Field(
        None, ge=0, le=1, description="Probability threshold for 'abnormal'; empty = the model card's."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="CPU threads per inference (0 = the cores divided among jobs.workers: 2 threads for one "
        "worker on 2 cores, 1 each for two).",
    )
    processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Analysis worker processes (0 = in the node's own process, shared with its job "
        "threads). N > 0 runs the models in N spawned processes, each with its own model copy, so the "
        "analysis does not share the interpreter lock with receiving, encoding and sending "
        "(docs/operations.md, 'Analysis throughput').",
    )
    ultralytics_dir: Path | None = Field(
        None,
        description="Directory for Ultralytics' settings, fonts and run folders (it never downloads "
        "anything); empty = `<tmp>/cdss-ultralytics-<uid>`.",
    )


class ResultSettings(_Section):
    """``[results]``: how result objects are labelled."""

    manufacturer: str = Field("cdss open-source project", description="Manufacturer written in every result.")
    research_use_only: bool = Field(
        True,
        description="Label results as research output (Content Qualification RESEARCH and a caution in "
        "series descriptions). Set false only where the site has validated the models.",
    )
    caution_text: str = Field(
        "RESEARCH USE ONLY - not for diagnosis", description="Caution appended to series descriptions."
    )
    series_number_base: int = Field(9000, ge=1, description="Series numbers of results start here.")
    secondary_capture: bool = Field(
        False,
        description="Also return the burned-in Secondary Capture to the calling AE "
        "(dispatch.return_to_calling_ae). Destinations choose for themselves with send_sc: one with "
        "send_sc = true always gets the SC, whatever this says.",
    )
    seg_profile: SegProfile = Field(
        SegProfile.STANDARD,
        description="`standard`: a conformant SEG of a radiograph (no plane geometry; OHIF 3.13 does not "
        "display it). `ohif`: also writes a shared Pixel Measures (Pixel Spacing, Slice Thickness 1) and "
        "Plane Orientation (Patient) [1,0,0,0,1,0] functional group, which OHIF 3.13 needs to show a SEG "
        "but which DICOM allows only with a patient Frame of Reference; opt in only for OHIF sites "
        "(docs/viewer.md). This is the node's default (also for the calling AE); a destination can "
        "choose its own with its seg_profile.",
    )
    device_uid_in_contributing_equipment: bool = Field(
        False,
        description="Write the model's Device UID (0018,1002) into the Contributing Equipment item of "
        "every result, as IHE AI Results asks. Off by default: DICOM added Device UID to that sequence "
        "after the validators in use (dicom3tools 2022 warns on every object); the Device UID is always "
        "in the SR's device observer and in the SEG/SC Image Comments.",
    )


class SyslogProtocol(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class AuditSettings(_Section):
    """``[audit]``: the tamper-evident audit trail and its forwarding."""

    syslog_host: str | None = Field(None, description="RFC 5424 syslog receiver (IHE ATNA ARR); empty = off.")
    syslog_port: int = Field(514, ge=1, le=65535, description="Syslog receiver port.")
    syslog_protocol: SyslogProtocol = Field(SyslogProtocol.TCP, description="`udp`, `tcp` or `tls`.")
    syslog_ca_certificates: Path | None = Field(None, description="CA bundle for syslog over TLS.")
    spool_path: Path = Field(
        Path("var/audit-spool"), description="Messages wait here while the syslog receiver is unreachable."
    )
    syslog_client_certificate: Path | None = Field(
        None, description="PEM client certificate for syslog over TLS (mutual TLS, IHE ATNA ITI-19)."
    )
    syslog_client_key: Path | None = Field(None, description="PEM private key of the client certificate.")
    syslog_app_name: str = Field("cdss", min_length=1, max_length=48, description="RFC 5424 APP-NAME.")
    syslog_facility: int = Field(
        10, ge=0, le=23, description="Syslog facility; 10 (security/authorization) per DICOM PS3.15 A.6/A.7."
    )
    syslog_enterprise_number: int = Field(
        32473,
        ge=1,
        description="IANA Private Enterprise Number of the RFC 5424 SD-ID that carries the chain "
        "sequence and hash (`cdssChain@N`); 32473 is the documentation number of RFC 5612.",
    )
    forward_interval_s: float = Field(
        2.0, gt=0, description="How often new audit events are spooled and the spool is sent, seconds."
    )
    source_id: str | None = Field(
        None, description="AuditSourceID of DICOM audit messages; empty = `<dicom.ae_title>@<host name>`."
    )
    enterprise_site_id: str | None = Field(
        None, description="AuditEnterpriseSiteID of DICOM audit messages (optional)."
    )


class LoggingSettings(_Section):
    """``[logging]``: the application log (never contains patient identifiers)."""

    level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_output: bool = Field(False, description="Write JSON lines instead of human-readable lines.")


class Settings(_Section):
    """The whole configuration of one node."""

    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    destinations: list[Destination] = Field(default_factory=list)
    peers: list[Peer] = Field(default_factory=list)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    route: RouteSettings = Field(default_factory=RouteSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    def to_toml_dict(self) -> dict[str, Any]:
        """Return the settings as plain TOML-serialisable data (paths as strings, no ``None``)."""
        return _drop_none(json.loads(self.model_dump_json()))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _is_list_annotation(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_annotation(a) for a in typing.get_args(annotation))
    return False


def _parse_env_value(name: str, raw: str, annotation: Any) -> Any:
    if _is_list_annotation(annotation):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name}: invalid JSON list ({exc})") from exc
        return [part.strip() for part in text.split(",") if part.strip()]
    if raw == "" and type(None) in typing.get_args(annotation):
        return None
    return raw


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for field_name, field in Settings.model_fields.items():
        annotation = field.annotation
        section_cls = (
            annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        )
        if section_cls is None:
            # Arrays of tables: the whole list as JSON.
            env_name = f"{ENV_PREFIX}{field_name.upper()}"
            if env_name in environ:
                try:
                    overrides[field_name] = json.loads(environ[env_name])
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f"environment variable {env_name}: expected a JSON list ({exc})"
                    ) from exc
            continue
        for key, sub in section_cls.model_fields.items():
            env_name = f"{ENV_PREFIX}{field_name.upper()}_{key.upper()}"
            if env_name in environ:
                raw = environ[env_name]
                if key == "rules":
                    try:
                        value: Any = json.loads(raw)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"environment variable {env_name}: expected JSON ({exc})") from exc
                else:
                    value = _parse_env_value(env_name, raw, sub.annotation)
                overrides.setdefault(field_name, {})[key] = value
    return overrides


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: Path | str | None = None, environ: typing.Mapping[str, str] | None = None
) -> Settings:
    """Load the effective settings.

    Parameters
    ----------
    path
        TOML file; when ``None`` the ``CDSS_CONFIG`` environment variable is used, and when that
        is unset only defaults and environment overrides apply.
    environ
        Environment to read overrides from (default: ``os.environ``).

    Returns
    -------
    Settings
        Validated settings; relative paths are kept relative to the working directory.

    Raises
    ------
    ConfigError
        The file is missing or not valid TOML, a key is unknown, or a value is invalid. The
        message names the file and the key.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("CDSS_CONFIG"):
        path = env["CDSS_CONFIG"]
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from exc
    data = _deep_merge(data, _env_overrides(env))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({source} + CDSS_* environment): {problems}") from exc
