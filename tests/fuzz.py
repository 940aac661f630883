"""A bounded mutation fuzzer for the node's DICOM port (loopback only; stops by itself).

Two kinds of cases, both seeded and reproducible (``case id`` → the same bytes):

**datasets**: a committed fixture (``fixtures/samples``) or a small generated image gets a fresh
SOP Instance UID of the same length, then 1-3 mutations (bit flips, interesting bytes, truncation,
insertions, deletions, and element-aware ones: length fields, VRs, tags, UID values such as
``../..`` or 65 digits, absurd Rows/Columns/Bits). It is sent *as bytes* with pynetdicom's chunked
sender over an established association (the command's SOP Class/Instance UIDs from the seed,
sometimes deliberately different). Oracle: the C-STORE-RSP arrives and its status is one of the
documented ones (:data:`DOCUMENTED`); an internal error (0xC211) or pynetdicom's handler errors
are findings. Every 0x0000 is remembered with the bytes sent.

**PDUs**: the byte stream of a real association (A-ASSOCIATE-RQ, C-ECHO, C-STORE, A-RELEASE-RQ,
recorded once through a loopback proxy) is replayed on a fresh connection with one PDU mutated
(header type/length, item lengths, bit flips, truncation, random PDUs), then the client
half-closes. Oracle: the node answers and closes the connection within ``pdu_timeout_s``;
a connection still open after that is a hung association.

After the run the caller checks (:func:`check_acknowledged`) that every acknowledged instance is
in the database with a spool file whose bytes end with exactly the dataset that was sent
(first copy of a UID), and that the node still answers C-ECHO and stores a valid image.
"""

from __future__ import annotations

import io
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

from cdss.receive.status import StoreStatus
from tests.dicom_factory import make_image, write
from tests.receive_support import raw_file

__all__ = [
    "DOCUMENTED",
    "FuzzReport",
    "Seed",
    "check_acknowledged",
    "load_seeds",
    "record_association",
    "run_dataset_cases",
    "run_pdu_cases",
]

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"

#: Statuses the node documents for a C-STORE (docs/dicom-conformance.md); 0xC211 is the node's
#: internal error, which a malformed input must never reach.
DOCUMENTED = frozenset(int(s) for s in StoreStatus if s is not StoreStatus.PROCESSING_FAILURE)

_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x2E, 0x5C]
_UID_VALUES = [
    b"../../etc/passwd",
    b"1" * 65,
    b"1.2.3\x00",
    b"1..2",
    b"01.2",
    b"1.2.\xc3\xa9",
    b"",
    b" ",
    b"1.2.840.10008.5.1.4.1.1.7",
]
_RAW_TAGS = {
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280102: "HighBit",
    0x00280002: "SamplesPerPixel",
    0x00280008: "NumberOfFrames",
}
_UID_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)


@dataclass(frozen=True)
class Element:
    tag: int
    vr: bytes
    header_at: int  # offset of the tag in the dataset bytes
    value_at: int
    length: int
    long_header: bool  # explicit VR with a 4-byte length after 2 reserved bytes


@dataclass(frozen=True)
class Seed:
    """One starting dataset: its bytes (no file meta), transfer syntax, SOP class and elements."""

    name: str
    raw: bytes
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    elements: tuple[Element, ...]
    pixel_at: int  # offset of the Pixel Data element (or len(raw))

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax == ImplicitVRLittleEndian

    @property
    def little(self) -> bool:
        return self.transfer_syntax != ExplicitVRBigEndian


def _elements(raw: bytes, transfer_syntax: str) -> tuple[tuple[Element, ...], int]:
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    out = []
    pixel_at = len(raw)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return (), 0  # the bytes are a deflate stream: only byte-level mutations apply
    for elem in data_element_generator(io.BytesIO(raw), implicit, little, defer_size=256):
        vr = (elem.VR or "UN").encode()
        long_header = (not implicit) and vr in _LONG_VRS
        start = elem.value_tell - (12 if long_header else 8)
        out.append(Element(int(elem.tag), vr, start, elem.value_tell, elem.length, long_header))
        if int(elem.tag) == 0x7FE00010:
            pixel_at = start
            break
    return tuple(out), pixel_at


def _seed_from_file(path: Path, name: str | None = None) -> Seed:
    with path.open("rb") as fh:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
        raw = fh.read()
    ts = str(meta.TransferSyntaxUID)
    elements, pixel_at = _elements(raw, ts)
    return Seed(
        name or path.name,
        raw,
        ts,
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
        elements,
        pixel_at,
    )


