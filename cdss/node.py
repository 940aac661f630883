"""The running node (``cdss serve``): receiver, job workers, dispatcher, reconciler and admin API.

Start-up order (each step logged):

1. database migrations, spool;
2. audit 110100 *Application Activity* / *Application Start*;
3. resume: leases held by processes of this host that no longer exist (a crash or ``kill -9``)
   are returned to the queue at once, expired leases of other hosts too; every queued job is
   handed to the backend; deliveries left in ``sending`` go back to ``pending``;
4. job backend (local worker threads, or the Celery publisher), dispatcher threads,
   reconciler thread;
5. the DICOM receiver (only now are images accepted);
6. the admin API (uvicorn in a thread) when ``[api] enabled``;
7. a banner saying how to send a study and where the results go.

:meth:`Node.stop` reverses this: no new associations, workers finish their current job (or leave
it to be resumed), pending deliveries stay queued, audit *Application Stop*.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy.engine import make_url

from cdss.api import create_app
from cdss.audit import Action, EventID, EventType, Outcome, record_event
from cdss.config import Analysis, JobBackend, SegProfile, Settings
from cdss.db import Database, DeliveryState, JobState
from cdss.dispatch import Dispatcher, count_deliveries, reconcile_deliveries
from cdss.jobs import count_jobs, create_backend, reconcile_jobs
from cdss.jobs.pipeline import PipelineContext, make_processor
from cdss.jobs.processes import make_registry
from cdss.jobs.states import queued_job_ids
from cdss.logs import exception_frames, get_logger
from cdss.metrics import QUEUE_DEPTH
from cdss.receive import Receiver
from cdss.store import Spool, SpoolArea
from cdss.store.orphans import sweep_orphans

__all__ = ["Node", "NodeStartError", "banner"]

log = get_logger(__name__)

#: Analyses whose models are loaded when a worker starts.
WARM_UP = (Analysis.LUMBAR_LATERAL, Analysis.LUMBAR_AP, Analysis.CERVICAL_OBLIQUE)


class NodeStartError(RuntimeError):
    """The node could not start (the message says which part and what to change)."""


@dataclass
class _Api:
    server: Any
    thread: threading.Thread


def _advertised_host(bind: str) -> str:
    if bind not in ("0.0.0.0", "::", ""):
        return bind
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outward interface
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostname()


def banner(settings: Settings, *, dicom_port: int, api_url: str | None, backend: str) -> str:
    """The start-up text for an imaging engineer: how to send, where results go."""
    d = settings.dicom
    host = _advertised_host(d.bind)
    tls = " --tls (see docs/operations.md)" if d.tls_enabled else ""
    lines = [
        "",
        "cdss node is running",
        f"  DICOM   AE title {d.ae_title} on {host}:{dicom_port}" + (" (TLS)" if d.tls_enabled else ""),
        f"  send    storescu -aec {d.ae_title} {host} {dicom_port} file.dcm{tls}",
        f"          (test the connection: echoscu -aec {d.ae_title} {host} {dicom_port})",
    ]
    if d.allowed_calling_aets:
        lines.append(f"          allowed calling AE titles: {', '.join(d.allowed_calling_aets)}")
    if settings.destinations:
        for dest in settings.destinations:
            kinds = [
                k
                for k, on in (
                    ("SEG", dest.send_seg),
                    ("SR", dest.send_sr),
                    ("GSPS", dest.send_gsps),
                    ("SC", dest.send_sc),
                )
                if on
            ]
            profile = dest.seg_profile or settings.results.seg_profile
            if dest.send_seg and profile is not SegProfile.STANDARD:
                kinds[0] = f"SEG {profile.value} profile"
            lines.append(
                f"  results -> {dest.name}: {dest.ae_title}@{dest.host}:{dest.port} ({', '.join(kinds)})"
                + (" TLS" if dest.tls else "")
            )
    if settings.dispatch.return_to_calling_ae:
        peers = ", ".join(f"{p.ae_title}@{p.host}:{p.port}" for p in settings.peers) or "none configured"
        lines.append(f"  results -> the calling AE, when listed in [[peers]] ({peers})")
    if not settings.destinations and not settings.dispatch.return_to_calling_ae:
        lines += [
            "  WARNING no [[destinations]] configured: results stay in the spool",
            f"          ({settings.storage.path}) and in the admin API; add a PACS in the config file:",
            '          [[destinations]] name = "pacs"  ae_title = "PACS"  host = "..."  port = 104',
        ]
    lines.append(
        f"  jobs    backend {backend}, {settings.jobs.workers} worker(s), models on {settings.models.device}"
    )
    if api_url:
        lines.append(f"  admin   {api_url}  (dashboard {api_url}/dashboard/, metrics {api_url}/metrics)")
    lines.append(f"  data    database {_safe_url(settings.database.url)}, spool {settings.storage.path}")
    lines.append("  stop    Ctrl-C (or SIGTERM); unfinished work resumes on the next start")
    return "\n".join(lines) + "\n"


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid url>"


class Node:
    """One cdss node process.

    Parameters
    ----------
    settings
        Effective settings (:func:`cdss.config.load_settings`).
    registry_factory
        Builds the model registry (default: :func:`cdss.jobs.processes.make_registry`, in this process or in ``models.processes`` worker processes).
    """

    def __init__(self, settings: Settings, *, registry_factory: Callable[[], Any] | None = None):
        self.settings = settings
        self._registry_factory = registry_factory
        self.db: Database | None = None
        self.spool: Any = None
        self.registry: Any = None
        self.backend: Any = None
        self.dispatcher: Dispatcher | None = None
        self.receiver: Any = None
        self._api: _Api | None = None
        self._stop = threading.Event()
        self._reconciler: threading.Thread | None = None
        self.started = False
        self._start_audited = False
        self.api_url: str | None = None

    # ------------------------------------------------------------------ NodeStatus (cdss.api)
    def workers_expected(self) -> int:
        local = self.settings.jobs.workers if self.settings.jobs.backend == JobBackend.LOCAL else 0
        return local + self.settings.dispatch.workers

    def workers_alive(self) -> int:
        alive = self.dispatcher.alive() if self.dispatcher else 0
        if self.backend is not None and self.backend.name == "local":
            alive += self.backend.alive()
        return alive

    def submit_job(self, job_id: int) -> None:
        if self.backend is not None:
            self.backend.submit(job_id)

    def wake_dispatch(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def broker_status(self) -> tuple[bool, str] | None:
        """Celery backend: whether the broker is reachable (``/readyz``); ``None`` without a broker."""
        status = getattr(self.backend, "broker_status", None)
        return status() if callable(status) else None

    def queue_depth(self) -> Mapping[str, int]:
        if self.db is None:
            return {}
        jobs, deliveries = count_jobs(self.db), count_deliveries(self.db)
        return {"jobs": jobs[JobState.QUEUED], "deliveries": deliveries[DeliveryState.PENDING]}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start every part (see the module docstring); raises :class:`NodeStartError`."""
        s = self.settings
        try:
            self.db = Database(s.database.url, pool_size=s.database.pool_size, echo=s.database.echo)
        except Exception as exc:
            raise NodeStartError(
                f"database {_safe_url(s.database.url)} is not usable ({type(exc).__name__}: {exc}); "
                "check [database] url"
            ) from exc
        self.spool = Spool(s.storage)
        self._activity(EventType.APPLICATION_START, "node started", Outcome.SUCCESS)
        self._start_audited = True

        try:
            sweep_orphans(self.db, self.spool, SpoolArea.RESULTS)
        except Exception as exc:  # housekeeping must not stop the node
            log.error(
                "result orphan sweep failed", error_type=type(exc).__name__, where=exception_frames(exc)
            )
        requeued = reconcile_jobs(self.db)
        sent_back = reconcile_deliveries(self.db)
        if requeued.requeued or requeued.dead or sent_back:
            log.info(
                "resumed work left by a previous process",
                jobs_requeued=len(requeued.requeued),
                jobs_dead=len(requeued.dead),
                deliveries_requeued=len(sent_back),
            )

        processor = None
        prepare = None
        if s.jobs.backend == JobBackend.LOCAL and s.jobs.workers > 0:
            self.registry = self._make_registry()
            ctx = PipelineContext(
                s, self.db, self.spool, self.registry, on_results=lambda _job: self.wake_dispatch()
            )
            processor = make_processor(ctx)
            prepare = self._warm_up
        self.backend = create_backend(s.jobs, self.db, processor, prepare=prepare)
        self.backend.start()
        queued = queued_job_ids(self.db)
        if queued:
            log.info("resuming queued jobs", count=len(queued))
            if self.backend.name == "local":
                self.backend.submit_many(queued)
        self.dispatcher = Dispatcher(s, self.db, self.spool)
        self.dispatcher.start()
        self._stop.clear()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="cdss-reconciler", daemon=True)
        self._reconciler.start()

        self.receiver = Receiver(s, self.db, self.spool, on_job_created=self.backend.submit)
        try:
            self.receiver.start()
        except OSError as exc:
            self.stop()
            raise NodeStartError(
                f"cannot listen for DICOM on {s.dicom.bind}:{s.dicom.port} ({exc}); "
                "another process uses the port? set [dicom] port"
            ) from exc
        self._start_api()
        self.started = True
        for p in s.peers:
            log.debug("peer", ae_title=p.ae_title, host=p.host, port=p.port)

    def banner(self) -> str:
        port = self.receiver.port if self.receiver is not None else self.settings.dicom.port
        return banner(
            self.settings, dicom_port=port, api_url=self.api_url, backend=self.settings.jobs.backend.value
        )

    def wait(self) -> None:
        """Block until :meth:`request_stop` (e.g. from a signal handler)."""
        while not self._stop.wait(0.5):
            pass

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every part; unfinished jobs and deliveries stay in the database."""
        self._stop.set()
        if self.receiver is not None:
            try:
                self.receiver.stop()
            except Exception as exc:
                log.error("receiver stop failed", error_type=type(exc).__name__, where=exception_frames(exc))
        if self.backend is not None:
            self.backend.stop(timeout=timeout)
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout=timeout)
        close = getattr(self.registry, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                log.error(
                    "model registry close failed", error_type=type(exc).__name__, where=exception_frames(exc)
                )
        if self._reconciler is not None:
            self._reconciler.join(timeout=10)
        self._stop_api()
        if self.db is not None:
            if self._start_audited:
                self._activity(EventType.APPLICATION_STOP, "node stopped", Outcome.SUCCESS)
                self._start_audited = False
            self.db.dispose()
        self.started = False

    # ------------------------------------------------------------------ parts
    def _make_registry(self) -> Any:
        if self._registry_factory is not None:
            return self._registry_factory()
        return make_registry(self.settings.models, workers=self.settings.jobs.workers)

    def _warm_up(self) -> None:
        started = time.monotonic()
        warm = getattr(self.registry, "warm_up", None)
        if callable(warm):
            warm(list(WARM_UP))
            log.info(
                "models loaded",
                seconds=round(time.monotonic() - started, 1),
                device=self.settings.models.device,
                models=getattr(self.registry, "loaded", lambda: [])(),
            )

    def _activity(self, kind: EventType, text: str, outcome: Outcome) -> None:
        assert self.db is not None
        try:
            with self.db.session() as session:
                record_event(
                    session,
                    EventID.APPLICATION_ACTIVITY,
                    action=Action.EXECUTE,
                    outcome=outcome,
                    event_type=kind,
                    user="cdss",
                    source=socket.gethostname(),
                    description=text,
                    detail={
                        "component": "node",
                        "ae_title": self.settings.dicom.ae_title,
                        "dicom_port": self.settings.dicom.port,
                        "backend": self.settings.jobs.backend.value,
                    },
                )
        except Exception as exc:
            log.error("could not record application activity", error_type=type(exc).__name__)

    def _reconcile_loop(self) -> None:
        assert self.db is not None
        interval = self.settings.jobs.reconcile_interval_s
        while not self._stop.wait(interval):
            try:
                report = reconcile_jobs(self.db)
                if report.requeued:
                    log.warning("jobs whose worker vanished were queued again", job_ids=report.requeued)
                    self.backend.submit_many(report.requeued)
                if report.dead:
                    log.error("jobs dead after losing their worker repeatedly", job_ids=report.dead)
                if reconcile_deliveries(self.db):
                    self.wake_dispatch()
                depth = self.queue_depth()
                QUEUE_DEPTH.labels(queue="jobs").set(depth.get("jobs", 0))
                QUEUE_DEPTH.labels(queue="deliveries").set(depth.get("deliveries", 0))
            except Exception as exc:
                log.error("reconciler error", error_type=type(exc).__name__, where=exception_frames(exc))

    def _start_api(self) -> None:
        s = self.settings
        if not s.api.enabled:
            return
        app = create_app(s, self.db, node=self)
        config = uvicorn.Config(
            app,
            host=s.api.host,
            port=s.api.port,
            log_level="warning",
            access_log=False,  # URLs carry identifiers in query strings
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="cdss-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            server.should_exit = True
            thread.join(timeout=5)
            self.stop()
            raise NodeStartError(
                f"admin API could not listen on {s.api.host}:{s.api.port} (port in use?); "
                "set [api] port, or [api] enabled = false"
            )
        self._api = _Api(server, thread)
        self.api_url = f"http://{s.api.host}:{s.api.port}"

    def _stop_api(self) -> None:
        if self._api is None:
            return
        self._api.server.should_exit = True
        self._api.thread.join(timeout=10)
        self._api = None
