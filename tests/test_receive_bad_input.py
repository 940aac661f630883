"""Bad input and failing resources: each gets its documented status and leaves nothing behind.

For every refused C-STORE the tests check the status the SCU received, that no study/series/
instance/job row and no spool file (final or temporary) exists, that an audit event records the
failure, and that the node still answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
import zlib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from sqlalchemy import create_engine, select, text

from cdss.db import Instance
from cdss.receive.syntaxes import COMPRESSED_CANDIDATES, STORAGE_SOP_CLASSES, decoder_status
from tests.conftest import POSTGRES_ADMIN_URL
from tests.dicom_factory import CR, DX_PRESENTATION, make_image, write
from tests.receive_support import (
    Node,
    audit_rows,
    dataset_bytes,
    echoscu,
    pynetdicom_store,
    raw_file,
    rows,
    run_node,
    spool_files,
    storescu,
)

pytestmark = pytest.mark.integration

EMPTY = {"studies": 0, "series": 0, "instances": 0, "jobs": 0}


def _encode(ds: Dataset) -> bytes:
    """Dataset bytes in Explicit VR Little Endian (no file meta), whatever the values are."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _send_raw(
    node: Node,
    tmp_path: Path,
    body: bytes,
    *,
    sop_class: str = DX_PRESENTATION,
    sop_instance: str = "1.2.826.0.1.3680043.8.498.100",
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> tuple[int | None, Dataset | None]:
    """Send ``body`` as the dataset of one C-STORE; return (status, full response)."""
    path = raw_file(tmp_path / "raw.dcm", body, sop_class, sop_instance, transfer_syntax)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(sop_class, [transfer_syntax])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert assoc.is_established
        rsp = assoc.send_c_store(path)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
    return status, rsp


def _assert_nothing_left(node: Node) -> None:
    assert rows(node) == EMPTY
    assert spool_files(node) == []
    assert node.jobs == []
    # The node is still answering.
    assert echoscu(node).returncode == 0


def _last_failure(node: Node, status: int) -> None:
    events = [e for e in audit_rows(node, "DICOM Instances Transferred") if e.outcome != 0]
    assert events, "no audit event for the refused C-STORE"
    event = events[-1]
    assert event.detail["status"] == f"0x{status:04X}"
    assert event.user == "AETITLE=MODALITY"
    assert event.source == "127.0.0.1"
    assert event.outcome == (4 if (status & 0xFF00) == 0xA700 else 8)


# --------------------------------------------------------------------------- unparseable


