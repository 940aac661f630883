"""DICOM result objects for cdss analyses: SEG, TID 1500 SR, GSPS and Secondary Capture.

Pure functions (datasets and dataclasses in, datasets out; no I/O). See ``docs/results.md``.

>>> objs = encode_results(source_ds, result, settings.results, include_sc=False)  # doctest: +SKIP
"""

from cdss.encode.api import encode_results, overlay_for_context
from cdss.encode.common import EncodedObject, EncodeError, ResultKind, WrittenObject

__all__ = [
    "EncodeError",
    "EncodedObject",
    "ResultKind",
    "WrittenObject",
    "encode_results",
    "overlay_for_context",
]
