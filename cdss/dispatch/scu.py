"""C-STORE SCU: send a batch of result objects to one destination over one association.

Presentation contexts are proposed per (SOP Class, Transfer Syntax) of the objects in the batch
(SEG, Comprehensive 3D SR, GSPS, Secondary Capture, whatever the encoders wrote). Objects in an
uncompressed transfer syntax also offer the other uncompressed syntaxes, and pynetdicom converts
between Explicit and Implicit VR Little Endian when the destination accepts only one of them.
Compressed objects are sent only in their own transfer syntax.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ

from cdss.dispatch.states import SendOutcome

__all__ = ["SendItem", "Target", "send_batch", "tls_context"]

#: pynetdicom allows at most 128 presentation contexts in one association request.
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Target:
    """Where to send: the destination's address and how to talk to it."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str
    tls: bool = False
    tls_ca_certificates: Path | None = None
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None

    def describe(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"


@dataclass(frozen=True)
class SendItem:
    """One object to send: its delivery id and its file."""

    key: int
    path: Path


class _ThreadErrors(logging.Handler):
    """Collects pynetdicom's error log lines per thread (association rejection reasons etc.)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.lines: dict[int, list[str]] = {}
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._mutex:
            if len(self.lines) > 256:  # threads that never collect (e.g. the receiver's) must not pile up
                self.lines.clear()
            lines = self.lines.setdefault(record.thread or 0, [])
            if len(lines) < 20:
                lines.append(record.getMessage())

    def pop(self, thread_id: int | None) -> list[str]:
        if thread_id is None:
            return []
        with self._mutex:
            return self.lines.pop(thread_id, [])


_ERRORS = _ThreadErrors()
logging.getLogger("pynetdicom").addHandler(_ERRORS)


def _wake_on_abort(event: evt.Event) -> None:
    """Stop waiting for a C-STORE-RSP as soon as the peer aborts or drops the connection.

    pynetdicom notices an A-ABORT that arrives during a DIMSE exchange only when the DIMSE
    timeout expires (the reactor is paused while the caller waits); putting ``(None, None)``
    on the DIMSE queue ends the wait at once (the workaround its maintainer suggests in
    pydicom/pynetdicom#430).
    """
    pdu = getattr(event, "pdu", None)
    if event.event is evt.EVT_CONN_CLOSE or isinstance(pdu, A_ABORT_RQ):
        event.assoc.dimse.msg_queue.put((None, None))


def tls_context(target: Target) -> ssl.SSLContext:
    """TLS client context (BCP 195: TLS 1.2 minimum, server certificate verified)."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(target.tls_ca_certificates) if target.tls_ca_certificates else None,
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if target.tls_certificate:
        ctx.load_cert_chain(
            str(target.tls_certificate), str(target.tls_private_key) if target.tls_private_key else None
        )
    return ctx


def _contexts(datasets: dict[int, Dataset]) -> list[tuple[str, list[str]]]:
    wanted: dict[str, list[str]] = {}
    for ds in datasets.values():
        sop_class = str(ds.SOPClassUID)
        ts = UID(str(ds.file_meta.TransferSyntaxUID))
        syntaxes = wanted.setdefault(sop_class, [])
        candidates = [ts] if ts.is_compressed else [ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for c in candidates:
            if str(c) not in syntaxes:
                syntaxes.append(str(c))
    contexts: list[tuple[str, list[str]]] = []
    for sop_class, syntaxes in wanted.items():
        uncompressed = [s for s in syntaxes if not UID(s).is_compressed]
        compressed = [s for s in syntaxes if UID(s).is_compressed]
        if uncompressed:
            contexts.append((sop_class, uncompressed))
        # One context per compressed syntax, so the destination can accept each independently.
        contexts.extend((sop_class, [s]) for s in compressed)
    return contexts[:MAX_CONTEXTS]


def send_batch(
    target: Target,
    items: list[SendItem],
    *,
    connect_timeout_s: float = 15.0,
    dimse_timeout_s: float = 60.0,
) -> dict[int, SendOutcome]:
    """Send ``items`` to ``target`` over one association.

    Returns
    -------
    dict
        ``item.key`` -> :class:`SendOutcome` for every item: the C-STORE-RSP status, or no status
        and the reason (file unreadable, association rejected or not possible, presentation
        context not accepted, no response).
    """
    outcomes: dict[int, SendOutcome] = {}
    datasets: dict[int, Dataset] = {}
    for item in items:
        try:
            datasets[item.key] = dcmread(item.path)
        except Exception as exc:  # the spool lost or mangled the file: report, do not crash
            outcomes[item.key] = SendOutcome(None, f"result file {item.path} is unreadable: {exc}")
    if not datasets:
        return outcomes

    ae = AE(ae_title=target.calling_ae_title)
    ae.connection_timeout = connect_timeout_s
    ae.acse_timeout = connect_timeout_s
    ae.dimse_timeout = dimse_timeout_s
    ae.network_timeout = max(dimse_timeout_s, connect_timeout_s)
    for sop_class, syntaxes in _contexts(datasets):
        ae.add_requested_context(sop_class, syntaxes)

    tls_args = (tls_context(target), target.host) if target.tls else None
    started = time.monotonic()
    me = threading.get_ident()
    _ERRORS.pop(me)
    assoc = ae.associate(
        target.host,
        target.port,
        ae_title=target.ae_title,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_PDU_RECV, _wake_on_abort), (evt.EVT_CONN_CLOSE, _wake_on_abort)],
    )
    # Negotiation runs in this thread; transport errors are logged by the DUL thread.
    errors = _ERRORS.pop(me) + _ERRORS.pop(getattr(assoc.dul, "ident", None)) + _ERRORS.pop(assoc.ident)
    if not assoc.is_established:
        if assoc.is_rejected:
            why = "association rejected by"
        elif time.monotonic() - started >= connect_timeout_s:
            why = "no answer (timeout) from"
        else:
            why = "could not associate with"
        detail = "; ".join(e for e in errors if e) or "connection refused, unreachable or aborted"
        reason = f"{why} {target.describe()}: {detail}"
        for key in datasets:
            outcomes[key] = SendOutcome(None, reason)
        return outcomes

    try:
        for key, ds in datasets.items():
            if not assoc.is_established:
                outcomes[key] = SendOutcome(None, f"association with {target.describe()} ended early")
                continue
            try:
                rsp = assoc.send_c_store(ds)
            except ValueError as exc:  # no accepted presentation context for this object
                outcomes[key] = SendOutcome(
                    None,
                    f"{target.describe()} did not accept {ds.SOPClassUID.name} "
                    f"in {UID(ds.file_meta.TransferSyntaxUID).name}: {exc}",
                )
                continue
            except Exception as exc:
                outcomes[key] = SendOutcome(None, f"C-STORE to {target.describe()} failed: {exc}")
                continue
            status = rsp.get("Status") if rsp is not None else None
            if status is None:
                outcomes[key] = SendOutcome(
                    None, f"no C-STORE response from {target.describe()} (DIMSE timeout or abort)"
                )
            else:
                comment = rsp.get("ErrorComment")
                outcomes[key] = SendOutcome(
                    int(status),
                    None
                    if int(status) == 0
                    else f"C-STORE status 0x{int(status):04X}" + (f" ({comment})" if comment else ""),
                )
    finally:
        if assoc.is_established:
            assoc.release()
        _ERRORS.pop(me)
        _ERRORS.pop(assoc.ident)
    return outcomes