def load_seeds(workdir: Path, *, fixtures: int = 12) -> list[Seed]:
    """Seeds: the ``fixtures`` smallest committed samples plus small generated images in every
    uncompressed transfer syntax (so mutations are cheap to send)."""
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [
        _seed_from_file(p) for p in sorted(SAMPLES.glob("*.dcm"), key=lambda p: p.stat().st_size)[:fixtures]
    ]
    for i, ts in enumerate([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]):
        path = write(make_image(rows=48, columns=40, bits=16, seed=90 + i), workdir / f"gen-{i}.dcm", ts)
        seeds.append(_seed_from_file(path, f"generated-{ts.name}"))
    return seeds


# ---------------------------------------------------------------------------------------- datasets
def _fresh_uid(rng: random.Random, length: int) -> bytes:
    """A valid UID of exactly ``length`` bytes (a trailing NUL pad counts), unique per case."""
    body = "2.25." + "".join(rng.choice("0123456789") for _ in range(max(1, length - 5)))
    body = body[:length]
    if body.endswith("."):
        body = body[:-1] + "1"
    if body[5:6] == "0":
        body = body[:5] + "1" + body[6:]
    return body.encode().ljust(length, b"\x00")


def _put_length(buf: bytearray, el: Element, value: int, seed: Seed) -> None:
    e = "<" if seed.little else ">"
    if el.long_header:
        struct.pack_into(f"{e}L", buf, el.header_at + 8, value & 0xFFFFFFFF)
    elif seed.implicit:
        struct.pack_into(f"{e}L", buf, el.header_at + 4, value & 0xFFFFFFFF)
    else:
        struct.pack_into(f"{e}H", buf, el.header_at + 6, value & 0xFFFF)


def _mutate(seed: Seed, rng: random.Random, buf: bytearray) -> list[str]:
    """Apply 1-3 mutations to ``buf`` (the seed's bytes); return their names."""
    names = []
    header_end = max(16, seed.pixel_at)
    for _ in range(rng.choice((1, 1, 2, 3))):
        if not buf:
            break
        kind = rng.choice(
            [
                "bitflip",
                "byte",
                "truncate",
                "insert",
                "delete",
                "length",
                "vr",
                "tag",
                "uid",
                "pixelattr",
                "dup",
            ]
            if seed.elements
            else ["bitflip", "byte", "truncate", "insert", "delete"]
        )
        at = rng.randrange(0, min(len(buf), header_end) if rng.random() < 0.85 else len(buf))
        el = rng.choice(seed.elements) if seed.elements else None
        if kind == "bitflip":
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(0, min(len(buf), header_end))
                buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            buf[at] = rng.choice(_INTERESTING)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 7, 64))))
        elif kind == "delete":
            del buf[at : at + rng.choice((1, 2, 4, 8, 100))]
        elif kind == "length" and el is not None and el.value_at <= len(buf):
            value = rng.choice([0, 1, 3, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, el.length + 1, el.length * 2 + 7])
            _put_length(buf, el, value, seed)
        elif kind == "vr" and el is not None and not seed.implicit and el.header_at + 6 <= len(buf):
            buf[el.header_at + 4 : el.header_at + 6] = rng.choice(
                [b"OB", b"SQ", b"UN", b"US", b"XX", b"\x00\x00", b"ui", b"UT"]
            )
        elif kind == "tag" and el is not None and el.header_at + 4 <= len(buf):
            e = "<" if seed.little else ">"
            group = rng.choice([0x0000, 0x0002, 0x7FE0, 0xFFFE, 0x0008, 0x0009, 0xFFFF])
            struct.pack_into(f"{e}H", buf, el.header_at, group)
        elif kind == "uid":
            uid_el = next((x for x in seed.elements if x.tag == rng.choice(_UID_TAGS)), None)
            if uid_el is not None and uid_el.value_at + uid_el.length <= len(buf):
                value = rng.choice(_UID_VALUES)
                if len(value) % 2:
                    value += b"\x00"
                buf[uid_el.value_at : uid_el.value_at + uid_el.length] = value
                _put_length(buf, uid_el, len(value), seed)
        elif kind == "pixelattr":
            px = [x for x in seed.elements if x.tag in _RAW_TAGS and x.length in (2, 4)]
            if px:
                target = rng.choice(px)
                if target.value_at + target.length <= len(buf):
                    e = "<" if seed.little else ">"
                    value = rng.choice([0, 1, 7, 12, 17, 33, 0x7FFF, 0xFFFF])
                    if target.length == 2:
                        struct.pack_into(f"{e}H", buf, target.value_at, value)
                    else:
                        buf[target.value_at : target.value_at + 4] = str(value).encode().ljust(4)[:4]
        elif kind == "dup" and el is not None and el.value_at + el.length <= len(buf) and el.length < 4096:
            chunk = bytes(buf[el.header_at : el.value_at + el.length])
            pos = rng.choice([x.header_at for x in seed.elements if x.header_at <= len(buf)])
            buf[pos:pos] = chunk
        else:
            continue
        names.append(kind)
    return names


