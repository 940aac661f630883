"""The receiving Application Entity: association policy, C-ECHO and C-STORE SCP.

:class:`Receiver` runs a pynetdicom association server in background threads. Per connection:

1. **TLS** (optional): the handshake runs in the connection's own thread (not in the accept
   loop, so a slow or hostile client cannot stall other connections); a failed handshake is
   audited as a Security Alert.
2. **Association policy** (on the A-ASSOCIATE-RQ): called AE title, calling AE allow-list,
   source address allow-list. A refused request gets an A-ASSOCIATE-RJ, a Security Alert audit
   event (Node Authentication) and ``cdss_associations_rejected_total{reason}``. pynetdicom's own
   limit check (``max_associations``) is audited the same way.
3. **Resource bounds**: a PDU longer than the negotiated maximum (plus slack) or a single
   message longer than ``dicom.max_dataset_mb`` closes the connection before it is buffered
   (pynetdicom 3.0.4 reads whatever length a peer announces, issue #1086).
4. **C-STORE**: :class:`~cdss.receive.ingest.Ingestor` validates, spools (fsync), commits
   and only then answers (see that module). **C-ECHO** answers success.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target
from sqlalchemy.exc import SQLAlchemyError

from cdss.audit import Action, EventID, EventType, Outcome, record_event
from cdss.config import ConfigError, DicomSettings, ReceiverReactor, Settings
from cdss.db import Database
from cdss.logs import configure_logging, get_logger
from cdss.metrics import ASSOCIATIONS_REJECTED
from cdss.receive.ingest import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Ingestor,
    ReceivedDataset,
)
from cdss.receive.processes import ReceiverPool
from cdss.receive.reactors import WakingAssociation
from cdss.receive.status import StoreStatus
from cdss.receive.syntaxes import (
    STORAGE_SOP_CLASSES,
    VERIFICATION_SOP_CLASS,
    SyntaxSupport,
    syntax_support,
)
from cdss.store import Spool, SpoolArea
from cdss.store.orphans import sweep_orphans

__all__ = ["AssociationPolicy", "Receiver", "Refusal", "run_child_receiver", "server_tls_context"]

log = get_logger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4.
_RJ_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE not recognized
_RJ_CALLED_AE = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called AE not recognized
_RJ_NO_REASON = (0x01, 0x01, 0x01)  # rejected-permanent, service-user, no reason given


class Refusal:
    """Why an association request is refused."""

    def __init__(self, reason: str, description: str, rsd: tuple[int, int, int], outcome: Outcome):
        self.reason = reason  # metric label
        self.description = description
        self.rsd = rsd
        self.outcome = outcome


class AssociationPolicy:
    """Called AE, calling AE allow-list and source address allow-list (``[dicom]``)."""

    def __init__(self, dicom: DicomSettings):
        self.ae_title = dicom.ae_title.strip()
        self.require_called_aet = dicom.require_called_aet
        self.calling_aets = {a.strip() for a in dicom.allowed_calling_aets}
        try:
            self.networks = [ipaddress.ip_network(a.strip(), strict=False) for a in dicom.allowed_addresses]
        except ValueError as exc:
            raise ConfigError(f"dicom.allowed_addresses: {exc}") from exc

    def address_allowed(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, calling_aet: str, called_aet: str, address: str) -> Refusal | None:
        """Return why the request is refused, or ``None`` to go on with negotiation."""
        if not self.address_allowed(address):
            return Refusal(
                "address_not_allowed",
                f"peer address {address} is not in dicom.allowed_addresses",
                _RJ_NO_REASON,
                Outcome.SERIOUS_FAILURE,
            )
        if self.calling_aets and calling_aet.strip() not in self.calling_aets:
            return Refusal(
                "calling_aet_not_allowed",
                f"calling AE title {calling_aet.strip()!r} is not in dicom.allowed_calling_aets",
                _RJ_CALLING_AE,
                Outcome.SERIOUS_FAILURE,
            )
        if self.require_called_aet and called_aet.strip() != self.ae_title:
            return Refusal(
                "called_aet_mismatch",
                f"called AE title {called_aet.strip()!r} is not this node's ({self.ae_title!r})",
                _RJ_CALLED_AE,
                Outcome.MINOR_FAILURE,
            )
        return None


def server_tls_context(dicom: DicomSettings) -> ssl.SSLContext:
    """TLS context for the DICOM port (PS3.15 B.12 BCP 195 RFC 8996/9325).

    TLS 1.2 is the minimum and TLS 1.3 is negotiated when the client offers it; TLS 1.2 cipher
    suites are limited to ephemeral ECDHE/DHE with AEAD (AES-GCM, ChaCha20-Poly1305);
    compression and renegotiation are off. With ``tls_require_client_certificate`` (default)
    the client must present a certificate issued by ``tls_ca_certificates`` (mutual TLS, IHE
    ATNA node authentication).

    Raises
    ------
    ConfigError
        A certificate, key or CA path is missing or unreadable.
    """
    if not dicom.tls_certificate or not dicom.tls_private_key:
        raise ConfigError("dicom.tls_enabled needs dicom.tls_certificate and dicom.tls_private_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!SHA1")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        ctx.load_cert_chain(str(dicom.tls_certificate), str(dicom.tls_private_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load dicom.tls_certificate {dicom.tls_certificate} / dicom.tls_private_key "
            f"{dicom.tls_private_key}: {exc}"
        ) from exc
    if dicom.tls_require_client_certificate:
        if not dicom.tls_ca_certificates:
            raise ConfigError(
                "dicom.tls_require_client_certificate needs dicom.tls_ca_certificates (the CAs of client certificates)"
            )
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif dicom.tls_ca_certificates:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if dicom.tls_ca_certificates:
        try:
            ctx.load_verify_locations(cafile=str(dicom.tls_ca_certificates))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load dicom.tls_ca_certificates {dicom.tls_ca_certificates}: {exc}"
            ) from exc
    return ctx


class _BoundedSocket(AssociationSocket):
    """An association socket that refuses PDUs and messages above the configured limits.

    Raising ``OSError`` from ``recv`` is what the DUL treats as "connection closed" (Evt17), so
    an oversized announcement ends the association before its bytes are buffered.
    """

    max_pdu_read: int = 0  # 0 = unlimited
    max_message_bytes: int = 0  # 0 = unlimited
    message_bytes: int = 0

    def recv(self, nr_bytes: int) -> bytearray:
        if self.max_pdu_read and nr_bytes > self.max_pdu_read:
            log.warning("pdu_too_long", announced=nr_bytes, limit=self.max_pdu_read, peer=self._peer())
            raise OSError(f"PDU of {nr_bytes} bytes exceeds the limit of {self.max_pdu_read}")
        self.message_bytes += nr_bytes
        if self.max_message_bytes and self.message_bytes > self.max_message_bytes:
            log.warning("message_too_long", limit=self.max_message_bytes, peer=self._peer())
            raise OSError("DIMSE message exceeds dicom.max_dataset_mb")
        return self._recv_exactly(nr_bytes)

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` from the socket (fewer only when the peer closed), as pynetdicom's ``recv``.

        pynetdicom 3.0 reads in 4 KiB ``recv`` calls, each one a system call and a round of the
        GIL: an 8 MB image is 2 000 of them, and with several associations the threads convoy on
        the GIL. This reads straight into the result buffer with ``recv_into``, taking whatever the
        kernel holds per call (docs/operations.md, Concurrent modalities).
        """
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        nr_read = 0
        with memoryview(buffer) as view:
            while nr_read < nr_bytes:
                got = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
                if not got:
                    break  # connection closed: return what was read, as pynetdicom does
                nr_read += got
        if nr_read < nr_bytes:
            del buffer[nr_read:]
        return buffer

    def _peer(self) -> str:
        try:
            return self.assoc.requestor.address
        except Exception:
            return "?"


