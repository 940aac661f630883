"""Association reactors that sleep until there is work, instead of polling every millisecond.

pynetdicom 3.0 serves each association with two threads, the DUL reactor (reads PDUs, runs the
state machine, sends) and the association reactor (runs the DIMSE services). Both poll: the DUL
thread sleeps 1 ms whenever its queues are empty, the association thread sleeps 1 ms on every
loop (pynetdicom's own ``TODO: try and make this event based``). With several associations the
threads wake 2 000 times a second each and trade the GIL; at 4 senders that was a measured share
of the receiver's CPU (docs/operations.md, Concurrent modalities).

The two classes here keep pynetdicom's loops step for step and change only how they wait:

* :class:`WakingDUL` blocks in ``poll`` on the association socket and on a private wake-up
  socket pair, which :meth:`WakingDUL.send_pdu` and :meth:`WakingDUL.kill_dul` poke when another
  thread queues a primitive to send; after each state-machine action it wakes the association
  thread;
* :class:`WakingAssociation` waits on that wake-up event instead of sleeping.

Both loops still wake at least every :data:`MAX_WAIT_S` to check what pynetdicom checks by
polling (ARTIM and network-idle timers, the kill flag, a dead DUL thread), so a missed wake-up
costs at most that much latency, never a hang. Only the node's acceptor associations use them
(:mod:`cdss.receive.server`); ``dicom.reactor = "polling"`` restores pynetdicom's own classes.
The loops are copied from pynetdicom 3.0.4 (``DULServiceProvider.run_reactor``,
``Association._run_reactor``); ``constraints.txt`` pins that version and
``tests/test_receive_reactors.py`` checks the copies against the installed source.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from cdss.logs import get_logger

if TYPE_CHECKING:
    from pynetdicom.ae import ApplicationEntity
    from pynetdicom.dul import _PDUPrimitiveType

__all__ = ["COPIED_LOOP_DIGESTS", "MAX_WAIT_S", "PYNETDICOM_VERSION", "WakingAssociation", "WakingDUL"]

log = get_logger(__name__)

#: The pynetdicom release whose reactor loops these classes copy.
PYNETDICOM_VERSION = "3.0.4"

#: SHA-256 of the source of the two pynetdicom loops copied here, as released in
#: :data:`PYNETDICOM_VERSION`. A test compares them with the installed pynetdicom: when they
#: differ, pynetdicom changed its loops and the copies here must be brought up to date.
COPIED_LOOP_DIGESTS = {
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803",
    "Association._run_reactor": "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee",
}

#: Longest a reactor sleeps without a wake-up (seconds): the latency bound for what is still
#: noticed by polling (timers, kill flags, the other thread ending).
MAX_WAIT_S = 0.02


class WakingDUL(DULServiceProvider):
    """pynetdicom's DUL service provider, waiting in ``poll`` instead of sleeping 1 ms."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_lock = threading.Lock()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._poller: select.poll | None = None  # the connection's socket and _wake_r
        self._polled: socket.socket | None = None

    # -- wake-ups from other threads ---------------------------------------------------------

    def _poke(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                with contextlib.suppress(OSError):  # full (already poked) or closed
                    self._wake_w.send(b"\0")

    def send_pdu(self, primitive: _PDUPrimitiveType) -> None:
        """Queue a primitive to be sent (as pynetdicom) and wake the reactor to send it."""
        super().send_pdu(primitive)
        self._poke()

    def kill_dul(self) -> None:
        """Stop the reactor (as pynetdicom) without waiting for its next poll."""
        super().kill_dul()
        self._poke()

    def _notify_user(self) -> None:
        wake = getattr(self.assoc, "wake", None)
        if wake is not None:
            wake.set()

    # -- waiting -----------------------------------------------------------------------------

    def _wait_for_work(self) -> None:
        """Block until the peer sent bytes, another thread queued a primitive, or
        :data:`MAX_WAIT_S` passed."""
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return
        transport = self.socket
        sock = transport.socket if transport is not None and transport._is_connected else None
        if sock is None or self._wake_r is None:
            time.sleep(self._run_loop_delay)  # no connection (yet / any more): pynetdicom's pause
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # TLS bytes already decrypted and buffered: poll would not see them
        try:
            if self._poller is None or self._polled is not sock:
                self._poller = select.poll()  # not select(): no FD_SETSIZE limit on busy nodes
                self._poller.register(sock, select.POLLIN)
                self._poller.register(self._wake_r, select.POLLIN)
                self._polled = sock
            events = self._poller.poll(MAX_WAIT_S * 1000)
        except (OSError, ValueError):
            return  # socket closed under us: the next ``ready`` check raises Evt17
        if any(fd == self._wake_r.fileno() for fd, _ in events):
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def _open_waker(self) -> None:
        with self._wake_lock:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)

    def _close_waker(self) -> None:
        with self._wake_lock:
            for end in (self._wake_r, self._wake_w):
                if end is not None:
                    end.close()
            self._wake_r = self._wake_w = None
            self._poller = self._polled = None

    # -- the reactor (pynetdicom 3.0.4 DULServiceProvider.run_reactor; waits changed) --------

    def run_reactor(self) -> None:
        """The DUL thread: pynetdicom's loop, waiting for work instead of sleeping 1 ms."""
        self._open_waker()
        try:
            self._run_loop()
        finally:
            self._close_waker()
            self._notify_user()

    def _run_loop(self) -> None:
        self._idle_timer.start()
        sleep = False

        while True:
            # Let the association reactor off the leash
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True

            if sleep:
                self._wait_for_work()

            if self._kill_thread:
                break

            # ARTIM timer first, so its event is queued ahead of any other of this loop
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            try:
                # Either encode and send a primitive or receive and decode a PDU per loop
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                # the type only: a message about a peer's bytes could quote them (no PHI in logs)
                log.error("dul_reactor_failed", error=type(exc).__name__)
                # As pynetdicom: bypass the state machine, send an A-ABORT, stop both reactors
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return

            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue

            self.state_machine.do_action(event)
            self._notify_user()
            sleep = False


