"""Application logging (structlog). Never log patient identifiers (DESIGN.md invariant 7).

The audit trail (:mod:`cdss.audit`) is the place for who/what/when. Log records carry technical
identifiers only (database ids, SOP Class UIDs, AE titles, statuses). pynetdicom's identifier
logging is switched off here as well.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "exception_frames", "get_logger"]

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


def _redact_phi(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in PHI_KEYS.intersection(event_dict):
        event_dict[key] = "<redacted>"
    return event_dict


class _StderrLogger:
    """A structlog logger that writes to whatever ``sys.stderr`` is *now*.

    ``structlog.PrintLoggerFactory(file=sys.stderr)`` keeps the stream object of the moment it was
    configured; when that was a temporary stream (a test runner's capture, Typer's CliRunner),
    every later log call raises "I/O operation on closed file". Resolving the stream per call
    avoids that, and a failing write never takes the caller down.
    """

    def msg(self, message: str) -> None:
        # A closed or broken stream drops the line; the caller keeps working.
        with contextlib.suppress(ValueError, OSError):
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg


class _StderrHandler(logging.StreamHandler[TextIO]):
    """A logging handler bound to the current ``sys.stderr`` (same reason as :class:`_StderrLogger`)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _stderr_logger_factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(level: str = "INFO", json_output: bool = False) -> None:
    """Configure structlog and the standard library logging once per process."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(handlers=[handler], level=getattr(logging, level.upper(), 20))
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
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def exception_frames(exc: BaseException, depth: int = 6) -> list[str]:
    """The last ``depth`` frames of ``exc`` as ``file:line function`` (no message, no locals).

    Exception messages from DICOM parsers and model code can quote tag values (patient names
    included), so the application log gets the exception type and these frames (DESIGN.md
    invariant 7); the message goes to the job/delivery row (``last_error``) or the audit trail.
    """
    return [
        f"{Path(f.filename).name}:{f.lineno} {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)[-depth:]
    ]
