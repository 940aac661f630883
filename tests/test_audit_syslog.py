"""DICOM audit messages and their RFC 5424 syslog forwarding, against receivers started here.

* every kind of event the node records validates against the PS3.15 A.5.1 schema;
* TCP (octet counting), UDP and mutual-TLS receivers get RFC 5424 messages that a strict parser
  accepts, carrying the chain seq/hash;
* a receiver outage loses nothing: messages wait in the disk spool (surviving a forwarder
  restart) and arrive in order, exactly once, after recovery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select

import cdss.audit as audit_pkg
from cdss.api import create_app
from cdss.audit import Action, EventID, EventType, Outcome, record_event
from cdss.audit.message import AuditSource, audit_message_xml
from cdss.audit.syslog import AuditForwarder, format_syslog_message
from cdss.config import AuditSettings, Settings
from cdss.db import Database
from cdss.db.models import AuditEvent
from tests.peers import free_port, require_binary

SCHEMA = Path(audit_pkg.__file__).with_name("schema") / "audit-message.rng"
SOURCE = AuditSource("CDSS@testhost", "CDSS", "testhost")

# ------------------------------------------------------------------ a strict RFC 5424 parser
_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    rb"(?P<ts>-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    rb"(?P<host>[\x21-\x7e]{1,255}) (?P<app>[\x21-\x7e]{1,48}) (?P<procid>[\x21-\x7e]{1,128}) "
    rb"(?P<msgid>[\x21-\x7e]{1,32}) "
)
_SD_NAME = rb"[\x21-\x7e]{1,32}"
BOM = b"\xef\xbb\xbf"


def _sd_name_ok(name: bytes) -> bool:
    return re.fullmatch(_SD_NAME, name) is not None and not any(c in name for c in b'= ]"')


def parse_rfc5424(message: bytes) -> dict[str, Any]:
    """Parse one SYSLOG-MSG per RFC 5424 §6 (raises AssertionError where it deviates)."""
    m = _HEADER.match(message)
    assert m, f"bad RFC 5424 header: {message[:120]!r}"
    assert 0 <= int(m["pri"]) <= 191
    rest = message[m.end() :]
    assert rest.startswith(b"["), "structured data expected"
    elements: dict[bytes, dict[str, str]] = {}
    i = 0
    while i < len(rest) and rest[i : i + 1] == b"[":
        j = i + 1
        k = j
        while rest[k : k + 1] not in (b" ", b"]"):
            k += 1
        sd_id = rest[j:k]
        assert _sd_name_ok(sd_id.split(b"@")[0]), sd_id
        params: dict[str, str] = {}
        while rest[k : k + 1] == b" ":
            eq = rest.index(b"=", k)
            name = rest[k + 1 : eq]
            assert _sd_name_ok(name), name
            assert rest[eq + 1 : eq + 2] == b'"'
            p = eq + 2
            value = bytearray()
            while rest[p : p + 1] != b'"':
                if rest[p : p + 1] == b"\\" and rest[p + 1 : p + 2] in (b'"', b"\\", b"]"):
                    p += 1
                value += rest[p : p + 1]
                p += 1
            params[name.decode()] = value.decode("utf-8")
            k = p + 1
        assert rest[k : k + 1] == b"]"
        elements[sd_id] = params
        i = k + 1
    msg = rest[i:]
    assert msg[:1] == b" ", "SP before MSG"
    body = msg[1:]
    has_bom = body.startswith(BOM)
    xml = body[3:] if has_bom else body
    (sd_id, sd), *_ = elements.items()
    return {
        "pri": int(m["pri"]),
        "version": int(m["version"]),
        "timestamp": m["ts"].decode(),
        "hostname": m["host"].decode(),
        "app": m["app"].decode(),
        "procid": m["procid"].decode(),
        "msgid": m["msgid"].decode(),
        "sd_id": sd_id.decode(),
        "sd": sd,
        "bom": has_bom,
        "xml": xml,
    }


def parse_octet_stream(data: bytes) -> list[bytes]:
    """Split an RFC 6587 octet-counted stream (``LEN SP MSG`` …)."""
    out = []
    i = 0
    while i < len(data):
        sp = data.index(b" ", i)
        n = int(data[i:sp])
        out.append(data[sp + 1 : sp + 1 + n])
        assert len(out[-1]) == n, "truncated frame"
        i = sp + 1 + n
    return out


# ------------------------------------------------------------------ receivers
class TcpReceiver:
    """An asyncio syslog receiver (octet-counting framing, optional TLS) in its own thread."""

    def __init__(self, port: int, ssl_context: ssl.SSLContext | None = None):
        self.port = port
        self.ssl_context = ssl_context
        self.messages: list[bytes] = []
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                length = await reader.readuntil(b" ")
                data = await reader.readexactly(int(length[:-1]))
                with self._lock:
                    self.messages.append(data)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()

            async def main() -> None:
                self._server = await asyncio.start_server(
                    self._handle, "127.0.0.1", self.port, ssl=self.ssl_context
                )
                ready.set()
                await self._server.serve_forever()

            try:
                self._loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "receiver did not start"

    def stop(self) -> None:
        """Close the listener and every connection (the node sees the receiver go away)."""
        loop = self._loop
        assert loop is not None and self._server is not None

        async def shutdown() -> None:
            self._server.close()  # type: ignore[union-attr]
            for w in list(self._writers):
                w.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        assert self._thread is not None
        self._thread.join(10)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.messages)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    yield database
    database.dispose()


def add_events(db: Database, n: int, start: int = 0, *, outcome: Outcome = Outcome.SUCCESS) -> None:
    for i in range(start, start + n):
        with db.session() as s:
            record_event(
                s,
                EventID.INSTANCES_TRANSFERRED,
                action=Action.CREATE,
                outcome=outcome,
                user=f"AETITLE=MOD{i}",
                source="10.1.2.3",
                study_instance_uid=f"1.2.3.{i}",
                patient_id=f"PAT-{i}",
                accession_number=f"A{i}",
                description=f"instance {i} received",
                detail={"sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1", "sop_instance_uid": f"1.2.3.{i}.1"},
            )


def chain(db: Database) -> list[AuditEvent]:
    with db.session() as s:
        return list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())


def check_messages(messages: list[bytes], rows: list[AuditEvent]) -> None:
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    assert len(messages) == len(rows)
    for msg, row in zip(messages, rows, strict=True):
        p = parse_rfc5424(msg)
        assert p["version"] == 1 and p["msgid"] == "DICOM+RFC3881" and p["app"] == "cdss"
        assert p["pri"] == 10 * 8 + (5 if row.outcome == 0 else 4)
        assert p["sd_id"] == "cdssChain@32473"
        assert p["sd"] == {"seq": str(row.seq), "hash": row.hash, "prevHash": row.prev_hash}
        assert p["bom"] is True
        doc = etree.fromstring(p["xml"])
        assert schema.validate(doc), schema.error_log
        assert doc.find("EventIdentification/EventID").get("csd-code") == row.event_id
        ts = dt.datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
        assert ts == row.occurred_at


# ------------------------------------------------------------------ DICOM audit messages
def _every_kind(db: Database) -> None:
    with db.session() as s:
        record_event(
            s,
            EventID.APPLICATION_ACTIVITY,
            action=Action.EXECUTE,
            event_type=EventType.APPLICATION_START,
            user="cdss",
            source="host-1",
            description="node started",
        )
    add_events(db, 1)
    with db.session() as s:
        record_event(
            s,
            EventID.INSTANCES_TRANSFERRED,
            action=Action.READ,
            outcome=Outcome.MINOR_FAILURE,
            user="AETITLE=ORTHANC",
            source="192.0.2.10",
            study_instance_uid="1.2.3",
            patient_id="P",
            accession_number="A1",
            description="C-STORE refused 0xA700",
            detail={
                "sop_instance_uids": ["1.2.3.4", "1.2.3.5"],
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.66.4",
            },
        )
        record_event(
            s,
            EventID.BEGIN_TRANSFERRING,
            action=Action.EXECUTE,
            user="alice",
            source="192.0.2.7",
            study_instance_uid="1.2.3",
            patient_id="P",
            description="retry",
        )
        record_event(
            s,
            EventID.INSTANCES_ACCESSED,
            action=Action.CREATE,
            user="cdss",
            study_instance_uid="1.2.3",
            patient_id="P",
            accession_number="A1",
            description="job 1 succeeded",
            detail={"job_id": 1, "sop_instance_uid": "1.2.3.4"},
        )
        record_event(
            s,
            EventID.QUERY,
            action=Action.EXECUTE,
            user="olivia",
            source="::1",
            patient_id="P",
            description="search",
            detail={"path": "/api/v1/studies", "query": "patient_id=P&x=<&>"},
        )
        record_event(
            s,
            EventID.AUDIT_LOG_USED,
            action=Action.READ,
            user="olivia",
            source="192.0.2.7",
            description="audit read",
            detail={"uri": "/api/v1/audit/events"},
        )
        record_event(
            s,
            EventID.SECURITY_ALERT,
            action=Action.EXECUTE,
            outcome=Outcome.MINOR_FAILURE,
            event_type=EventType.USE_OF_RESTRICTED_FUNCTION,
            source="198.51.100.9",
            description="API request without a token \x00\x07 <script>",
            detail={"reason": "missing_token", "path": "/api/v1/studies"},
        )
        record_event(
            s,
            EventID.SECURITY_ALERT,
            action=Action.EXECUTE,
            outcome=Outcome.SERIOUS_FAILURE,
            event_type=EventType.NODE_AUTHENTICATION,
            user="AETITLE=EVIL",
            source="203.0.113.5",
            description="association rejected: calling AE not allowed",
        )
        record_event(
            s,
            EventID.USER_AUTHENTICATION,
            action=Action.EXECUTE,
            event_type=EventType.LOGIN,
            user="alice",
            source="192.0.2.7",
            description="login",
        )
        record_event(
            s,
            EventID.STUDY_DELETED,
            action=Action.DELETE,
            user="cdss",
            study_instance_uid="1.2.3",
            patient_id="P",
            description="purged",
        )
        record_event(
            s, EventID.EXPORT, action=Action.READ, user="cli:root", description="export", event_type=None
        )


def test_every_event_kind_is_a_schema_valid_dicom_audit_message(db: Database) -> None:
    _every_kind(db)
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    rows = chain(db)
    assert len(rows) == 12
    for row in rows:
        doc = etree.fromstring(audit_message_xml(row, SOURCE))
        assert schema.validate(doc), (row.event_id, row.description, schema.error_log)
    by_desc = {r.description.split(" \x00")[0]: etree.fromstring(audit_message_xml(r, SOURCE)) for r in rows}
    received = by_desc["instance 0 received"]
    peer, node = received.findall("ActiveParticipant")
    assert (peer.get("UserID"), peer.get("AlternativeUserID"), peer.get("UserIsRequestor")) == (
        "MOD0",
        "AETITLE=MOD0",
        "true",
    )
    assert peer.find("RoleIDCode").get("csd-code") == "110153"  # the modality is the source
    assert node.find("RoleIDCode").get("csd-code") == "110152"
    assert peer.get("NetworkAccessPointTypeCode") == "2"
    objs = received.findall("ParticipantObjectIdentification")
    assert [o.find("ParticipantObjectIDTypeCode").get("csd-code") for o in objs] == ["110180", "2"]
    assert objs[0].find("ParticipantObjectDescription/Accession").get("Number") == "A0"
    sent = by_desc["C-STORE refused 0xA700"]
    dest = sent.findall("ActiveParticipant")[0]
    assert dest.find("RoleIDCode").get("csd-code") == "110152" and dest.get("UserIsRequestor") == "false"
    assert sent.find("EventIdentification/EventOutcomeDescription").text == "C-STORE refused 0xA700"
    assert sent.find(".//SOPClass").get("NumberOfInstances") == "2"
    used = by_desc["audit read"].find("ParticipantObjectIdentification")
    assert used.find("ParticipantObjectName").text == "Security Audit Log"
    assert (used.get("ParticipantObjectTypeCode"), used.get("ParticipantObjectTypeCodeRole")) == ("2", "13")
    query = by_desc["search"].find("ParticipantObjectIdentification")
    import base64

    assert base64.b64decode(query.find("ParticipantObjectQuery").text) == b"patient_id=P&x=<&>"
    alert = by_desc["API request without a token"]
    assert alert.find("EventIdentification/EventTypeCode").get("csd-code") == "110132"
    assert (
        "\ufffd" in alert.find("EventIdentification/EventOutcomeDescription").text
    )  # control chars replaced


# ------------------------------------------------------------------ TCP: outage, spool, recovery
def test_tcp_forwarding_survives_an_outage_in_order(db: Database, tmp_path: Path) -> None:
    port = free_port()
    receiver = TcpReceiver(port)
    receiver.start()
    settings = AuditSettings(
        syslog_host="127.0.0.1", syslog_port=port, syslog_protocol="tcp", spool_path=tmp_path / "spool"
    )
    fwd = AuditForwarder(settings, db, SOURCE)
    add_events(db, 5)
    report = fwd.run_once()
    assert (report.spooled, report.sent, report.pending, report.error) == (5, 5, 0, None)
    wait_for(lambda: len(receiver.received()) == 5, "5 messages")

    receiver.stop()  # the audit record repository goes away
    add_events(db, 3, start=5, outcome=Outcome.MINOR_FAILURE)
    add_events(db, 1, start=8)
    down = fwd.run_once()
    assert down.spooled == 4 and down.sent == 0 and down.pending == 4 and "unreachable" in (down.error or "")
    fwd.stop()
    pending = sorted(p.name for p in (tmp_path / "spool" / "pending").iterdir())
    assert pending == [f"{6:020d}-{9:020d}.msgs"]  # one fsynced batch, seqs 6..9

    add_events(db, 2, start=9)  # more events while nothing forwards
    receiver = TcpReceiver(port)
    receiver.start()
    restarted = AuditForwarder(settings, db, SOURCE)  # a new process: the spool on disk is all it has
    up = restarted.run_once()
    assert (up.spooled, up.sent, up.pending, up.error) == (2, 6, 0, None)
    wait_for(lambda: len(receiver.received()) == 6, "the backlog")
    restarted.stop()
    receiver.stop()
    rows = chain(db)
    check_messages(receiver.received(), rows[5:])
    assert [parse_rfc5424(m)["sd"]["seq"] for m in receiver.received()] == [str(s) for s in range(6, 12)]


def test_forwarder_thread_started_by_the_api_ships_security_alerts(db: Database, tmp_path: Path) -> None:
    port = free_port()
    receiver = TcpReceiver(port)
    receiver.start()
    settings = Settings.model_validate(
        {
            "audit": {
                "syslog_host": "127.0.0.1",
                "syslog_port": port,
                "spool_path": str(tmp_path / "spool"),
                "forward_interval_s": 0.2,
            }
        }
    )
    try:
        with TestClient(create_app(settings, db), client=("198.51.100.23", 4000)) as c:
            assert c.get("/api/v1/studies").status_code == 401
            wait_for(lambda: len(receiver.received()) == 1, "the security alert")
    finally:
        receiver.stop()
    p = parse_rfc5424(receiver.received()[0])
    doc = etree.fromstring(p["xml"])
    assert doc.find("EventIdentification/EventID").get("csd-code") == "110113"
    assert doc.find("ActiveParticipant").get("NetworkAccessPointID") == "198.51.100.23"
    assert p["pri"] == 84  # failure outcome: warning


def test_only_one_forwarder_per_spool(db: Database, tmp_path: Path) -> None:
    settings = AuditSettings(syslog_host="127.0.0.1", syslog_port=free_port(), spool_path=tmp_path / "spool")
    first, second = AuditForwarder(settings, db, SOURCE), AuditForwarder(settings, db, SOURCE)
    add_events(db, 1)
    assert first.run_once().spooled == 1
    blocked = second.run_once()
    assert blocked.spooled == 0 and blocked.error == "another forwarder holds the lock"
    first.stop()
    assert (
        second.run_once().error is not None
    )  # now it owns the spool (receiver is down: it keeps the message)
    second.stop()


# ------------------------------------------------------------------ UDP
def test_udp_forwarding(db: Database, tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    port = sock.getsockname()[1]
    settings = AuditSettings(
        syslog_host="127.0.0.1", syslog_port=port, syslog_protocol="udp", spool_path=tmp_path / "spool"
    )
    fwd = AuditForwarder(settings, db, SOURCE)
    add_events(db, 3)
    assert fwd.run_once().sent == 3
    datagrams = [sock.recv(65535) for _ in range(3)]
    sock.close()
    fwd.stop()
    check_messages(datagrams, chain(db))


# ------------------------------------------------------------------ TLS (mutual)
def _pki(tmp: Path) -> dict[str, Path]:
    openssl = require_binary("openssl", "openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cdss test CA",
    )
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:cdss-node")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        (tmp / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {n: tmp / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_mutual_tls_forwarding(db: Database, tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
    server_ctx.load_verify_locations(pki["ca.pem"])
    server_ctx.verify_mode = (
        ssl.CERT_REQUIRED
    )  # ATNA node authentication: the node must present a certificate
    port = free_port()
    receiver = TcpReceiver(port, server_ctx)
    receiver.start()
    try:
        no_cert = AuditSettings(
            syslog_host="127.0.0.1",
            syslog_port=port,
            syslog_protocol="tls",
            syslog_ca_certificates=pki["ca.pem"],
            spool_path=tmp_path / "spool-a",
        )
        add_events(db, 2)
        refused = AuditForwarder(no_cert, db, SOURCE)
        r = refused.run_once()
        refused.stop()
        assert r.pending == 2 and r.error is not None  # handshake fails without a client certificate
        settings = no_cert.model_copy(
            update={
                "syslog_client_certificate": pki["client.pem"],
                "syslog_client_key": pki["client.key"],
                "spool_path": tmp_path / "spool-b",
            }
        )
        fwd = AuditForwarder(settings, db, SOURCE)
        ok = fwd.run_once()
        assert (ok.sent, ok.pending, ok.error) == (2, 0, None)
        wait_for(lambda: len(receiver.received()) == 2, "TLS messages")
        fwd.stop()
    finally:
        receiver.stop()
    check_messages(receiver.received(), chain(db))


def test_tls_refuses_an_unknown_receiver(db: Database, tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
    port = free_port()
    receiver = TcpReceiver(port, server_ctx)
    receiver.start()
    try:
        settings = AuditSettings(
            syslog_host="127.0.0.1", syslog_port=port, syslog_protocol="tls", spool_path=tmp_path / "spool"
        )
        add_events(db, 1)
        fwd = AuditForwarder(settings, db, SOURCE)  # no CA configured: the test CA is not trusted
        r = fwd.run_once()
        fwd.stop()
    finally:
        receiver.stop()
    assert r.pending == 1 and "CERTIFICATE_VERIFY_FAILED" in (r.error or "")
    assert receiver.received() == []


def test_message_format_details(db: Database) -> None:
    add_events(db, 1)
    row = chain(db)[0]
    msg = format_syslog_message(
        row, SOURCE, facility=13, app_name="my app", enterprise_number=4711, hostname="h", procid="7"
    )
    p = parse_rfc5424(msg)
    assert p["pri"] == 13 * 8 + 5 and p["app"] == "my_app" and p["hostname"] == "h" and p["procid"] == "7"
    assert p["sd_id"] == "cdssChain@4711"