def test_truncated_dataset_is_cannot_understand(tmp_path: Path) -> None:
    ds = make_image()
    body = _encode(ds)
    with run_node(tmp_path) as node:
        status, rsp = _send_raw(node, tmp_path, body[: len(body) // 2], sop_instance=ds.SOPInstanceUID)
        assert status == 0xC000
        assert "truncated" in str(rsp.ErrorComment)
        _last_failure(node, 0xC000)
        _assert_nothing_left(node)


@pytest.mark.parametrize(
    "body",
    [
        b"this is not DICOM at all\n" * 200,
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        b"%PDF-1.4\n" + b"\x00\xff" * 500,
        b"",
    ],
    ids=["text", "png", "pdf", "empty"],
)
def test_non_dicom_bytes_are_cannot_understand(tmp_path: Path, body: bytes) -> None:
    with run_node(tmp_path) as node:
        status, _ = _send_raw(node, tmp_path, body)
        assert status == 0xC000
        _last_failure(node, 0xC000)
        _assert_nothing_left(node)


def test_corrupt_deflate_stream(tmp_path: Path) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(_encode(make_image())) + compressor.flush()
    with run_node(tmp_path) as node:
        status, _ = _send_raw(
            node, tmp_path, deflated[: len(deflated) // 2], transfer_syntax=DeflatedExplicitVRLittleEndian
        )
        assert status == 0xC000
        _assert_nothing_left(node)


def test_deflate_bomb_is_refused_before_inflating_it(tmp_path: Path) -> None:
    ds = make_image()
    ds.add_new(0x00091010, "LO", "BOMB")  # private creator
    ds.add_new(0x00091011, "OB", b"\x00" * (3 * 1024 * 1024))  # 3 MiB of zeros: deflates to a few KiB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(_encode(ds)) + compressor.flush()
    assert len(deflated) < 64 * 1024
    with run_node(tmp_path, dicom={"max_dataset_mb": 1}) as node:
        status, _ = _send_raw(
            node,
            tmp_path,
            deflated,
            sop_instance=ds.SOPInstanceUID,
            transfer_syntax=DeflatedExplicitVRLittleEndian,
        )
        assert status == 0xA710
        _assert_nothing_left(node)


# --------------------------------------------------------------------------- UIDs


@pytest.mark.parametrize("which", ["instance", "class"])
def test_command_and_dataset_uids_differ(tmp_path: Path, which: str) -> None:
    ds = make_image(DX_PRESENTATION)
    kwargs = (
        {"sop_instance": "1.2.826.0.1.3680043.8.498.999"}
        if which == "instance"
        else {"sop_instance": ds.SOPInstanceUID, "sop_class": CR}
    )
    with run_node(tmp_path) as node:
        status, rsp = _send_raw(node, tmp_path, _encode(ds), **kwargs)
        assert status == 0xA900
        assert rsp.OffendingElement == (0x00080018 if which == "instance" else 0x00080016)
        _last_failure(node, 0xA900)
        _assert_nothing_left(node)


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("SOPInstanceUID", 0x00080018),
        ("SOPClassUID", 0x00080016),
        ("StudyInstanceUID", 0x0020000D),
        ("SeriesInstanceUID", 0x0020000E),
    ],
)
def test_missing_uid(tmp_path: Path, keyword: str, tag: int) -> None:
    ds = make_image()
    uid = ds.SOPInstanceUID
    delattr(ds, keyword)
    with run_node(tmp_path) as node:
        status, rsp = _send_raw(node, tmp_path, _encode(ds), sop_instance=uid)
        assert status == 0xC410
        assert rsp.OffendingElement == tag
        assert keyword in str(rsp.ErrorComment)
        _last_failure(node, 0xC410)
        _assert_nothing_left(node)


def test_empty_uid_is_missing(tmp_path: Path) -> None:
    ds = make_image()
    ds.StudyInstanceUID = ""
    with run_node(tmp_path) as node:
        status, _ = _send_raw(node, tmp_path, _encode(ds), sop_instance=ds.SOPInstanceUID)
        assert status == 0xC410
        _assert_nothing_left(node)


HOSTILE = {
    "traversal": b"../../../../etc/passwd",
    "dotdot": b"..",
    "absolute": b"/tmp/cdss-pwned",
    "too-long": b"1." + b"2" * 70,
    "non-ascii": "1.2.840.\u00e9\u00e9".encode(),
    "non-digit": b"1.2.abc.4",
    "leading-zero": b"1.02.3",
    "nul-inside": b"1.2\x003.4",
    "empty-component": b"1..2",
}


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_uids_are_invalid_uid_and_never_touch_the_filesystem(
    tmp_path: Path, keyword: str, value: bytes
) -> None:
    ds = make_image()
    command_uid = ds.SOPInstanceUID
    # A unique, valid stand-in of at least the same length, replaced byte-for-byte after encoding
    # (trailing NULs pad the value; they are UI padding).
    length = max(len(value), 24)
    placeholder = "1." + "8" * (length + length % 2 - 2)
    setattr(ds, keyword, placeholder)
    encoded = _encode(ds)
    assert encoded.count(placeholder.encode()) == 1
    body = encoded.replace(placeholder.encode(), value + b"\x00" * (len(placeholder) - len(value)))
    if keyword == "SOPInstanceUID":
        # The command carries the same value where a command can (<= 64 ASCII characters).
        representable = len(value) <= 64 and value.isascii() and b"\x00" not in value and value
        command_uid = value.decode() if representable else "1.2.826.0.1.3680043.8.498.5"
    with run_node(tmp_path) as node:
        status, rsp = _send_raw(node, tmp_path, body, sop_instance=command_uid)
        assert status == 0xC411
        assert keyword in str(rsp.ErrorComment)
        _last_failure(node, 0xC411)
        _assert_nothing_left(node)
    # Nothing anywhere was created from the value.
    assert not Path("/tmp/cdss-pwned").exists()
    leaked = [p for p in tmp_path.rglob("*") if "passwd" in p.name or "pwned" in p.name]
    assert leaked == []


# --------------------------------------------------------------------------- pixel description


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Rows": 0}, 0xA910),
        ({"Columns": 0}, 0xA910),
        ({"BitsAllocated": 12}, 0xA910),
        ({"BitsAllocated": 64}, 0xA910),
        ({"BitsStored": 17}, 0xA910),
        ({"HighBit": 15}, 0xA910),
        ({"SamplesPerPixel": 2}, 0xA910),
        ({"PixelRepresentation": 2}, 0xA910),
        ({"NumberOfFrames": 0}, 0xA910),
        ({"Rows": 1000}, 0xA910),  # Pixel Data shorter than Rows x Columns x 2 bytes
        ({"PixelData": None}, 0xA910),
        ({"Rows": 60000, "Columns": 60000}, 0xA710),  # 3.6 gigapixels: over dicom.max_image_pixels
        ({"NumberOfFrames": 100000}, 0xA710),
    ],
    ids=[
        "rows-0",
        "columns-0",
        "bits-allocated-12",
        "bits-allocated-64",
        "bits-stored-gt-allocated",
        "high-bit",
        "samples-2",
        "pixel-representation-2",
        "frames-0",
        "pixel-data-short",
        "pixel-data-missing",
        "huge-rows-columns",
        "huge-frames",
    ],
)
def test_absurd_or_inconsistent_image_pixel_module(
    tmp_path: Path, change: dict[str, object], status: int
) -> None:
    ds = make_image()
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    with run_node(tmp_path) as node:
        got, rsp = _send_raw(node, tmp_path, _encode(ds), sop_instance=ds.SOPInstanceUID)
        assert got == status, rsp
        _last_failure(node, status)
        _assert_nothing_left(node)


