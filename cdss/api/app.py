"""The FastAPI application: admin/audit API, dashboard, health and metrics."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import compile_path

from cdss import __version__
from cdss.api.node import NodeStatus
from cdss.api.routes import actions, admin, audit, health, records
from cdss.audit.message import AuditSource
from cdss.audit.syslog import AuditForwarder
from cdss.config import Settings
from cdss.logs import get_logger

__all__ = ["create_app"]

log = get_logger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

DESCRIPTION = """\
Admin and audit API of a cdss node (DICOM clinical decision support for spine radiographs).

**Authentication**: `Authorization: Bearer <token>`; create tokens with
`cdss users create NAME --role admin|auditor`. Role `auditor` reads everything; role `admin` also
acts (re-run jobs, retry deliveries, manage tokens). Only `/healthz` and `/readyz` (and `/metrics`
when configured so) answer without a token.

**Audit**: every failed authentication is a 110113 Security Alert; every read of patient data a
110112 Query (or 110103 for images); every read of the audit trail a 110101 Audit Log Used; every
action an event of its own (see docs/audit.md).
"""

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(
    settings: Settings, db: Any, *, node: NodeStatus | None = None, forward_audit: bool = True
) -> FastAPI:
    """Build the API application.

    Parameters
    ----------
    settings
        Node settings (``api``, ``audit``, ``storage`` and ``dicom.ae_title`` are used).
    db
        :class:`cdss.db.Database` (migrated).
    node
        The running node (``cdss serve``) for worker status and to hand re-queued jobs to the
        backend; ``None`` for the standalone ``cdss api``.
    forward_audit
        Start the syslog forwarder (:class:`cdss.audit.syslog.AuditForwarder`) with the app
        when ``audit.syslog_host`` is set. Turn off where another process forwards.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        forwarder = None
        if forward_audit and settings.audit.syslog_host:
            forwarder = AuditForwarder(
                settings.audit,
                db,
                AuditSource.for_node(
                    settings.dicom.ae_title, settings.audit.source_id, settings.audit.enterprise_site_id
                ),
            )
            forwarder.start()
            log.info(
                "audit_forwarding_started",
                receiver=f"{settings.audit.syslog_host}:{settings.audit.syslog_port}",
                protocol=settings.audit.syslog_protocol.value,
            )
        app.state.forwarder = forwarder
        try:
            yield
        finally:
            if forwarder is not None:
                forwarder.stop()

    app = FastAPI(
        title="cdss admin and audit API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "records", "description": "Studies, images, jobs, results, deliveries (audited reads)."},
            {"name": "actions", "description": "Admin actions (audited)."},
            {"name": "audit", "description": "The tamper-evident audit trail (reads are audited)."},
            {"name": "session and administration", "description": "Token identity, tokens, statistics."},
            {"name": "health and metrics", "description": "Liveness, readiness, Prometheus."},
        ],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.node = node
    app.state.forwarder = None

    @functools.cache
    def _allowed_methods() -> list[tuple[re.Pattern[str], set[str]]]:
        out = []
        for path, item in app.openapi()["paths"].items():
            regex, _, _ = compile_path(path)
            out.append((regex, {m.upper() for m in item}))
        return out

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if response.status_code == 405:
            # Starlette names only the first matching route's methods; list every method of the path.
            methods = {m for regex, ms in _allowed_methods() if regex.match(request.url.path) for m in ms}
            if methods:
                response.headers["Allow"] = ", ".join(sorted(methods))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", _CSP)
        if request.url.path.startswith("/api/"):
            # Patient data: never cached by browsers or proxies (thumbnails set their own private cache).
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.include_router(health.router)
    health.add_metrics_route(app, settings.api.metrics_require_token)
    app.include_router(admin.router)
    app.include_router(records.router)
    app.include_router(actions.router)
    app.include_router(audit.router)

    if settings.api.dashboard:
        app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/dashboard/")

    return app