class WakingAssociation(Association):
    """pynetdicom's association, whose acceptor reactor waits for its DUL to wake it.

    Parameters
    ----------
    ae, mode
        As :class:`pynetdicom.association.Association`.
    """

    def __init__(self, ae: ApplicationEntity, mode: str) -> None:
        super().__init__(ae, mode)
        #: Set by the DUL thread after every state-machine action (and when it ends).
        self.wake = threading.Event()
        self.dul = WakingDUL(self)
        # pynetdicom sets the timeouts after creating its DUL (they configure the DUL's timers)
        self.acse_timeout = self.ae.acse_timeout
        self.connection_timeout = self.ae.connection_timeout
        self.dimse_timeout = self.ae.dimse_timeout
        self.network_timeout = self.ae.network_timeout

    def kill(self) -> None:
        """Stop the association thread (as pynetdicom), waking its reactor at once."""
        self.wake.set()
        super().kill()

    # pynetdicom 3.0.4 Association._run_reactor; the 1 ms sleep is a wait on ``self.wake``.
    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self.wake.wait(MAX_WAIT_S)
            self.wake.clear()

            # Paused while the acceptor uses the send_*() methods itself
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            # A completely decoded DIMSE message?
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                self.wake.set()  # more may be queued: look again before waiting

            # Release request from the peer
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.debug("association_released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            # Abort, local or from the peer
            if self.acse.is_aborted():
                # Ensure that EVT_ACSE_RECV fires for subscribers
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            # The DUL thread ended
            if not self.dul.is_alive():
                self.kill()
                return

            # Network timeout
            if self.dul.idle_timer_expired():
                log.error("network_timeout", timeout_s=self.network_timeout)
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return
