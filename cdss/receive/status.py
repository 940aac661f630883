"""C-STORE response statuses answered by the node (the table in docs/dicom-conformance.md).

PS3.4 B.2.3 defines the ranges: A7xx Refused: Out of Resources, A9xx Error: Data Set does not
match SOP Class, Cxxx Error: Cannot understand. Within them the node uses specific codes so that
a PACS administrator can tell the causes apart from the modality's log alone. Codes that
pynetdicom itself uses (0xC001/0xC002 for an invalid handler return, 0xC211 for a handler
exception) are avoided for our own conditions so that they stay unambiguous.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["StoreStatus", "outcome_label"]


class StoreStatus(IntEnum):
    """DIMSE Status values of the node's C-STORE-RSP."""

    #: Stored durably, or an exact/conflicting duplicate of a stored instance (see duplicate policy).
    SUCCESS = 0x0000
    #: Transient: disk below ``storage.min_free_mb``, spool write failed, database unavailable,
    #: or more than ``jobs.max_queue_depth`` jobs waiting. Retry later.
    OUT_OF_RESOURCES = 0xA700
    #: Permanent for this dataset: larger than ``dicom.max_dataset_mb`` or Rows x Columns x
    #: Frames x Samples above ``dicom.max_image_pixels`` (a configured capacity limit).
    EXCEEDS_LIMIT = 0xA710
    #: Affected SOP Class/Instance UID of the command differ from the dataset's.
    SOP_MISMATCH = 0xA900
    #: The Image Pixel description contradicts the IOD: Rows/Columns 0 or missing, Bits
    #: Allocated not 1/8/16/32, Bits Stored > Bits Allocated, High Bit != Bits Stored - 1,
    #: Samples per Pixel not 1/3, Number of Frames < 1, Pixel Data missing or shorter than
    #: declared, encapsulated/native mismatch with the transfer syntax.
    INVALID_PIXEL_DESCRIPTION = 0xA910
    #: The dataset cannot be parsed in the negotiated transfer syntax (not DICOM, truncated,
    #: corrupt deflate stream, elements running past the end).
    CANNOT_UNDERSTAND = 0xC000
    #: SOP Class, SOP Instance, Study Instance or Series Instance UID missing or empty.
    MISSING_UID = 0xC410
    #: One of those UIDs is not a valid UID (PS3.5 9.1: digits and dots, no leading zeros,
    #: at most 64 characters, ASCII only) - e.g. ``../..`` or 65+ characters.
    INVALID_UID = 0xC411
    #: An unexpected error inside the node (logged without patient data); pynetdicom's own code
    #: for a failing handler.
    PROCESSING_FAILURE = 0xC211


def outcome_label(status: int, *, duplicate: bool = False) -> str:
    """Label for ``cdss_instances_received_total{outcome}``: success, duplicate, refused, error."""
    if status == StoreStatus.SUCCESS:
        return "duplicate" if duplicate else "success"
    if (status & 0xFF00) == 0xA700:
        return "refused"
    return "error"
