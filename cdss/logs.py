"""Application logging (structlog). Never log patient identifiers (DESIGN.md invariant 7).

The audit trail (:mod:`cdss.audit`) is the place for who/what/when. Log records carry technical
identifiers only (database ids, SOP Class UIDs, AE titles, statuses). pynetdicom's identifier
logging is switched off here as well.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "get_logger"]

#: Keys that must never reach a log line; values are replaced by "<redacted>".
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "accession_number",
        "AccessionNumber",
    }
)


def _redact_phi(_logger: object, _name: str, event_dict: dict) -> dict:
    for key in PHI_KEYS.intersection(event_dict):
        event_dict[key] = "<redacted>"
    return event_dict


def configure_logging(level: str = "INFO", json_output: bool = False) -> None:
    """Configure structlog and the standard library logging once per process."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=getattr(logging, level.upper(), 20))
    for noisy in (
        "pynetdicom",
        "PIL",
        "matplotlib",
        "ultralytics",
        "multipart",
        "httpx",
        "highdicom",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from pynetdicom import _config as pnd_config

        pnd_config.LOG_REQUEST_IDENTIFIERS = False
        pnd_config.LOG_RESPONSE_IDENTIFIERS = False
    except ImportError:  # pragma: no cover - pynetdicom is a dependency
        pass
    renderer = (
        structlog.processors.JSONRenderer()
        if json_output
        # Plain tracebacks: rich's default shows local variables, which can hold patient data.
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_phi,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), 20)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
