"""Describing exceptions for the application log without patient data (DESIGN.md invariant 7)."""

from __future__ import annotations

import traceback
from pathlib import Path

__all__ = ["where"]


def where(exc: BaseException, depth: int = 6) -> list[str]:
    """The last ``depth`` frames of ``exc`` as ``file:line function`` (no message, no locals).

    Exception messages from DICOM parsers and model code can quote tag values, so logs get the
    exception type and these frames; the message goes to the job/delivery row (``last_error``).
    """
    return [
        f"{Path(f.filename).name}:{f.lineno} {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)[-depth:]
    ]