@dataclass
class DatasetCase:
    case: int
    seed: str
    mutations: list[str]
    sop_class_uid: str
    sop_instance_uid: str
    raw: bytes
    transfer_syntax: str


@dataclass
class FuzzReport:
    """What a run did and found (findings are reproducible by case id)."""

    dataset_cases: int = 0
    pdu_cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    pdu_outcomes: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> bytes sent first
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def finding(self, text: str) -> None:
        with self.lock:
            if len(self.findings) < 200:
                self.findings.append(text)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset_cases": self.dataset_cases,
            "pdu_cases": self.pdu_cases,
            "statuses": dict(sorted(self.statuses.items())),
            "pdu_outcomes": dict(sorted(self.pdu_outcomes.items())),
            "acknowledged": len(self.acknowledged),
            "findings": len(self.findings),
            "seconds": round(self.seconds, 1),
        }


def make_dataset_case(seeds: list[Seed], case: int, master_seed: int) -> DatasetCase:
    rng = random.Random(master_seed * 1_000_003 + case)
    seed = rng.choice(seeds)
    buf = bytearray(seed.raw)
    sop_uid = seed.sop_instance_uid
    uid_el = next((x for x in seed.elements if x.tag == 0x00080018), None)
    if uid_el is not None:  # a fresh instance, so that acknowledged ones are new to the node
        fresh = _fresh_uid(rng, uid_el.length)
        buf[uid_el.value_at : uid_el.value_at + uid_el.length] = fresh
        sop_uid = fresh.rstrip(b"\x00").decode()
    mutations = _mutate(seed, rng, buf)
    command_uid = sop_uid
    if rng.random() < 0.03:
        command_uid = "2.25." + str(rng.getrandbits(100))
        mutations.append("command_uid")
    return DatasetCase(
        case, seed.name, mutations, seed.sop_class_uid, command_uid, bytes(buf), seed.transfer_syntax
    )


def _store_worker(
    port: int,
    cases: Iterator[DatasetCase],
    report: FuzzReport,
    workdir: Path,
    deadline: float,
    dimse_timeout_s: float,
) -> None:
    """One association after another; sends cases until ``cases`` or time run out."""
    path = workdir / f"case-{threading.get_ident()}.dcm"
    ae = AE(ae_title="FUZZER")
    ae.dimse_timeout = dimse_timeout_s
    ae.acse_timeout = dimse_timeout_s
    ae.network_timeout = dimse_timeout_s
    pending: DatasetCase | None = None
    while time.monotonic() < deadline:
        if pending is None:
            try:
                pending = next(cases)
            except StopIteration:
                return
        seed_contexts = {(pending.sop_class_uid, _ts(pending))}
        ae.requested_contexts = []
        for sop_class, ts in seed_contexts:
            ae.add_requested_context(sop_class, ts)
        assoc = ae.associate("127.0.0.1", port, ae_title="CDSS")
        if not assoc.is_established:
            report.finding(f"case {pending.case}: association not established")
            pending = None
            continue
        try:
            while pending is not None and time.monotonic() < deadline:
                if (pending.sop_class_uid, _ts(pending)) not in seed_contexts:
                    break  # needs another presentation context: new association
                raw_file(path, pending.raw, pending.sop_class_uid, pending.sop_instance_uid, _ts(pending))
                # What goes on the wire: pynetdicom's chunked sender counts leading group 0002
                # elements (a mutation can make one) as file meta and does not send them.
                _, offset = split_dataset(path)
                sent = path.read_bytes()[offset:]
                rsp = assoc.send_c_store(path)
                status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
                with report.lock:
                    report.dataset_cases += 1
                    report.statuses["none" if status is None else f"0x{status:04X}"] += 1
                    if status == 0 and pending.sop_instance_uid not in report.acknowledged:
                        report.acknowledged[pending.sop_instance_uid] = sent
                if status is None or status not in DOCUMENTED:
                    why = "no response (aborted or timed out)" if status is None else f"status 0x{status:04X}"
                    report.finding(
                        f"case {pending.case} ({pending.seed}: {','.join(pending.mutations)}): {why}"
                    )
                if not assoc.is_established:
                    pending = None
                    break
                try:
                    pending = next(cases)
                except StopIteration:
                    pending = None
        finally:
            if assoc.is_established:
                assoc.release()