def test_storescu_sees_the_error_comment(tmp_path: Path) -> None:
    ds = make_image()
    ds.Rows = 0
    sent = write(ds, tmp_path / "rows0.dcm")
    with run_node(tmp_path) as node:
        result = storescu(node, sent)
        assert result.statuses == [0xA910]
        assert "Rows missing or zero" in result.output
        _assert_nothing_left(node)


# --------------------------------------------------------------------------- codecs


def test_transfer_syntax_without_decoder_is_refused_at_negotiation(tmp_path: Path) -> None:
    jpeg_xl = "1.2.840.10008.1.2.4.110"
    assert decoder_status(jpeg_xl)[0] is False, "a JPEG XL decoder appeared: pick another undecodable syntax"
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX_PRESENTATION, [jpeg_xl])
    ae.add_requested_context(DX_PRESENTATION, [ExplicitVRLittleEndian])
    with run_node(tmp_path) as node:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert assoc.is_established
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        rejected = [cx for cx in assoc.rejected_contexts]
        assoc.release()
        assert accepted == {ExplicitVRLittleEndian}
        assert len(rejected) == 1
        assert rejected[0].result == 0x04  # transfer syntaxes not supported
        assert rejected[0].transfer_syntax == [UID(jpeg_xl)]


def test_every_candidate_is_accepted_exactly_when_pydicom_can_decode_it(tmp_path: Path) -> None:
    ae = AE(ae_title="MODALITY")
    for ts in COMPRESSED_CANDIDATES:
        ae.add_requested_context(DX_PRESENTATION, [ts])
    with run_node(tmp_path) as node:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        accepted = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assoc.release()
        for ts in COMPRESSED_CANDIDATES:
            assert (ts in accepted) == decoder_status(ts)[0], ts
        assert set(node.receiver.syntaxes.refused) == set(COMPRESSED_CANDIDATES) - accepted


