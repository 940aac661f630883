"""The dispatcher: threads that send due deliveries, one association per destination batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

from cdss.config import Settings
from cdss.db import Database
from cdss.dispatch.scu import SendItem, Target, send_batch
from cdss.dispatch.states import (
    ClaimedDelivery,
    RecordReport,
    SendOutcome,
    claim_batch,
    record_outcomes,
)
from cdss.leases import new_owner
from cdss.logs import exception_frames, get_logger
from cdss.metrics import DELIVERIES, DELIVERY_SECONDS, END_TO_END_SECONDS

__all__ = ["Dispatcher", "SpoolPaths", "target_for"]

log = get_logger(__name__)


class SpoolPaths(Protocol):
    """What the dispatcher needs from :class:`cdss.store.Spool`."""

    def path(self, key: str) -> Path: ...


def target_for(settings: Settings, claimed: ClaimedDelivery) -> Target:
    """Connection details for a claimed delivery.

    The address (AE title, host, port) is the one stored with the delivery; TLS and the calling
    AE title come from the destination of that name in the current configuration (defaults
    when it was removed, or for return-to-calling-AE deliveries).
    """
    dest = next((d for d in settings.destinations if d.name == claimed.destination), None)
    calling = (dest.calling_ae_title if dest else None) or settings.dicom.ae_title
    return Target(
        name=claimed.destination,
        ae_title=claimed.ae_title,
        host=claimed.host,
        port=claimed.port,
        calling_ae_title=calling,
        tls=bool(dest and dest.tls),
        tls_ca_certificates=dest.tls_ca_certificates if dest else None,
        tls_certificate=dest.tls_certificate if dest else None,
        tls_private_key=dest.tls_private_key if dest else None,
    )


class Dispatcher:
    """Sends result objects to their destinations (``dispatch.workers`` threads).

    Parameters
    ----------
    settings
        Node settings (``[dispatch]``, ``[[destinations]]``, ``dicom.ae_title``).
    db
        The node database.
    spool
        Resolves result spool keys to files.
    """

    def __init__(self, settings: Settings, db: Database, spool: SpoolPaths):
        self.settings = settings
        self.db = db
        self.spool = spool
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._signals = 0
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._stop.clear()
        for i in range(self.settings.dispatch.workers):
            owner = new_owner("dispatch")
            t = threading.Thread(target=self._loop, args=(owner,), name=f"cdss-dispatch-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()

    def wake(self) -> None:
        """A delivery became due (new results, a retry): stop idling."""
        with self._wake:
            self._signals += 1
            self._wake.notify_all()

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ work
    def run_once(self, owner: str | None = None) -> RecordReport | None:
        """Claim one batch for one destination, send it and record the outcomes.

        Returns ``None`` when nothing was due.
        """
        owner = owner or new_owner("dispatch")
        d = self.settings.dispatch
        batch = claim_batch(self.db, owner, d.lease_s, d.batch_size)
        if not batch:
            return None
        target = target_for(self.settings, batch[0])
        items = [SendItem(c.id, self.spool.path(c.spool_key)) for c in batch]
        started = time.monotonic()
        try:
            sent = send_batch(
                target,
                items,
                connect_timeout_s=d.connect_timeout_s,
                dimse_timeout_s=max(30.0, self.settings.dicom.dimse_timeout_s),
            )
        except Exception as exc:  # TLS misconfiguration etc.: a failed attempt, not a dead thread
            log.error(
                "sending failed",
                destination=target.name,
                error_type=type(exc).__name__,
                where=exception_frames(exc),
            )
            sent = {c.id: SendOutcome(None, f"sending to {target.describe()} failed: {exc}") for c in batch}
        elapsed = time.monotonic() - started
        outcomes = [(c, sent.get(c.id, SendOutcome(None, "not attempted"))) for c in batch]
        report = record_outcomes(self.db, owner, outcomes, d)
        self._observe(report, elapsed, len(batch), target, outcomes)
        return report

    def _observe(
        self,
        report: RecordReport,
        elapsed: float,
        n: int,
        target: Target,
        outcomes: list[tuple[ClaimedDelivery, SendOutcome]],
    ) -> None:
        for _ in report.delivered:
            DELIVERY_SECONDS.observe(elapsed / max(1, n))
        DELIVERIES.labels(outcome="delivered").inc(len(report.delivered))
        DELIVERIES.labels(outcome="retry").inc(len(report.retry))
        DELIVERIES.labels(outcome="dead").inc(len(report.dead))
        for seconds in report.completed_jobs.values():
            END_TO_END_SECONDS.observe(seconds)
        if report.delivered:
            log.info("results delivered", destination=target.name, objects=len(report.delivered))
        failures = [o.error for c, o in outcomes if not o.delivered and c.id not in report.lost]
        if report.retry:
            log.warning(
                "delivery failed; will retry",
                destination=target.name,
                objects=len(report.retry),
                reason=failures[0] if failures else None,
            )
        if report.dead:
            log.error(
                "delivery dead-lettered; retry with `cdss deliveries retry ID`",
                destination=target.name,
                delivery_ids=report.dead,
                reason=failures[0] if failures else None,
            )

    def _loop(self, owner: str) -> None:
        poll = self.settings.dispatch.poll_interval_s
        while not self._stop.is_set():
            try:
                report = self.run_once(owner)
            except Exception as exc:
                log.error("dispatcher error", error_type=type(exc).__name__, where=exception_frames(exc))
                self._stop.wait(min(30.0, poll * 5))
                continue
            if report is not None:
                continue
            with self._wake:
                if self._signals == 0 and not self._stop.is_set():
                    self._wake.wait(timeout=poll)
                self._signals = max(0, self._signals - 1)