class _RequestHandler(RequestHandler):
    """pynetdicom's request handler with a :class:`_BoundedSocket` (same steps otherwise)."""

    def _create_association(self) -> Association:
        server: _AssociationServer = self.server  # type: ignore[assignment]
        assoc = server.association_class(self.ae, "acceptor")
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = _BoundedSocket(assoc, client_socket=self.request)
        sock.max_pdu_read = server.max_pdu_read
        sock.max_message_bytes = server.max_message_bytes
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event in server._handlers:
            if event.is_intervention and server._handlers[event]:
                assoc.bind(event, *server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        return assoc


class _AssociationServer(ThreadedAssociationServer):
    """Threaded association server whose TLS handshake runs in the connection's thread."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a silent client's TLS handshake
    request_queue_size = 128  # listen backlog (socketserver's 5 drops the SYNs of a burst of modalities)
    max_pdu_read = 0
    max_message_bytes = 0
    association_class: type[Association] = WakingAssociation
    tls_context: ssl.SSLContext | None = None
    handshake_timeout = 30.0
    on_tls_failure: Callable[[str, Exception], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        return self.socket.accept()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls_context is not None:
            try:
                request.settimeout(self.handshake_timeout)
                request = self.tls_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                if self.on_tls_failure is not None:
                    self.on_tls_failure(str(client_address[0]), exc)
                with contextlib.suppress(OSError):
                    request.close()
                return
        super().process_request_thread(request, client_address)


class _ReusePortAssociationServer(_AssociationServer):
    """The same server, listening with ``SO_REUSEPORT`` (several receiver processes, one port)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


#: Seconds :meth:`Receiver.stop` waits for the accept loop to end (it polls every 0.5 s).
_SERVER_STOP_WAIT_S = 5.0


def _sanitize(text: str, limit: int = 64) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


class Receiver:
    """The node's DICOM listener (C-ECHO and C-STORE SCP).

    Parameters
    ----------
    settings
        Node settings (``[dicom]``, ``[jobs]`` limits).
    db
        The node database (rows, jobs and audit events are written in one transaction per image).
    spool
        The durable instance spool.
    on_job_created
        Called with the id of each new job after its transaction committed (also for the
        jobs that the other receiver processes created, ``dicom.receiver_processes`` > 1).
    child_of
        Set only inside a child receiver process (:func:`run_child_receiver`): the queue to
        the node, which gets this process's job ids and metric events.
    port
        Port to bind instead of ``dicom.port`` (a child binds the node's actual port).

    Examples
    --------
    >>> receiver = Receiver(settings, db, spool, on_job_created=backend.submit)  # doctest: +SKIP
    >>> receiver.start()  # returns at once; the server runs in background threads
    >>> receiver.stop()
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        spool: Spool,
        on_job_created: Callable[[int], None] | None = None,
        *,
        child_of: Any = None,
        port: int | None = None,
    ):
        self.settings = settings
        self.db = db
        self.spool = spool
        self._child_of = child_of
        self._bind_port = settings.dicom.port if port is None else port
        on_outcome = None
        if child_of is not None:

            def on_outcome(status: int, reason: str, duplicate: bool, seconds: float) -> None:
                child_of.put(("store", status, reason, duplicate, seconds))

        self.ingestor = Ingestor(settings, db, spool, on_job_created, on_outcome=on_outcome)
        self.on_job_created = on_job_created
        self.policy = AssociationPolicy(settings.dicom)
        self.syntaxes: SyntaxSupport = syntax_support()
        self._tls = server_tls_context(settings.dicom) if settings.dicom.tls_enabled else None
        self._ae: AE | None = None
        self._server: _AssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._pool: ReceiverPool | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The TCP port the server listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def processes(self) -> int:
        """Receiver processes listening: this one plus its live children."""
        if self._server is None:
            return 0
        return 1 + (self._pool.alive() if self._pool is not None else 0)

    def start(self) -> None:
        """Sweep the spool, build the AE and start listening (non-blocking).

        With ``dicom.receiver_processes`` > 1 this also starts the other receiver processes
        and returns once they listen too.
        """
        if self._server is not None:
            return
        dicom = self.settings.dicom
        swept = orphans = 0
        if self._child_of is None:  # the node's receiver sweeps; its children do not
            swept = self.spool.sweep_temp()
            try:
                orphans = sweep_orphans(self.db, self.spool, SpoolArea.INSTANCES)
            except SQLAlchemyError as exc:
                log.error("spool_reconcile_failed", error=type(exc).__name__)
        ae = AE(ae_title=dicom.ae_title)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.acse_timeout = dicom.acse_timeout_s
        ae.dimse_timeout = dicom.dimse_timeout_s
        ae.network_timeout = dicom.network_timeout_s
        ae.maximum_associations = dicom.max_associations
        ae.maximum_pdu_size = dicom.max_pdu_size
        ae.require_called_aet = False  # checked by AssociationPolicy (audited)
        ae.require_calling_aet = []
        ae.add_supported_context(VERIFICATION_SOP_CLASS, list(self.syntaxes.accepted))
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(self.syntaxes.accepted))
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_c_echo),
            (evt.EVT_C_STORE, self._on_c_store),
        ]
        shared_port = dicom.receiver_processes > 1 or self._child_of is not None
        server = ae.make_server(
            (dicom.bind, self._bind_port),
            evt_handlers=handlers,
            server_class=_ReusePortAssociationServer if shared_port else _AssociationServer,
            request_handler=_RequestHandler,
        )
        assert isinstance(server, _AssociationServer)
        server.max_pdu_read = max(dicom.max_pdu_size + 1024, 1 << 20) if dicom.max_pdu_size else 0
        server.max_message_bytes = dicom.max_dataset_mb * 1024 * 1024 + (1 << 20)
        server.association_class = (
            WakingAssociation if dicom.reactor == ReceiverReactor.WAKING else Association
        )
        server.tls_context = self._tls
        server.handshake_timeout = dicom.acse_timeout_s
        server.on_tls_failure = self._on_tls_failure
        ae._servers.append(server)
        thread = threading.Thread(
            target=make_target(server.serve_forever), name="cdss-dicom-server", daemon=True
        )
        thread.start()
        self._ae, self._server, self._thread = ae, server, thread
        log.info(
            "dicom_listening",
            ae_title=dicom.ae_title,
            bind=dicom.bind,
            port=self.port,
            tls=self._tls is not None,
            max_associations=dicom.max_associations,
            temp_files_swept=swept,
            orphans_removed=orphans,
        )
        if self._child_of is not None:
            return
        log.info("transfer_syntaxes", accepted=list(self.syntaxes.accepted), refused=self.syntaxes.refused)
        for line in self.syntaxes.describe():
            log.debug("transfer_syntax", detail=line)
        if dicom.receiver_processes > 1:
            self._pool = ReceiverPool(
                self.settings,
                self.port,
                dicom.receiver_processes - 1,
                self.on_job_created,
                run_child_receiver,
            )
            self._pool.start()

    def stop(self) -> None:
        """Stop listening and abort associations still open (their SCUs will retry)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        ae, server, thread = self._ae, self._server, self._thread
        self._ae = self._server = self._thread = None
        self.ingestor.close()
        if server is None or ae is None:
            return
        # Stop listening first: from here on the kernel hands new connections only to the other
        # processes on the port (or refuses them), whatever the accept loop below still does.
        listener = server.socket
        with contextlib.suppress(OSError):
            if listener is not None:
                listener.shutdown(socket.SHUT_RDWR)
        # socketserver's shutdown() waits without a limit for the accept loop to notice; a child
        # receiver under load was seen waiting there for more than 20 s, so the wait is bounded.
        stopper = threading.Thread(target=server.shutdown, name="cdss-dicom-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=_SERVER_STOP_WAIT_S)
        if stopper.is_alive():
            log.warning(
                "dicom accept loop did not stop in time; its socket is closed", wait_s=_SERVER_STOP_WAIT_S
            )
            with contextlib.suppress(OSError):
                if listener is not None:
                    listener.close()
        for assoc in list(server.active_associations):
            assoc.abort()
        if thread is not None and not stopper.is_alive():
            thread.join(timeout=10)
        log.info("dicom_stopped")

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ association events
    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        assert rq is not None  # the A-ASSOCIATE-RQ that raised this event
        calling = _sanitize(str(rq.calling_ae_title or ""))
        called = _sanitize(str(rq.called_ae_title or ""))
        address = assoc.requestor.address
        refusal = self.policy.check(calling, called, address)
        if refusal is None:
            return
        # Audit first: once the peer reads the rejection, the security alert is already committed.
        self._audit_rejection(refusal.reason, refusal.description, refusal.outcome, calling, called, address)
        assoc.acse.send_reject(*refusal.rsd)
        assoc.kill()

    def _on_rejected(self, event: evt.Event) -> None:
        # Only pynetdicom's own rejections reach here (ours do not trigger EVT_REJECTED).
        assoc = event.assoc
        calling = _sanitize(str(assoc.requestor.ae_title or ""))
        primitive = assoc.acceptor.primitive
        rsd = (primitive.result, primitive.result_source, primitive.diagnostic) if primitive else None
        if rsd == (0x02, 0x03, 0x02):
            reason, description = (
                "association_limit",
                (f"more than dicom.max_associations = {self.settings.dicom.max_associations} associations"),
            )
        else:
            reason, description = "rejected", f"association rejected by pynetdicom {rsd}"
        self._audit_rejection(
            reason,
            description,
            Outcome.MINOR_FAILURE,
            calling,
            _sanitize(str(assoc.acceptor.ae_title)),
            assoc.requestor.address,
        )

    def _on_tls_failure(self, address: str, exc: Exception) -> None:
        detail = getattr(exc, "reason", None) or type(exc).__name__
        self._audit_rejection(
            "tls_failed", f"TLS handshake failed ({detail})", Outcome.SERIOUS_FAILURE, None, None, address
        )

    def _audit_rejection(
        self,
        reason: str,
        description: str,
        outcome: Outcome,
        calling: str | None,
        called: str | None,
        address: str,
    ) -> None:
        ASSOCIATIONS_REJECTED.labels(reason).inc()
        if self._child_of is not None:
            with contextlib.suppress(Exception):
                self._child_of.put(("rejected", reason))
        log.warning("association_rejected", reason=reason, calling_aet=calling, peer=address)
        try:
            with self.db.session() as session:
                record_event(
                    session,
                    EventID.SECURITY_ALERT,
                    action=Action.EXECUTE,
                    outcome=outcome,
                    event_type=EventType.NODE_AUTHENTICATION,
                    user=f"AETITLE={calling}" if calling else None,
                    source=address,
                    description=f"association rejected: {description}",
                    detail={
                        "reason": reason,
                        "calling_aet": calling,
                        "called_aet": called,
                        "peer_address": address,
                    },
                )
        except SQLAlchemyError as exc:
            log.error("audit_unavailable", audit_event="security_alert", error=type(exc).__name__)

    def _on_established(self, event: evt.Event) -> None:
        assoc = event.assoc
        log.info(
            "association_established",
            calling_aet=_sanitize(str(assoc.requestor.ae_title)),
            peer=assoc.requestor.address,
            contexts=len(assoc.accepted_contexts),
            rejected_contexts=len(assoc.rejected_contexts),
        )

    def _on_aborted(self, event: evt.Event) -> None:
        assoc = event.assoc
        log.info(
            "association_aborted",
            calling_aet=_sanitize(str(assoc.requestor.ae_title)),
            peer=assoc.requestor.address,
        )

    # ------------------------------------------------------------------ DIMSE
    def _reset_message_counter(self, event: evt.Event) -> None:
        sock = event.assoc.dul.socket
        if isinstance(sock, _BoundedSocket):
            sock.message_bytes = 0

    def _on_c_echo(self, event: evt.Event) -> int:
        self._reset_message_counter(event)
        return 0x0000

    def _on_c_store(self, event: evt.Event) -> int | Dataset:
        self._reset_message_counter(event)
        assoc = event.assoc
        request = event.request
        assert isinstance(request, C_STORE)  # EVT_C_STORE carries the C-STORE-RQ
        item = ReceivedDataset(
            raw=event.encoded_dataset(include_meta=False),
            transfer_syntax=str(event.context.transfer_syntax),
            command_sop_class_uid=str(request.AffectedSOPClassUID or ""),
            command_sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            calling_aet=_sanitize(str(assoc.requestor.ae_title or ""), 16),
            called_aet=_sanitize(str(getattr(assoc.requestor.primitive, "called_ae_title", "") or ""), 16),
            peer_address=str(assoc.requestor.address),
        )
        outcome = self.ingestor.ingest(item)
        if outcome.status == StoreStatus.SUCCESS:
            return 0x0000
        rsp = Dataset()
        rsp.Status = int(outcome.status)
        if outcome.message:
            rsp.ErrorComment = outcome.message.encode("ascii", "replace").decode("ascii")[:64]
        if outcome.offending is not None:
            rsp.OffendingElement = [outcome.offending]
        return rsp


def run_child_receiver(settings_data: dict[str, Any], port: int, events: Any, stop: Any) -> None:
    """Entry point of one child receiver process (``dicom.receiver_processes`` > 1; spawned).

    Listens on ``port`` next to the node's own receiver until ``stop`` is set, the node tells it
    to (SIGTERM), or the node process is gone (checked every 0.5 s). See
    :mod:`cdss.receive.processes`.
    """
    settings = Settings.model_validate(settings_data)
    configure_logging(settings.logging.level, settings.logging.json_output)
    parent = os.getppid()
    events.cancel_join_thread()  # never block at exit on a queue nobody reads any more
    terminated = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the node, which stops us
    # Only a flag: touching the shared stop event in a handler can deadlock on its own lock.
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    db = Database(settings.database.url, pool_size=settings.database.pool_size, run_migrations=False)
    receiver = Receiver(
        settings,
        db,
        Spool(settings.storage),
        on_job_created=lambda job_id: events.put(("job", int(job_id))),
        child_of=events,
        port=port,
    )
    receiver.start()
    events.put(("ready", os.getpid()))
    try:
        while not (terminated.wait(0.5) or stop.is_set()):
            if os.getppid() != parent:  # the node died (kill -9): do not outlive it
                log.warning("receiver process exits: its node is gone", pid=os.getpid())
                break
    finally:
        receiver.stop()
        db.dispose()