def _ts(case: DatasetCase) -> str:
    return case.transfer_syntax


def run_dataset_cases(
    port: int,
    seeds: list[Seed],
    *,
    count: int,
    time_budget_s: float,
    workdir: Path,
    master_seed: int = 0,
    workers: int = 2,
    report: FuzzReport | None = None,
    dimse_timeout_s: float = 20.0,
) -> FuzzReport:
    """Send up to ``count`` mutated datasets (stops at ``time_budget_s``)."""
    report = report or FuzzReport()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    counter = iter(range(count))

    def cases() -> Iterator[DatasetCase]:
        while True:
            with lock:
                case = next(counter, None)
            if case is None:
                return
            yield make_dataset_case(seeds, case, master_seed)

    started = time.monotonic()
    deadline = started + time_budget_s
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(_store_worker, port, cases(), report, workdir, deadline, dimse_timeout_s)
                for _ in range(workers)
            ]
            for f in futures:
                f.result()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    report.seconds += time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------- PDUs
def _split_pdus(stream: bytes) -> list[bytes]:
    pdus, pos = [], 0
    while pos + 6 <= len(stream):
        (length,) = struct.unpack_from(">L", stream, pos + 2)
        pdus.append(stream[pos : pos + 6 + length])
        pos += 6 + length
    return pdus


def record_association(port: int, workdir: Path) -> list[bytes]:
    """The client→node PDUs of a real association (associate, C-ECHO, C-STORE of a small image,
    release), recorded through a loopback proxy in front of the node at ``port``."""
    listener = socket.create_server(("127.0.0.1", 0))
    proxy_port = listener.getsockname()[1]
    recorded = bytearray()

    def pump(src: socket.socket, dst: socket.socket, keep: bool) -> None:
        while chunk := src.recv(65536):
            if keep:
                recorded.extend(chunk)
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", port))
        t = threading.Thread(target=pump, args=(upstream, client, False), daemon=True)
        t.start()
        pump(client, upstream, True)
        t.join(timeout=10)
        client.close()
        upstream.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    ds = make_image(rows=16, columns=16, bits=16, seed=7)
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", proxy_port, ae_title="CDSS")
    assert assoc.is_established, "could not associate through the recording proxy"
    assoc.send_c_echo()
    assoc.send_c_store(ds)
    assoc.release()
    server.join(timeout=20)
    listener.close()
    pdus = _split_pdus(bytes(recorded))
    assert [p[0] for p in pdus][:1] == [0x01] and pdus[-1][0] == 0x05, [p[0] for p in pdus]
    return pdus


