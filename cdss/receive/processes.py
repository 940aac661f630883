"""More receiver processes on the one DICOM port (``dicom.receiver_processes`` > 1).

pynetdicom serves every association on a thread of one interpreter, so simultaneous modalities
share one GIL. With ``receiver_processes = N`` the node's :class:`~cdss.receive.server.Receiver`
starts N - 1 child processes that listen on the same port with ``SO_REUSEPORT``; the kernel
spreads new connections over the N listening sockets. Every process runs the same
:class:`~cdss.receive.ingest.Ingestor` on the same database and spool, so the acknowledgement
rule is unchanged: 0x0000 only after fsync and commit, in whichever process took the
association.

What a child sends back to the node over a queue, and the node does with it:

* ``("job", id)`` → ``on_job_created(id)`` (the job backend learns about the new job at once);
* ``("store", status, reason, duplicate, seconds)`` → :func:`~cdss.receive.ingest.count_store`
  (``/metrics`` counts every C-STORE, whatever process answered it);
* ``("rejected", reason)`` → ``cdss_associations_rejected_total``;
* ``("ready", pid)`` once it listens.

A child that dies is started again by the node's supervisor thread (its open associations are
lost: the modality retries them, nothing acknowledged is lost). A child whose node died
(``kill -9``) notices that its parent changed and exits within half a second, so a restarted
node does not share its port with orphans.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from typing import Any

from cdss.config import Settings
from cdss.logs import exception_frames, get_logger
from cdss.metrics import ASSOCIATIONS_REJECTED
from cdss.receive.ingest import count_store

__all__ = ["ChildMain", "ReceiverPool"]

#: The function a child runs: ``(settings as JSON data, port, event queue, stop event)``; it
#: must be a module-level function (spawned processes import it by name).
ChildMain = Callable[[dict[str, Any], int, Any, Any], None]

log = get_logger(__name__)

_CTX = mp.get_context("spawn")  # no fork of a threaded parent (pynetdicom, SQLAlchemy pools)


class ReceiverPool:
    """The child receiver processes of a :class:`~cdss.receive.server.Receiver`.

    Parameters
    ----------
    settings
        The node's settings (passed to each child).
    port
        The port the node's own receiver bound (with ``SO_REUSEPORT``); children bind it too.
    count
        Number of child processes (``dicom.receiver_processes - 1``).
    on_job_created
        The node's callback for a job a child created.
    child_main
        What each child runs (:func:`cdss.receive.server.run_child_receiver`).
    """

    def __init__(
        self,
        settings: Settings,
        port: int,
        count: int,
        on_job_created: Callable[[int], None] | None,
        child_main: ChildMain,
    ):
        self.child_main = child_main
        self.settings = settings
        self.port = port
        self.count = count
        self.on_job_created = on_job_created
        self._events: Any = _CTX.Queue()
        self._stop: Any = _CTX.Event()
        self._procs: list[SpawnProcess] = []
        self._ready: set[int] = set()
        self._ready_cv = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 120.0) -> None:
        """Start the children and wait until each listens (or ``timeout`` passed; logged)."""
        self._stopping.clear()
        self._stop.clear()
        self._procs = [self._spawn() for _ in range(self.count)]
        self._thread = threading.Thread(target=self._loop, name="cdss-receiver-pool", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        with self._ready_cv:
            while len(self._ready) < self.count and time.monotonic() < deadline:
                if all(p.exitcode is not None for p in self._procs):
                    break
                self._ready_cv.wait(timeout=0.2)
        if len(self._ready) < self.count:
            log.error(
                "receiver processes did not all start; the node receives with fewer",
                started=len(self._ready),
                expected=self.count,
            )
        else:
            log.info("receiver processes listening", processes=self.count + 1, port=self.port)

    def stop(self, timeout: float = 15.0) -> None:
        """Tell every child to stop (they abort their open associations), then reap them."""
        self._stopping.set()
        self._stop.set()
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain()
        self._procs = []
        with contextlib.suppress(Exception):
            self._events.close()

    def alive(self) -> int:
        """Child processes running now."""
        return sum(p.is_alive() for p in self._procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None and p.is_alive()]

    # ------------------------------------------------------------------ internals
    def _spawn(self) -> SpawnProcess:
        data = self.settings.model_dump(mode="json")
        proc = _CTX.Process(
            target=self.child_main,
            args=(data, self.port, self._events, self._stop),
            name="cdss-receiver",
            daemon=True,
        )
        proc.start()
        return proc

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "job" and self.on_job_created is not None:
            try:
                self.on_job_created(int(event[1]))
            except Exception as exc:
                log.error("on_job_created_failed", job_id=event[1], error=type(exc).__name__)
        elif kind == "store":
            _, status, reason, duplicate, seconds = event
            count_store(int(status), str(reason), bool(duplicate), float(seconds))
        elif kind == "rejected":
            ASSOCIATIONS_REJECTED.labels(str(event[1])).inc()
        elif kind == "ready":
            with self._ready_cv:
                self._ready.add(int(event[1]))
                self._ready_cv.notify_all()

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            self._handle(event)

    def _loop(self) -> None:
        backoff: dict[int, float] = {}
        while not self._stopping.is_set():
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                event = None
            except (OSError, ValueError, EOFError):  # queue closed at shutdown
                return
            if event is not None:
                try:
                    self._handle(event)
                except Exception as exc:
                    log.error(
                        "receiver pool event failed", error=type(exc).__name__, where=exception_frames(exc)
                    )
            if self._stopping.is_set():
                return
            for i, proc in enumerate(self._procs):
                if proc.exitcode is None:
                    continue
                now = time.monotonic()
                if now < backoff.get(i, 0.0):
                    continue
                log.error("receiver process died; starting it again", pid=proc.pid, exitcode=proc.exitcode)
                with self._ready_cv:
                    self._ready.discard(proc.pid or -1)
                self._procs[i] = self._spawn()
                backoff[i] = now + 5.0
