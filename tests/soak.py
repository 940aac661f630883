"""Soak: a node under a steady overload for a while, watched for leaks (used by
``tests/test_soak.py`` and ``bench/soak.py``).

1. ``cdss serve`` (defaults: SQLite with fsync, local backend) with Orthanc as the PACS; two
   warm-up images load the models.
2. **Calibration**: a burst of the image pool is pushed and the node's sustained end-to-end rate
   *R* (images per second from the first C-STORE to the last result delivered) is measured.
3. **Soak**: distinct instances (the pool's images with new Study/Series/SOP Instance UIDs) are
   sent at ``factor`` x *R* for ``minutes``, over associations of ``per_association`` images (a
   modality opens one per study), while the node's RSS, open files, threads and queue depth are
   sampled every ``sample_s``.
4. **Drain**: the sender stops; the queue must drain and every acknowledged image must get its
   results delivered.

The baseline for the leak checks is the sample right after calibration (models loaded, every
thread started); the end sample is taken once the queue has drained.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import func, select

from cdss.db import Delivery, DeliveryState, Instance, Job, JobState, Result
from tests.node_process import NodeProcess, storescu, synthetic_images
from tests.peers import Orthanc

__all__ = ["Sample", "SoakReport", "node_status", "run_soak"]


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    open_files: int
    threads: int
    queued: int  # jobs queued or running
    succeeded: int
    undelivered: int
    fds: dict[str, int] = field(default_factory=dict)  # open descriptors by kind (fd_kinds)


@dataclass
class SoakReport:
    rate_calibrated_per_min: float = 0.0
    rate_sent_per_min: float = 0.0
    sent: int = 0
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None
    end: Sample | None = None
    drained: bool = False
    drain_s: float = 0.0
    missing_results: list[str] = field(default_factory=list)
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    loadavg: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        b, e = self.baseline, self.end
        return {
            "rate_calibrated_per_min": round(self.rate_calibrated_per_min, 1),
            "rate_sent_per_min": round(self.rate_sent_per_min, 1),
            "sent": self.sent,
            "acknowledged": len(self.acknowledged),
            "refused": self.refused,
            "drained": self.drained,
            "drain_s": round(self.drain_s, 1),
            "peak_queue": max((s.queued for s in self.samples), default=0),
            "rss_mib": None if not (b and e) else [round(b.rss_mib, 1), round(e.rss_mib, 1)],
            "rss_growth_percent": None if not (b and e) else round(100 * (e.rss_mib / b.rss_mib - 1), 2),
            "open_files": None if not (b and e) else [b.open_files, e.open_files],
            "open_files_by_kind": None if not (b and e) else [b.fds, e.fds],
            "threads": None if not (b and e) else [b.threads, e.threads],
            "missing_results": len(self.missing_results),
            "jobs_by_state": self.jobs_by_state,
            "loadavg_start_end": [self.loadavg[0], self.loadavg[-1]] if self.loadavg else None,
        }


def node_status(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open file descriptors, threads) of a process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


#: SQLite descriptors of one pooled connection: the database, its -wal and its -shm file.
SQLITE_FDS_PER_CONNECTION = 3


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of a process by kind: ``database`` (SQLite files and their -wal/-shm),
    ``socket``, ``pipe``, ``anon`` (eventfd, epoll...), ``file`` (anything else: spool, logs, models).

    The node keeps up to ``pool_size`` pooled database connections open once a burst has needed
    them (SQLAlchemy's QueuePool), so ``database`` may rise to a bound after warm-up; every other
    kind must come back to where it was when the node is idle again.
    """
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed between listdir and readlink
            continue
        if target.startswith("socket:"):
            kind = "socket"
        elif target.startswith("pipe:"):
            kind = "pipe"
        elif target.startswith("anon_inode:"):
            kind = "anon"
        elif target.endswith(
            (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite-wal", ".sqlite-shm")
        ):
            kind = "database"
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _counts(db: Any) -> tuple[int, int, int]:
    with db.session() as s:
        queued = s.execute(
            select(func.count()).select_from(Job).where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
        ).scalar_one()
        succeeded = s.execute(
            select(func.count()).select_from(Job).where(Job.state == JobState.SUCCEEDED)
        ).scalar_one()
        undelivered = s.execute(
            select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.DELIVERED)
        ).scalar_one()
    return int(queued), int(succeeded), int(undelivered)


