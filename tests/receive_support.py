"""Helpers for the receive tests: an in-process node on a free port, DCMTK peers, DB/spool probes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from sqlalchemy import func, select

from cdss.config import Settings
from cdss.db import AuditEvent, Database, Instance, Job, Series, Study
from cdss.receive import Receiver
from cdss.store import TEMP_PREFIX, Spool
from tests.peers import free_port, require_binary

__all__ = [
    "Node",
    "ScuResult",
    "audit_rows",
    "count",
    "dcmtk_binary",
    "echoscu",
    "pynetdicom_store",
    "raw_file",
    "run_node",
    "spool_files",
    "storescu",
]


def dcmtk_binary(name: str) -> str:
    """Path of the DCMTK tool ``name`` (the virtualenv's pynetdicom apps of the same name are skipped)."""
    venv_bin = Path(sys.prefix) / "bin"
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(directory) / name
        if (
            directory
            and candidate.is_file()
            and os.access(candidate, os.X_OK)
            and candidate.parent != venv_bin
        ):
            with candidate.open("rb") as fh:
                if fh.read(2) == b"#!":  # a Python console script, not DCMTK
                    continue
            return str(candidate)
    return require_binary(f"dcmtk-{name}", "dcmtk")


_STATUS_RE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass
class Node:
    """A running receiver with its database and spool."""

    receiver: Receiver
    settings: Settings
    db: Database
    spool: Spool
    jobs: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.receiver.port


@contextmanager
def run_node(tmp_path: Path, db_url: str | None = None, **sections: dict[str, Any]) -> Iterator[Node]:
    """Start a :class:`Receiver` on a free loopback port with a temporary spool and database.

    ``sections`` override settings per section, e.g. ``dicom={"allowed_calling_aets": ["X"]}``.
    """
    data: dict[str, Any] = {
        "dicom": {"port": free_port(), "bind": "127.0.0.1", "ae_title": "CDSS"},
        "storage": {"path": str(tmp_path / "spool"), "min_free_mb": 1, "fsync": True},
        "database": {"url": db_url or f"sqlite:///{tmp_path / 'cdss.db'}"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    settings = Settings.model_validate(data)
    db = Database(settings.database.url)
    spool = Spool(settings.storage)
    jobs: list[int] = []
    receiver = Receiver(settings, db, spool, jobs.append)
    receiver.start()
    node = Node(receiver, settings, db, spool, jobs)
    try:
        yield node
    finally:
        receiver.stop()
        db.dispose()


@dataclass
class ScuResult:
    returncode: int
    output: str
    statuses: list[int]


def storescu(
    node: Node,
    *files: Path,
    aet: str = "MODALITY",
    aec: str = "CDSS",
    options: tuple[str, ...] = (),
    port: int | None = None,
) -> ScuResult:
    """Send ``files`` with DCMTK ``storescu`` over one association; parse each C-STORE-RSP status."""
    exe = dcmtk_binary("storescu")
    proc = subprocess.run(
        [exe, "-d", "-nh", "-aet", aet, "-aec", aec, *options, "127.0.0.1", str(port or node.port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    statuses = [int(m.group(1), 16) for m in _STATUS_RE.finditer(output)]
    return ScuResult(proc.returncode, output, statuses)


def echoscu(
    node: Node, *, aet: str = "MODALITY", aec: str = "CDSS", options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with DCMTK ``echoscu``."""
    exe = dcmtk_binary("echoscu")
    return subprocess.run(
        [exe, "-v", "-aet", aet, "-aec", aec, *options, "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def pynetdicom_store(
    node: Node,
    *files: Path,
    transfer_syntax: str | None = None,
    aet: str = "MODALITY",
    aec: str = "CDSS",
) -> list[int | None]:
    """Send files' dataset bytes unchanged with pynetdicom (chunked mode), one context per syntax.

    Returns the C-STORE-RSP status of each file (``None`` when no response came back).
    """
    from pydicom import dcmread
    from pynetdicom import AE, _config

    metas = [dcmread(f, stop_before_pixels=True, force=True).file_meta for f in files]
    ae = AE(ae_title=aet)
    for meta in metas:
        ts = transfer_syntax or meta.TransferSyntaxUID
        if (meta.MediaStorageSOPClassUID, ts) not in [
            (c.abstract_syntax, c.transfer_syntax[0]) for c in ae.requested_contexts
        ]:
            ae.add_requested_context(meta.MediaStorageSOPClassUID, [ts])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.port, ae_title=aec)
        assert assoc.is_established, "association not established"
        statuses: list[int | None] = []
        for f in files:
            rsp = assoc.send_c_store(f)
            statuses.append(int(rsp.Status) if rsp and "Status" in rsp else None)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


def count(node: Node, model: type) -> int:
    """Rows of ``model``, read without taking SQLite's writer lock (safe to poll during a push)."""
    with node.db.read_session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def audit_rows(node: Node, event_name: str | None = None) -> list[AuditEvent]:
    with node.db.session() as s:
        query = select(AuditEvent).order_by(AuditEvent.seq)
        if event_name:
            query = query.where(AuditEvent.event_name == event_name)
        return list(s.execute(query).scalars())


def spool_files(node: Node) -> list[Path]:
    """Every file under the spool's instances area (stored and temporary)."""
    return sorted(p for p in (node.spool.root / "instances").rglob("*") if p.is_file())


def temp_files(node: Node) -> list[Path]:
    return [p for p in spool_files(node) if p.name.startswith(TEMP_PREFIX)]


def raw_file(
    path: Path, dataset_bytes: bytes, sop_class: str, sop_instance: str, transfer_syntax: str
) -> Path:
    """A Part 10 file whose meta names ``sop_class``/``sop_instance`` and whose body is arbitrary bytes.

    pynetdicom's chunked sender (``STORE_SEND_CHUNKED_DATASET``) sends the body as is, with the
    command's Affected SOP Class/Instance UIDs taken from the meta - how the tests put bytes on
    the wire that no encoder would produce (truncated, non-DICOM, mismatching UIDs).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.3.4"
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)  # type: ignore[arg-type]
        fh.write(dataset_bytes)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta of a Part 10 file."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with path.open("rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        return fh.read()


def rows(node: Node) -> dict[str, int]:
    """Row counts of the receive tables."""
    return {
        "studies": count(node, Study),
        "series": count(node, Series),
        "instances": count(node, Instance),
        "jobs": count(node, Job),
    }
