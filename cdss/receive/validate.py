"""Header-only validation of a received dataset, before anything is stored.

The dataset is parsed from the bytes exactly as received (in the negotiated transfer syntax),
stopping at Pixel Data; the Pixel Data element itself is only walked (its length, or its
encapsulated items) to prove it is complete. Nothing is decoded: codecs never see a dataset that
failed these checks (TALOS-2024-2121/2122: inconsistent pixel attributes crash decoders).

Each failure raises :class:`Rejection` with the status of :class:`~cdss.receive.status.StoreStatus`,
a short machine ``reason`` (metrics/audit) and a message without patient data (logs, Error Comment).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from cdss.receive.status import StoreStatus

__all__ = ["Rejection", "ValidatedDataset", "inflate_bounded", "parse_header", "validate"]

PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_SEQ_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_UID_RE = re.compile(rb"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")

REQUIRED_UIDS = (
    ("SOPClassUID", 0x00080016),
    ("SOPInstanceUID", 0x00080018),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)


class Rejection(Exception):
    """A received dataset is refused; carries the C-STORE status to answer.

    Attributes
    ----------
    status
        DIMSE status (:class:`~cdss.receive.status.StoreStatus`).
    reason
        Short machine-readable cause (``missing_uid``, ``unparseable``...), used as metric label.
    message
        Explanation without patient data (becomes the Error Comment, truncated to 64 chars).
    offending
        Tag of the offending element, when one is to blame.
    """

    def __init__(self, status: StoreStatus, reason: str, message: str, offending: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.offending = offending


@dataclass(frozen=True)
class ValidatedDataset:
    """The header of an accepted dataset plus facts learnt while checking it."""

    dataset: Dataset  # header only (stops before Pixel Data)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    pixels: int  # Rows x Columns x Frames x Samples


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Inflate a raw deflate stream (Deflated Explicit VR Little Endian) up to ``limit`` bytes.

    Raises
    ------
    Rejection
        ``EXCEEDS_LIMIT`` when it inflates beyond ``limit`` (a deflate bomb), ``CANNOT_UNDERSTAND``
        when the stream is corrupt or truncated.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise Rejection(
                StoreStatus.EXCEEDS_LIMIT,
                "too_large",
                f"deflated dataset inflates beyond the {limit // 2**20} MiB limit",
            )
        out += inflater.flush()
    except zlib.error as exc:
        raise Rejection(
            StoreStatus.CANNOT_UNDERSTAND, "unparseable", f"corrupt deflate stream ({exc})"
        ) from exc
    if not inflater.eof:
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "truncated deflate stream")
    return out


_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})


def _stop_at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if offset + size > len(data):
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "dataset truncated in Pixel Data")
    return struct.unpack_from(fmt, data, offset)


@dataclass(frozen=True)
class _PixelElement:
    encapsulated: bool
    length: int  # value length for native data; total encapsulated bytes otherwise
    fragments: int


def _walk_pixel_data(data: bytes, offset: int, implicit: bool, little: bool) -> tuple[_PixelElement, int]:
    """Check the Pixel Data element starting at ``offset``; return it and the offset after it."""
    e = "<" if little else ">"
    group, elem = _unpack(f"{e}HH", data, offset)
    tag = (group << 16) | elem
    if tag != PIXEL_DATA:
        raise Rejection(
            StoreStatus.INVALID_PIXEL_DESCRIPTION,
            "pixel_data_invalid",
            f"unsupported pixel element ({group:04X},{elem:04X})",
            offending=tag,
        )
    pos = offset + 4
    if implicit:
        (length,) = _unpack(f"{e}L", data, pos)
        pos += 4
    else:
        vr = data[pos : pos + 2]
        if vr in (b"OB", b"OW", b"UN", b"OV", b"OF", b"OD", b"OL", b"UT", b"UC", b"UR", b"SV", b"UV", b"SQ"):
            (length,) = _unpack(f"{e}L", data, pos + 4)
            pos += 8
        else:
            (length,) = _unpack(f"{e}H", data, pos + 2)
            pos += 4
    if length != _UNDEFINED:
        if pos + length > len(data):
            raise Rejection(
                StoreStatus.CANNOT_UNDERSTAND,
                "truncated",
                f"Pixel Data truncated: {len(data) - pos} of {length} bytes received",
            )
        return _PixelElement(False, length, 0), pos + length
    # Encapsulated: items (FFFE,E000) then the sequence delimiter (FFFE,E0DD), all little endian.
    total = 0
    fragments = 0
    while True:
        group, elem, item_len = _unpack("<HHL", data, pos)
        item_tag = (group << 16) | elem
        pos += 8
        if item_tag == _SEQ_DELIMITER:
            break
        if item_tag != _ITEM or item_len == _UNDEFINED:
            raise Rejection(
                StoreStatus.CANNOT_UNDERSTAND, "unparseable", "corrupt encapsulated Pixel Data item"
            )
        if pos + item_len > len(data):
            raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "truncated", "encapsulated Pixel Data truncated")
        pos += item_len
        total += item_len
        fragments += 1
    return _PixelElement(True, total, max(fragments - 1, 0)), pos


def parse_header(
    raw: bytes, transfer_syntax: str, *, max_bytes: int
) -> tuple[Dataset, _PixelElement | None, bytes]:
    """Parse a dataset (no file meta) up to Pixel Data and prove the rest is complete.

    Parameters
    ----------
    raw
        The dataset bytes as received over the network.
    transfer_syntax
        The presentation context's transfer syntax UID.
    max_bytes
        Limit for the (inflated) dataset size, bytes.

    Returns
    -------
    (header, pixel element or None, parsed bytes)
        ``parsed bytes`` is the inflated dataset for Deflated Explicit VR Little Endian, else ``raw``.
    """
    ts = UID(transfer_syntax)
    data = inflate_bounded(raw, max_bytes) if ts == DeflatedExplicitVRLittleEndian else raw
    implicit = ts.is_implicit_VR
    little = ts.is_little_endian
    fp = BytesIO(data)
    try:
        ds = read_dataset(fp, implicit, little, stop_when=_stop_at_pixels)
        _check_elements(ds, 0)
    except Rejection:
        raise
    except RecursionError as exc:
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "sequences nested too deeply") from exc
    except Exception as exc:
        raise Rejection(
            StoreStatus.CANNOT_UNDERSTAND, "unparseable", f"not a parseable dataset ({type(exc).__name__})"
        ) from exc
    pos = fp.tell()
    if pos > len(data):
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "truncated", "dataset truncated")
    pixel: _PixelElement | None = None
    if pos < len(data):
        pixel, pos = _walk_pixel_data(data, pos, implicit, little)
        if pos < len(data):
            # Elements after Pixel Data (e.g. Data Set Trailing Padding) must parse too.
            tail = BytesIO(data[pos:])
            try:
                rest = read_dataset(tail, implicit, little)
                _check_elements(rest, 0)
            except Exception as exc:
                raise Rejection(
                    StoreStatus.CANNOT_UNDERSTAND, "unparseable", "unparseable data after Pixel Data"
                ) from exc
            if tail.tell() != len(data) - pos:
                raise Rejection(
                    StoreStatus.CANNOT_UNDERSTAND, "truncated", "dataset truncated after Pixel Data"
                )
    if len(ds) == 0:
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "no data elements found")
    _check_order(ds)
    return ds, pixel, data


MAX_SEQUENCE_DEPTH = 32


def _check_elements(ds: Dataset, depth: int) -> None:
    """Prove every element (sequences included) is complete and convert its value now.

    pydicom silently returns a short value when an element's length runs past the end of the
    data; a worker would then meet the damage later. Converting the values here also surfaces
    malformed ones (wrong length for the VR) while the peer can still be told.
    """
    if depth > MAX_SEQUENCE_DEPTH:
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "sequences nested too deeply")
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED
            and raw.value is not None
            and len(raw.value) != raw.length
        ):
            raise Rejection(
                StoreStatus.CANNOT_UNDERSTAND,
                "truncated",
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end of the data",
            )
        elem = ds[tag]
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                _check_elements(item, depth + 1)


def _check_order(ds: Dataset) -> None:
    # pydicom sorts elements on access; the raw order must already be ascending (PS3.5 7.1).
    # Random bytes read as implicit VR almost never produce an ordered run, which lets us call
    # them "not DICOM" instead of "missing UID".
    tags = list(ds.keys())
    if tags and (int(tags[0]) >> 16) in (0x0000, 0xFFFE):
        raise Rejection(
            StoreStatus.CANNOT_UNDERSTAND, "unparseable", "command or delimiter elements in dataset"
        )
    if any(int(tags[i]) >= int(tags[i + 1]) for i in range(len(tags) - 1)):
        raise Rejection(StoreStatus.CANNOT_UNDERSTAND, "unparseable", "data elements out of order")


def _raw_uid(ds: Dataset, keyword: str, tag: int) -> str:
    if tag not in ds:
        raise Rejection(StoreStatus.MISSING_UID, "missing_uid", f"{keyword} missing", offending=tag)
    elem = ds.get_item(tag)
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, (bytes, bytearray)):
        value = bytes(raw).rstrip(b"\x00 ")
    else:
        converted = ds[tag].value
        value = ("" if converted is None else str(converted)).rstrip("\x00 ").encode("utf-8", "replace")
    if not value:
        raise Rejection(StoreStatus.MISSING_UID, "missing_uid", f"{keyword} empty", offending=tag)
    if len(value) > 64 or not _UID_RE.fullmatch(value):
        raise Rejection(
            StoreStatus.INVALID_UID,
            "invalid_uid",
            f"{keyword} is not a valid UID",
            offending=tag,
        )
    return value.decode("ascii")


def _int(ds: Dataset, keyword: str) -> int | None:
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
            value = value[0]
        return int(value)
    except (TypeError, ValueError, IndexError):
        tag = Tag(keyword)
        raise Rejection(
            StoreStatus.INVALID_PIXEL_DESCRIPTION,
            "pixel_description_invalid",
            f"{keyword} is not a number",
            offending=int(tag),
        ) from None


def _bad_pixels(message: str, keyword: str) -> Rejection:
    return Rejection(
        StoreStatus.INVALID_PIXEL_DESCRIPTION,
        "pixel_description_invalid",
        message,
        offending=int(Tag(keyword)),
    )


def validate(
    raw: bytes,
    transfer_syntax: str,
    *,
    command_sop_class_uid: str,
    command_sop_instance_uid: str,
    max_bytes: int,
    max_image_pixels: int,
) -> ValidatedDataset:
    """Validate a received C-STORE dataset; raise :class:`Rejection` with the status to answer.

    Order of checks (the first failing one decides the status): size → parse → required UIDs
    present → UIDs valid → command vs dataset UIDs → Image Pixel description → pixel count.

    Parameters
    ----------
    raw
        Dataset bytes as received (no file meta).
    transfer_syntax
        Negotiated transfer syntax UID.
    command_sop_class_uid, command_sop_instance_uid
        Affected SOP Class/Instance UID of the C-STORE-RQ.
    max_bytes
        ``dicom.max_dataset_mb`` in bytes.
    max_image_pixels
        ``dicom.max_image_pixels``.
    """
    if len(raw) > max_bytes:
        raise Rejection(
            StoreStatus.EXCEEDS_LIMIT,
            "too_large",
            f"dataset of {len(raw) / 2**20:.0f} MiB exceeds the {max_bytes // 2**20} MiB limit",
        )
    ds, pixel, _ = parse_header(raw, transfer_syntax, max_bytes=max_bytes)
    uids = {keyword: _raw_uid(ds, keyword, tag) for keyword, tag in REQUIRED_UIDS}
    if uids["SOPClassUID"] != (command_sop_class_uid or "").rstrip("\x00 "):
        raise Rejection(
            StoreStatus.SOP_MISMATCH,
            "sop_class_mismatch",
            "SOP Class UID of dataset differs from command",
            offending=0x00080016,
        )
    if uids["SOPInstanceUID"] != (command_sop_instance_uid or "").rstrip("\x00 "):
        raise Rejection(
            StoreStatus.SOP_MISMATCH,
            "sop_instance_mismatch",
            "SOP Instance UID of dataset differs from command",
            offending=0x00080018,
        )
    pixels = _check_pixels(ds, pixel, UID(transfer_syntax), max_image_pixels)
    return ValidatedDataset(
        dataset=ds,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        pixels=pixels,
    )


def _check_pixels(ds: Dataset, pixel: _PixelElement | None, ts: UID, max_image_pixels: int) -> int:
    rows = _int(ds, "Rows")
    columns = _int(ds, "Columns")
    bits_allocated = _int(ds, "BitsAllocated")
    bits_stored = _int(ds, "BitsStored")
    high_bit = _int(ds, "HighBit")
    samples = _int(ds, "SamplesPerPixel")
    frames = _int(ds, "NumberOfFrames")
    representation = _int(ds, "PixelRepresentation")
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if value is None or value <= 0:
            raise _bad_pixels(f"{keyword} missing or zero", keyword)
    if bits_allocated not in (1, 8, 16, 32):
        raise _bad_pixels("BitsAllocated not 1, 8, 16 or 32", "BitsAllocated")
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise _bad_pixels("BitsStored missing or > BitsAllocated", "BitsStored")
    if high_bit is None or high_bit != bits_stored - 1:
        raise _bad_pixels("HighBit != BitsStored - 1", "HighBit")
    if samples not in (1, 3):
        raise _bad_pixels("SamplesPerPixel not 1 or 3", "SamplesPerPixel")
    if representation not in (0, 1):
        raise _bad_pixels("PixelRepresentation not 0 or 1", "PixelRepresentation")
    if "PhotometricInterpretation" not in ds or not str(ds.PhotometricInterpretation).strip():
        raise _bad_pixels("PhotometricInterpretation missing", "PhotometricInterpretation")
    if frames is None:
        frames = 1
    elif frames < 1:
        raise _bad_pixels("NumberOfFrames < 1", "NumberOfFrames")
    assert rows is not None and columns is not None
    count = rows * columns * frames * samples
    if count > max_image_pixels:
        raise Rejection(
            StoreStatus.EXCEEDS_LIMIT,
            "too_many_pixels",
            f"{count} pixels exceed the dicom.max_image_pixels limit of {max_image_pixels}",
            offending=0x00280010,
        )
    if pixel is None:
        raise _bad_pixels("Pixel Data missing", "PixelData")
    if ts.is_compressed and not pixel.encapsulated:
        raise _bad_pixels("Pixel Data not encapsulated for a compressed transfer syntax", "PixelData")
    if not ts.is_compressed:
        if pixel.encapsulated:
            raise _bad_pixels("encapsulated Pixel Data in a native transfer syntax", "PixelData")
        expected = math.ceil(count * bits_allocated / 8)
        if pixel.length < expected:
            raise _bad_pixels(
                f"Pixel Data has {pixel.length} bytes, Rows x Columns x Frames x Samples needs {expected}",
                "PixelData",
            )
    elif pixel.length == 0:
        raise _bad_pixels("encapsulated Pixel Data has no fragments", "PixelData")
    return count