def _wait_idle(db: Any, total: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued, _, undelivered = _counts(db)
        with db.session() as s:
            jobs = s.execute(select(func.count()).select_from(Job)).scalar_one()
        if jobs >= total and queued == 0 and undelivered == 0:
            return True
        time.sleep(0.5)
    return False


def _fresh(ds: Dataset) -> Dataset:
    out = ds.copy()
    out.StudyInstanceUID = generate_uid()
    out.SeriesInstanceUID = generate_uid()
    out.SOPInstanceUID = generate_uid()
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def run_soak(
    workdir: Path,
    pacs: Orthanc,
    *,
    minutes: float,
    factor: float = 2.0,
    pool_size: int = 16,
    max_side: int = 512,
    per_association: int = 10,
    sample_s: float = 10.0,
    drain_timeout_s: float = 7200.0,
    node_extra: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    say = progress or (lambda _msg: None)
    report = SoakReport()
    report.loadavg.append(_loadavg())
    pool_files = synthetic_images(
        workdir / "pool", [("lumbar_lateral", 500 + i) for i in range(pool_size)], max_side=max_side
    )
    warm = synthetic_images(
        workdir / "warm", [("lumbar_lateral", 900), ("lumbar_lateral", 901)], max_side=max_side
    )
    extra = {"logging": {"level": "WARNING"}}
    for section, values in (node_extra or {}).items():
        extra.setdefault(section, {}).update(values)
    node = NodeProcess(
        workdir / "node",
        destinations=[pacs.destination()],
        extra=extra,
    )
    node.start(timeout=300)
    assert node.proc is not None
    pid = node.proc.pid
    db = node.database()
    try:
        storescu(warm, node.dicom_port)
        if not _wait_idle(db, len(warm), 600):
            raise RuntimeError("the warm-up images did not finish")
        # ---- calibration: sustained end-to-end rate of a burst
        t0 = time.monotonic()
        r = storescu(pool_files, node.dicom_port, timeout=1800)
        if r.failed:
            raise RuntimeError(f"calibration push failed: {r.output[-2000:]}")
        if not _wait_idle(db, len(warm) + len(pool_files), 1800):
            raise RuntimeError("the calibration burst did not finish")
        rate = len(pool_files) / (time.monotonic() - t0)  # images per second
        report.rate_calibrated_per_min = rate * 60
        say(f"calibrated: {rate * 60:.1f} images/min end to end; soaking at {factor:g}x for {minutes:g} min")
        base_total = len(warm) + len(pool_files)
        pool = [dcmread(f) for f in pool_files]
        started = time.monotonic()

        def sample() -> Sample:
            rss, fds, threads = node_status(pid)
            queued, succeeded, undelivered = _counts(db)
            s = Sample(
                time.monotonic() - started, rss, fds, threads, queued, succeeded, undelivered, fd_kinds(pid)
            )
            report.samples.append(s)
            return s

        report.baseline = sample()
        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(sample_s):
                try:
                    sample()
                except Exception:  # a sample must never stop the soak
                    continue

        watcher = threading.Thread(target=sampler, daemon=True)
        watcher.start()
        # ---- soak: paced sending
        period = 1.0 / (factor * rate)
        ae = AE(ae_title="SOAKMOD")
        for context in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in pool}):
            ae.add_requested_context(*context)
        end_at = started + minutes * 60
        next_at = started
        assoc = None
        i = 0
        while time.monotonic() < end_at:
            if assoc is None or not assoc.is_established or i % per_association == 0:
                if assoc is not None and assoc.is_established:
                    assoc.release()
                assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="CDSS")
            ds = _fresh(pool[i % len(pool)])
            i += 1
            rsp = assoc.send_c_store(ds) if assoc.is_established else None
            report.sent += 1
            if rsp is not None and "Status" in rsp and int(rsp.Status) == 0:
                report.acknowledged.append(str(ds.SOPInstanceUID))
            else:
                report.refused += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if assoc is not None and assoc.is_established:
            assoc.release()
        report.rate_sent_per_min = report.sent / ((time.monotonic() - started) / 60)
        say(f"sent {report.sent} ({len(report.acknowledged)} acknowledged); draining")
        # ---- drain
        t_drain = time.monotonic()
        report.drained = _wait_idle(db, base_total + len(report.acknowledged), drain_timeout_s)
        report.drain_s = time.monotonic() - t_drain
        time.sleep(max(1.0, sample_s))  # let the last association threads end
        stop.set()
        watcher.join(timeout=30)
        report.end = sample()
        # ---- every acknowledged image has its results
        with db.session() as s:
            rows = s.execute(
                select(Instance.sop_instance_uid, Job.state, func.count(Result.id))
                .join(Job, Job.instance_id == Instance.id)
                .outerjoin(Result, Result.job_id == Job.id)
                .group_by(Instance.sop_instance_uid, Job.state)
            ).all()
            states = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        by_uid = {uid: (state, n) for uid, state, n in rows}
        report.missing_results = [
            uid
            for uid in report.acknowledged
            if by_uid.get(uid, (None, 0))[0] is not JobState.SUCCEEDED or by_uid[uid][1] < 2
        ]
        report.jobs_by_state = {str(k.value): int(v) for k, v in states}
    finally:
        db.dispose()
        node.stop()
        report.loadavg.append(_loadavg())
    return report