def test_unsupported_sop_class_is_refused_at_negotiation(tmp_path: Path) -> None:
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert ct not in STORAGE_SOP_CLASSES
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ct, [ExplicitVRLittleEndian])
    with run_node(tmp_path) as node:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert assoc.accepted_contexts == []
        assert assoc.rejected_contexts[0].result == 0x03  # abstract syntax not supported
        assoc.release()


# --------------------------------------------------------------------------- dropped peers


def _big_image(tmp_path: Path) -> Path:
    return write(make_image(rows=1024, columns=1024, bits=16), tmp_path / "big.dcm")  # 2 MiB


@pytest.mark.parametrize("how", ["tcp-drop", "a-abort"])
def test_peer_dropping_mid_transfer_leaves_nothing(tmp_path: Path, how: str) -> None:
    sent = _big_image(tmp_path)
    dropped = threading.Event()
    count = {"n": 0}

    def on_pdu_sent(event: evt.Event) -> None:
        # Runs in the sender's DUL thread, before the next P-DATA PDU goes out.
        if type(event.pdu).__name__ != "P_DATA_TF":
            return
        count["n"] += 1
        if count["n"] == 20:  # ~320 KiB into the 2 MiB dataset (16 KiB PDUs)
            raw = event.assoc.dul.socket.socket
            if how == "a-abort":
                raw.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))  # A-ABORT-RQ, service-user
            raw.shutdown(socket.SHUT_RDWR)
            dropped.set()

    ae = AE(ae_title="MODALITY")
    ae.maximum_pdu_size = 16384
    ae.add_requested_context(DX_PRESENTATION, [ExplicitVRLittleEndian])
    with run_node(tmp_path, dicom={"max_pdu_size": 16384}) as node:
        assoc = ae.associate(
            "127.0.0.1", node.port, ae_title="CDSS", evt_handlers=[(evt.EVT_PDU_SENT, on_pdu_sent)]
        )
        assert assoc.is_established
        previous = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            try:
                rsp = assoc.send_c_store(sent)
            except Exception:  # the transport went away under the sender
                rsp = None
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = previous
        assert dropped.is_set()
        assert rsp is None or "Status" not in rsp
        _assert_nothing_left(node)
        # ... and the same image goes through on a new association.
        assert storescu(node, sent).statuses == [0]
        assert rows(node)["instances"] == 1


def test_announced_pdu_beyond_the_limit_closes_the_connection(tmp_path: Path) -> None:
    with run_node(tmp_path, dicom={"max_pdu_size": 16384}) as node:
        with socket.create_connection(("127.0.0.1", node.port), timeout=20) as sock:
            # An A-ASSOCIATE-RQ PDU header announcing 512 MiB (pynetdicom alone would wait for it).
            sock.sendall(struct.pack(">BBL", 0x01, 0x00, 512 * 1024 * 1024) + b"\x00" * 64)
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b""  # closed by the node, not left waiting
        assert echoscu(node).returncode == 0


def test_dataset_above_max_dataset_mb_aborts_before_buffering(tmp_path: Path) -> None:
    sent = write(make_image(rows=1200, columns=1000, bits=16), tmp_path / "big.dcm")  # 2.3 MiB
    with run_node(tmp_path, dicom={"max_dataset_mb": 1}) as node:
        statuses = pynetdicom_store(node, sent)
        assert statuses == [None]
        _assert_nothing_left(node)


# --------------------------------------------------------------------------- resources


