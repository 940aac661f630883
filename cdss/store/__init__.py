"""Durable, content-addressed instance and result spool (DESIGN.md invariants 1 and 2)."""

from cdss.store.spool import (
    KEY_PATTERN,
    TEMP_PREFIX,
    Spool,
    SpoolArea,
    SpoolError,
    SpoolFullError,
    SpoolWriteError,
    StoredFile,
)

__all__ = [
    "KEY_PATTERN",
    "TEMP_PREFIX",
    "Spool",
    "SpoolArea",
    "SpoolError",
    "SpoolFullError",
    "SpoolWriteError",
    "StoredFile",
]
