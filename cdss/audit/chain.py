"""The audit hash chain: ``hash_i = SHA-256(hash_{i-1} || canonical(row_i))``.

The canonical form is a compact JSON object with sorted keys over every column except ``id``
and ``hash`` (``prev_hash`` included), so editing, deleting, inserting or reordering rows breaks
the chain at a row that :func:`cdss.audit.verify.verify_chain` can name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from enum import Enum
from typing import Any

__all__ = ["GENESIS_HASH", "canonical", "chain_hash", "iso_utc"]

#: ``prev_hash`` of the first event.
GENESIS_HASH = "0" * 64

CHAINED_FIELDS = (
    "seq",
    "occurred_at",
    "event_id",
    "event_name",
    "event_type",
    "action",
    "outcome",
    "user",
    "source",
    "study_instance_uid",
    "patient_id",
    "accession_number",
    "description",
    "detail",
    "prev_hash",
)


def iso_utc(value: dt.datetime) -> str:
    """UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> bytes:
    """Canonical bytes of one event (see module docstring)."""
    data = {}
    for name in CHAINED_FIELDS:
        value = fields.get(name)
        if isinstance(value, dt.datetime):
            value = iso_utc(value)
        elif isinstance(value, Enum) and not isinstance(value, (str, int)):  # plain enums
            value = value.value
        data[name] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """SHA-256 hex of ``prev_hash`` followed by the canonical row."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(fields)).hexdigest()