def test_disk_below_watermark_is_out_of_resources(tmp_path: Path, db_url: str) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    sent = write(make_image(), tmp_path / "dx.dcm")
    with run_node(tmp_path, db_url, storage={"min_free_mb": free_mb + 1024 * 1024}) as node:
        result = storescu(node, sent)
        assert result.statuses == [0xA700], result.output
        assert "watermark" in result.output
        _last_failure(node, 0xA700)
        _assert_nothing_left(node)


def test_spool_write_failure_is_out_of_resources(tmp_path: Path) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    with run_node(tmp_path) as node:
        instances = node.spool.root / "instances"
        instances.rmdir()
        instances.write_bytes(b"a file where the directory should be")
        result = storescu(node, sent)
        assert result.statuses == [0xA700], result.output
        _last_failure(node, 0xA700)
        assert rows(node) == EMPTY
        instances.unlink()
        instances.mkdir()
        assert storescu(node, sent).statuses == [0]  # recovers once the disk is back


def test_queue_full_is_out_of_resources_and_removes_the_file(tmp_path: Path, db_url: str) -> None:
    first = write(make_image(seed=1), tmp_path / "a.dcm")
    second = write(make_image(seed=2), tmp_path / "b.dcm")
    with run_node(tmp_path, db_url, jobs={"max_queue_depth": 1}) as node:
        result = storescu(node, first, second)
        assert result.statuses == [0x0000, 0xA700], result.output
        assert rows(node)["instances"] == 1 and rows(node)["jobs"] == 1
        assert len(spool_files(node)) == 1  # the refused one was written, then removed
        _last_failure(node, 0xA700)


def test_sqlite_database_unavailable_is_out_of_resources(tmp_path: Path) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    db_file = tmp_path / "cdss.db"
    with run_node(tmp_path, f"sqlite:///{db_file}") as node:
        node.db.engine.dispose()
        moved = tmp_path / "moved"
        moved.mkdir()
        for path in tmp_path.glob("cdss.db*"):
            path.rename(moved / path.name)
        db_file.mkdir()  # the database path now cannot be opened
        result = storescu(node, sent)
        assert result.statuses == [0xA700], result.output
        assert "database unavailable" in result.output
        assert spool_files(node) == []
        # Bring the database back: the same image is now stored.
        db_file.rmdir()
        for path in moved.iterdir():
            path.rename(tmp_path / path.name)
        node.db.engine.dispose()
        assert rows(node) == EMPTY
        assert storescu(node, sent).statuses == [0]
        assert rows(node)["instances"] == 1


def test_postgresql_database_dropped_is_out_of_resources(tmp_path: Path, postgres_url: str) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    with run_node(tmp_path, postgres_url) as node:
        assert storescu(node, write(make_image(seed=9), tmp_path / "ok.dcm")).statuses == [0]
        node.db.engine.dispose()
        name = node.db.engine.url.database
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()
        before = len(spool_files(node))
        result = storescu(node, sent)
        assert result.statuses == [0xA700], result.output
        assert len(spool_files(node)) == before  # nothing new kept
        assert echoscu(node).returncode == 0


def test_ack_only_after_commit_rows_match_files(tmp_path: Path) -> None:
    """Every acknowledged instance has a row and a verified file; no file lacks a row."""
    files = [write(make_image(seed=i), tmp_path / f"{i}.dcm") for i in range(4)]
    bad = make_image()
    bad.Rows = 0
    files.append(write(bad, tmp_path / "bad.dcm"))
    with run_node(tmp_path) as node:
        result = storescu(node, *files)
        assert result.statuses == [0, 0, 0, 0, 0xA910]
        keys = {p.relative_to(node.spool.root).as_posix() for p in spool_files(node)}
        with node.db.session() as s:
            stored = {k for (k,) in s.execute(select(Instance.spool_key))}
        assert keys == stored and len(keys) == 4
        assert all(node.spool.verify(k) for k in keys)
        for sent in files[:4]:
            body = dataset_bytes(sent)
            assert any(node.spool.read(k).endswith(body) for k in keys)
        assert not os.listdir(tmp_path / "spool" / "results")