def _mutate_pdu(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(pdu)
    kind = rng.choice(["type", "length", "bitflip", "truncate", "item_length", "extend", "random", "zero"])
    if kind == "type":
        buf[0] = rng.choice([0x00, 0x02, 0x03, 0x04, 0x06, 0x07, 0x08, 0xFF, 0x10])
    elif kind == "length":
        struct.pack_into(
            ">L", buf, 2, rng.choice([0, 1, 4, len(buf) - 7, len(buf) + 10, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20])
        )
    elif kind == "bitflip":
        for _ in range(rng.randint(1, 16)):
            pos = rng.randrange(0, len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[rng.randrange(1, len(buf)) :]
    elif kind == "item_length" and len(buf) > 12:
        pos = rng.randrange(6, len(buf) - 4)
        struct.pack_into(">H", buf, pos, rng.choice([0, 1, 0xFFFF, 0x8000, len(buf)]))
    elif kind == "extend":
        buf += bytes(rng.randrange(256) for _ in range(rng.choice((1, 16, 300))))
        struct.pack_into(">L", buf, 2, len(buf) - 6)
    elif kind == "random":
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        buf = bytearray(
            bytes([rng.choice([1, 2, 3, 4, 5, 6, 7])]) + b"\x00" + struct.pack(">L", len(body)) + body
        )
    else:
        pos = rng.randrange(6, len(buf)) if len(buf) > 6 else 0
        buf[pos:] = b"\x00" * (len(buf) - pos)
    return bytes(buf), kind


def _pdu_case(
    port: int, pdus: list[bytes], case: int, master_seed: int, timeout_s: float, report: FuzzReport
) -> None:
    rng = random.Random(master_seed * 7_000_003 + case)
    target = rng.randrange(len(pdus))
    mutated, kind = _mutate_pdu(pdus[target], rng)
    stream = b"".join(pdus[:target]) + mutated + (b"".join(pdus[target + 1 :]) if rng.random() < 0.3 else b"")
    outcome = "closed"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            try:
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                outcome = "reset_while_sending"
            sock.settimeout(timeout_s)
            end = time.monotonic() + timeout_s
            got = bytearray()
            while True:
                if time.monotonic() > end:
                    outcome = "hung"
                    break
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    outcome = "hung"
                    break
                except OSError:
                    outcome = "reset"
                    break
                if not chunk:
                    break
                got.extend(chunk)
            if outcome == "closed" and got:
                outcome = {
                    0x02: "associate_ac",
                    0x03: "associate_rj",
                    0x04: "p_data",
                    0x06: "release_rp",
                    0x07: "abort",
                }.get(_split_pdus(bytes(got))[-1][0] if _split_pdus(bytes(got)) else 0, "bytes")
    except OSError as exc:
        outcome = f"connect_failed:{type(exc).__name__}"
    with report.lock:
        report.pdu_cases += 1
        report.pdu_outcomes[outcome] += 1
    if outcome == "hung" or outcome.startswith("connect_failed"):
        report.finding(f"pdu case {case} (pdu {target} type 0x{pdus[target][0]:02X}, {kind}): {outcome}")


def run_pdu_cases(
    port: int,
    pdus: list[bytes],
    *,
    count: int,
    time_budget_s: float,
    master_seed: int = 0,
    parallel: int = 8,
    timeout_s: float = 30.0,
    report: FuzzReport | None = None,
    health: Callable[[], bool] | None = None,
) -> FuzzReport:
    """Replay the recorded association ``count`` times with one PDU mutated (stops at the budget).

    ``health`` (e.g. a C-ECHO) is called every 500 cases; a failing check is a finding.
    """
    report = report or FuzzReport()
    started = time.monotonic()
    deadline = started + time_budget_s
    with ThreadPoolExecutor(parallel) as pool:
        batch = 500
        for first in range(0, count, batch):
            if time.monotonic() > deadline:
                break
            cases = range(first, min(count, first + batch))
            list(pool.map(lambda c: _pdu_case(port, pdus, c, master_seed, timeout_s, report), cases))
            if health is not None and not health():
                report.finding(f"node failed its health check after pdu case {cases[-1]}")
    report.seconds += time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------- checks
def echo_ok(port: int) -> bool:
    ae = AE(ae_title="FUZZCHECK")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="CDSS")
    if not assoc.is_established:
        return False
    rsp = assoc.send_c_echo()
    assoc.release()
    return rsp is not None and int(rsp.Status) == 0


def check_acknowledged(
    report: FuzzReport, rows: dict[str, tuple[str, str]], read: Callable[[str], bytes]
) -> list[str]:
    """Every acknowledged SOP Instance UID has a row, and its spool file ends with the bytes sent.

    ``rows`` maps SOP Instance UID → (spool key, sha256) from the node's database; ``read`` reads
    a spool key. Returns the problems (empty when nothing acknowledged was lost).
    """
    import hashlib

    problems = []
    for uid, raw in report.acknowledged.items():
        row = rows.get(uid)
        if row is None:
            problems.append(f"{uid}: acknowledged but not in the database")
            continue
        key, sha = row
        try:
            data = read(key)
        except OSError as exc:
            problems.append(f"{uid}: spool file {key} unreadable ({exc})")
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{uid}: spool file {key} does not match its sha256")
        elif not data.endswith(raw):
            problems.append(f"{uid}: stored bytes differ from the bytes acknowledged")
    return problems


def reproduce(seeds: list[Seed], case: int, master_seed: int = 0) -> Any:
    """The dataset of case ``case`` as pydicom reads it (for a finding's bug report)."""
    c = make_dataset_case(seeds, case, master_seed)
    return dcmread(io.BytesIO(c.raw), force=True)
