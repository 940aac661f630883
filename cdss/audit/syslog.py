"""Forwarding the audit trail to an RFC 5424 syslog receiver (IHE ATNA Record Audit Event, ITI-20).

Message (one per audit row, in ``seq`` order)::

    <85>1 2026-03-01T10:00:00.123456Z host cdss 4242 DICOM+RFC3881 \
        [cdssChain@32473 seq="17" hash="…" prevHash="…"] BOM<AuditMessage>…</AuditMessage>

* PRI: facility ``audit.syslog_facility`` (10, security/authorization, PS3.15 A.6/A.7), severity
  5 (notice) for successful events and 4 (warning) for failures.
* MSGID ``DICOM+RFC3881`` (PS3.15 A.7); MSG is the PS3.15 A.5 XML (:mod:`cdss.audit.message`),
  UTF-8 with the BOM that RFC 5424 §6.4 requires for UTF-8 MSG.
* STRUCTURED-DATA ``cdssChain@<enterprise number>`` carries the row's chain ``seq``, ``hash``
  and ``prevHash``: the receiver therefore holds an external copy of the chain head (the anchor
  that detects tail truncation and rewrites, see :mod:`cdss.audit.verify`) and can detect gaps.

Transports: UDP (RFC 5426, one datagram per message), TCP and TLS (RFC 5425 / RFC 6587
octet-counting framing ``MSG-LEN SP SYSLOG-MSG``). TLS verifies the receiver against
``syslog_ca_certificates`` and presents ``syslog_client_certificate`` (mutual TLS, ITI-19).

Reliability (goal G-A3): the forwarder tails the ``audit_events`` table (the source of truth)
and first writes each batch of messages durably into the spool directory (``pending/<first>-<last>.msgs``, fsynced,
plus a ``cursor`` file). It then sends the oldest pending messages in order. A batch is deleted
from the spool only when it was written and the connection was still open a moment later
(``confirm_s``): before each batch, and after it, the stream is checked for a close or a TLS
alert by the peer, so a restarted receiver or a TLS 1.3 server that rejects the client
certificate (it says so only after the client's first write) does not swallow messages. While
the receiver is unreachable the spool only grows; after recovery the backlog goes out in order.
Delivery is at least once: a batch whose connection failed right after the write is sent again,
so a receiver may see a ``seq`` twice (and can drop it), never miss one it would have got.
Limits: syslog over TCP/TLS has no application acknowledgement, so messages that a receiver
accepted into its socket buffer and lost in a crash are gone; the gap-free ``seq`` in every
message lets the receiver detect this, and ``cdss audit export --format syslog --seq-from N``
replays any range. UDP has no delivery signal at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import select
import socket
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select

from cdss.audit.message import AuditSource, audit_message_xml
from cdss.config import AuditSettings, SyslogProtocol
from cdss.db.models import AuditEvent
from cdss.durable import fsync_dir
from cdss.logs import get_logger

__all__ = [
    "MSGID",
    "AuditForwarder",
    "AuditSpool",
    "ForwardReport",
    "SyslogTransport",
    "format_syslog_message",
    "octet_frame",
]

log = get_logger(__name__)

MSGID = "DICOM+RFC3881"
BOM = b"\xef\xbb\xbf"
UDP_MAX = 65507


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printascii(value: str, limit: int) -> str:
    text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return text or "-"


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_syslog_message(
    event: AuditEvent,
    source: AuditSource,
    *,
    facility: int = 10,
    app_name: str = "cdss",
    enterprise_number: int = 32473,
    hostname: str | None = None,
    procid: str | None = None,
) -> bytes:
    """The RFC 5424 ``SYSLOG-MSG`` of one audit row (no transport framing).

    Parameters
    ----------
    event
        Stored audit row (its ``seq`` and ``hash`` go to the structured data).
    source
        Node identity for the DICOM audit message.
    facility
        Syslog facility (10 = security/authorization).
    """
    severity = 5 if int(event.outcome) == 0 else 4
    pri = facility * 8 + severity
    header = " ".join(
        [
            f"<{pri}>1",
            _timestamp(event.occurred_at),
            _printascii(hostname or source.host, 255),
            _printascii(app_name, 48),
            _printascii(procid or str(os.getpid()), 128),
            MSGID,
        ]
    )
    sd = (
        f'[cdssChain@{enterprise_number} seq="{event.seq}" hash="{_sd_escape(event.hash)}" '
        f'prevHash="{_sd_escape(event.prev_hash)}"]'
    )
    return header.encode("ascii") + b" " + sd.encode("ascii") + b" " + BOM + audit_message_xml(event, source)


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425 §4.3 octet-counting frame: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogTransport:
    """A connection to the syslog receiver (UDP, TCP or TLS), opened on demand.

    :meth:`send` raises :class:`OSError` (or :class:`ssl.SSLError`) when the receiver is not
    reachable; the caller keeps the message and retries later.
    """

    def __init__(self, settings: AuditSettings, *, timeout_s: float = 10.0):
        if not settings.syslog_host:
            raise ValueError("audit.syslog_host is empty: forwarding is off")
        self.settings = settings
        self.host = settings.syslog_host
        self.port = settings.syslog_port
        self.protocol = SyslogProtocol(settings.syslog_protocol)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.settings.syslog_ca_certificates:
            ctx.load_verify_locations(cafile=str(self.settings.syslog_ca_certificates))
        if self.settings.syslog_client_certificate:
            ctx.load_cert_chain(
                str(self.settings.syslog_client_certificate),
                str(self.settings.syslog_client_key) if self.settings.syslog_client_key else None,
            )
        return ctx

    def _connect(self) -> socket.socket:
        if self.protocol is SyslogProtocol.UDP:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(addr)
            return sock
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        if self.protocol is SyslogProtocol.TLS:
            try:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(self.timeout_s)
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """``True`` when the stream peer has closed, reset or (TLS) alerted the connection.

        A syslog receiver never sends application data; what can arrive is a FIN, an RST, a TLS
        alert or TLS 1.3 session tickets (which are not a close).
        """
        if self.protocol is SyslogProtocol.UDP:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        if isinstance(sock, ssl.SSLSocket):
            sock.setblocking(False)
            try:
                return sock.recv(4096) == b""
            except ssl.SSLWantReadError:
                return False  # only TLS records without application data (session tickets)
            except (ssl.SSLError, OSError):
                return True
            finally:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.timeout_s)
        try:
            return sock.recv(4096, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    @property
    def is_stream(self) -> bool:
        return self.protocol is not SyslogProtocol.UDP

    def still_open(self, grace_s: float) -> bool:
        """After writing: wait ``grace_s`` for the peer to close or reject the connection.

        A TLS 1.3 receiver that refuses the client certificate, or a receiver that is shutting
        down, closes the connection only after the client's first writes went into the socket;
        this check catches that before the messages leave the spool.
        """
        if self._sock is None:
            return False
        if not self.is_stream:
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], grace_s)
        except (OSError, ValueError):
            self.close()
            return False
        if readable and self._peer_closed(self._sock):
            self.close()
            return False
        return True

    def send(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` in order (one datagram each, or octet-counted frames on a stream)."""
        if self._sock is not None and self._peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        try:
            if self.protocol is SyslogProtocol.UDP:
                for message in messages:
                    self._sock.send(message[:UDP_MAX])
            else:
                self._sock.sendall(b"".join(octet_frame(m) for m in messages))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class AuditSpool:
    """Durable, ordered queue of formatted syslog messages on local disk.

    Layout: ``<path>/pending/<first seq>-<last seq>.msgs`` (20 digits each; one file per batch
    of consecutive events, holding their messages as octet-counted frames, RFC 6587) and
    ``<path>/cursor`` (the highest ``seq`` spooled). Writes are atomic (temporary file, fsync,
    rename, fsync of the directory), so a crash leaves either the old or the new state; a batch
    re-spooled after a crash has the same name and bytes.
    """

    SUFFIX = ".msgs"

    def __init__(self, path: Path):
        self.root = Path(path)
        self.pending_dir = self.root / "pending"
        self.pending_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cursor_path = self.root / "cursor"

    def cursor(self) -> int:
        """The highest ``seq`` already spooled (0 when nothing was)."""
        try:
            return int(self.cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def add(self, items: Sequence[tuple[int, bytes]]) -> int:
        """Spool consecutive ``(seq, message)`` pairs as one batch and advance the cursor."""
        if not items:
            return 0
        first, last = items[0][0], items[-1][0]
        data = b"".join(octet_frame(message) for _, message in items)
        self._atomic_write(self.pending_dir / f"{first:020d}-{last:020d}{self.SUFFIX}", data)
        fsync_dir(self.pending_dir)
        self._atomic_write(self.cursor_path, str(last).encode("ascii"))
        fsync_dir(self.root)
        return len(items)

    def pending(self, limit: int | None = None) -> list[Path]:
        """Pending batch files, oldest ``seq`` first."""
        files = sorted(p for p in self.pending_dir.iterdir() if p.name.endswith(self.SUFFIX))
        return files if limit is None else files[:limit]

    @staticmethod
    def seq_range(path: Path) -> tuple[int, int]:
        first, _, last = path.name.removesuffix(AuditSpool.SUFFIX).partition("-")
        return int(first), int(last)

    def pending_count(self) -> int:
        """Messages waiting (the batches hold consecutive seqs)."""
        return sum(b - a + 1 for a, b in map(self.seq_range, self.pending()))

    @staticmethod
    def read(path: Path) -> list[bytes]:
        """The messages of one batch file, in order."""
        data = path.read_bytes()
        out, i = [], 0
        while i < len(data):
            sp = data.index(b" ", i)
            n = int(data[i:sp])
            out.append(data[sp + 1 : sp + 1 + n])
            i = sp + 1 + n
        return out

    def remove(self, paths: Iterable[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fsync_dir(self.pending_dir)


@dataclass
class ForwardReport:
    """What one :meth:`AuditForwarder.run_once` did."""

    spooled: int
    sent: int
    pending: int
    error: str | None = None


class AuditForwarder:
    """Tail the audit table into the spool and send the spool to the syslog receiver.

    Parameters
    ----------
    settings
        ``[audit]`` settings (receiver, protocol, TLS files, spool path, interval).
    db
        The node database (:class:`cdss.db.Database`).
    source
        Node identity in the DICOM messages (``AuditSource.for_node(ae_title)``).

    Only one forwarder per spool directory runs at a time (an exclusive ``flock`` on
    ``<spool>/lock``); on PostgreSQL a session advisory lock also keeps forwarders on other
    hosts from sending the same rows twice.
    """

    _PG_LOCK_KEY = 0x0CD55F0D

    def __init__(
        self,
        settings: AuditSettings,
        db: Any,
        source: AuditSource,
        *,
        transport: SyslogTransport | None = None,
        batch: int = 500,
        confirm_s: float = 0.25,
    ):
        self.settings = settings
        self.db = db
        self.source = source
        self.spool = AuditSpool(settings.spool_path)
        self.transport = transport or SyslogTransport(settings)
        self.batch = batch
        self.confirm_s = confirm_s
        self.files_per_confirm = 20  # batches written between two confirmations (up to 20 x batch messages)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._pg_conn: Any = None

    # -------------------------------------------------------------- leadership
    def _acquire(self) -> bool:
        if self._lock_fd is None:
            fd = os.open(self.spool.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False
                raise
            self._lock_fd = fd
        if self.db.dialect == "postgresql" and self._pg_conn is None:
            from sqlalchemy import text

            conn = self.db.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._PG_LOCK_KEY}).scalar()
            conn.commit()
            if not got:
                conn.close()
                return False
            self._pg_conn = conn
        return True

    def _release(self) -> None:
        if self._pg_conn is not None:
            with contextlib.suppress(Exception):
                self._pg_conn.close()  # closing the session releases the advisory lock
            self._pg_conn = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    # -------------------------------------------------------------- work
    def spool_new_events(self) -> int:
        """Format events newer than the spool cursor and write them to the spool."""
        total = 0
        while True:
            cursor = self.spool.cursor()
            with self.db.session() as session:
                rows = list(
                    session.execute(
                        sa_select(AuditEvent)
                        .where(AuditEvent.seq > cursor)
                        .order_by(AuditEvent.seq)
                        .limit(self.batch)
                    ).scalars()
                )
                items = [
                    (
                        row.seq,
                        format_syslog_message(
                            row,
                            self.source,
                            facility=self.settings.syslog_facility,
                            app_name=self.settings.syslog_app_name,
                            enterprise_number=self.settings.syslog_enterprise_number,
                        ),
                    )
                    for row in rows
                ]
            total += self.spool.add(items)
            if len(items) < self.batch:
                return total

    def send_pending(self) -> int:
        """Send pending messages oldest first; stop at the first failure (raised).

        A batch leaves the spool only after it was written *and* the connection was still open
        ``confirm_s`` later (see :meth:`SyslogTransport.still_open`); otherwise it is sent again
        on the next connection (at-least-once: the receiver may see a seq twice, never a gap).
        """
        sent = 0
        while True:
            files = self.spool.pending(limit=self.files_per_confirm)
            if not files:
                return sent
            count = 0
            for path in files:
                messages = self.spool.read(path)
                self.transport.send(messages)
                count += len(messages)
            if not self.transport.still_open(self.confirm_s):
                raise ConnectionError(
                    "the receiver closed the connection right after the messages were written "
                    "(rejected client certificate or shutdown); they stay in the spool"
                )
            self.spool.remove(files)
            sent += count

    def run_once(self) -> ForwardReport:
        """Spool new events, then send the spool. Never raises for an unreachable receiver."""
        if not self._acquire():
            return ForwardReport(0, 0, self.spool.pending_count(), error="another forwarder holds the lock")
        spooled = sent = 0
        error = None
        try:
            spooled = self.spool_new_events()
        except Exception as exc:  # the database may be briefly unavailable; retry next round
            error = f"reading audit events failed: {type(exc).__name__}: {exc}"
            log.warning("audit_forward_read_failed", error=error)
        try:
            sent = self.send_pending()
        except (OSError, ssl.SSLError) as exc:
            error = f"syslog receiver {self.transport.host}:{self.transport.port} unreachable: {exc}"
            log.warning("audit_forward_send_failed", error=error, pending=self.spool.pending_count())
        return ForwardReport(spooled, sent, self.spool.pending_count(), error)

    # -------------------------------------------------------------- thread
    def start(self) -> None:
        """Forward every ``audit.forward_interval_s`` seconds in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="audit-forwarder", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # keep the thread alive; the next round retries
                log.error("audit_forward_error", error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.settings.forward_interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after a last round (so events of a clean shutdown go out too)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)
            self._thread = None
            with contextlib.suppress(Exception):
                self.run_once()
        self.transport.close()
        self._release()
