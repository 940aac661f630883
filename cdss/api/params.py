"""Query and path parameters shared by the endpoints (bounded so that no input reaches SQL unchecked)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator

from cdss.api.export import ExportFormat

MAX_LIMIT = 10_000
MAX_ID = 2**31 - 1
TEXT_PATTERN = (
    r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL; nothing else needs them)
)

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="Database id.")]

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_only(value: object) -> object:
    """Accept ISO 8601 text only (pydantic would also take a number as a Unix time)."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date/time such as 2026-03-01T08:00:00Z")
    return value


IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_only)]

Since = Annotated[
    IsoDateTime | None,
    Query(description="Only records at or after this time (ISO 8601; without an offset: UTC)."),
]
Until = Annotated[
    IsoDateTime | None, Query(description="Only records before this time (ISO 8601; without an offset: UTC).")
]
CallingAE = Annotated[
    str | None,
    Query(max_length=16, pattern=TEXT_PATTERN, description="Calling AE title that sent the image."),
]
Modality = Annotated[
    str | None, Query(max_length=16, pattern=TEXT_PATTERN, description="Modality, e.g. DX, CR.")
]
PatientID = Annotated[
    str | None, Query(max_length=64, pattern=TEXT_PATTERN, description="Patient ID (exact).")
]
Accession = Annotated[
    str | None, Query(max_length=64, pattern=TEXT_PATTERN, description="Accession number (exact).")
]
StudyUID = Annotated[
    str | None, Query(max_length=64, pattern=TEXT_PATTERN, description="Study Instance UID (exact).")
]
AnalysisQ = Annotated[
    str | None,
    Query(
        max_length=32,
        pattern=TEXT_PATTERN,
        description="Analysis: lumbar_lateral, lumbar_ap, cervical_oblique, not_applicable.",
    ),
]
Finding = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=TEXT_PATTERN,
        description='Case-insensitive substring of the job\'s findings summary (JSON), e.g. `abnormal` or `"II"`.',
    ),
]
Kind = Annotated[
    str | None, Query(max_length=8, pattern=TEXT_PATTERN, description="Result kind: SEG, SR, GSPS, SC.")
]
Destination = Annotated[
    str | None,
    Query(max_length=64, pattern=TEXT_PATTERN, description="Destination name from the configuration."),
]
JobIdQ = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only records of this job.")]
TextQ = Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)]


def clamp_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Timezone-aware UTC; out-of-range values (year 1 with a positive offset…) are clamped."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        return (dt.datetime.min if value.year < 5000 else dt.datetime.max).replace(tzinfo=dt.UTC)


@dataclass
class Paging:
    limit: int
    offset: int
    format: ExportFormat


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Records to skip.")] = 0,
    format: Annotated[
        ExportFormat, Query(description="`json` (a page with totals) or `csv` (export of the same page).")
    ] = ExportFormat.JSON,
) -> Paging:
    return Paging(limit, offset, format)
