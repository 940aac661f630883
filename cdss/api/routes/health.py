"""Liveness, readiness and Prometheus metrics.

``/healthz`` and ``/readyz`` are anonymous and reveal no patient data (counts and free space only).
``/metrics`` needs a token unless ``api.metrics_require_token = false``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text

from cdss.api.auth import require_reader
from cdss.api.routes.admin import collect_stats
from cdss.api.routes.records import AUTH_ERRORS
from cdss.api.schemas import CheckOut, HealthOut, ReadyOut
from cdss.db.models import AuditEvent
from cdss.metrics import QUEUE_DEPTH, REGISTRY

router = APIRouter(tags=["health and metrics"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness (anonymous)")
def healthz() -> Any:
    """The process answers HTTP. Nothing else is checked."""
    return HealthOut(status="ok")


def _free_mb(path: Path) -> float:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / (1024 * 1024)


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness (anonymous)",
    responses={503: {"model": ReadyOut, "description": "A check failed; `checks` says which."}},
)
def readyz(request: Request) -> Any:
    """Database reachable, spool above its free-space watermark, every configured worker alive,
    and (Celery backend) the broker reachable."""
    settings = request.app.state.settings
    node = request.app.state.node
    checks: dict[str, CheckOut] = {}
    try:
        with request.app.state.db.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = CheckOut(ok=True, detail=f"{request.app.state.db.dialect} reachable")
    except Exception as exc:
        checks["database"] = CheckOut(ok=False, detail=f"database unreachable ({type(exc).__name__})")
    try:
        free = _free_mb(settings.storage.path)
        watermark = settings.storage.min_free_mb
        checks["spool"] = CheckOut(
            ok=free >= watermark, detail=f"{free:.0f} MiB free, watermark {watermark} MiB"
        )
    except OSError as exc:
        checks["spool"] = CheckOut(ok=False, detail=f"spool not accessible ({type(exc).__name__})")
    if node is None:
        checks["workers"] = CheckOut(ok=True, detail="no workers in this process (standalone API)")
    else:
        try:
            alive, expected = int(node.workers_alive()), int(node.workers_expected())
            checks["workers"] = CheckOut(ok=alive >= expected, detail=f"{alive} of {expected} workers alive")
        except Exception as exc:
            checks["workers"] = CheckOut(ok=False, detail=f"worker status unavailable ({type(exc).__name__})")
    broker_status = getattr(node, "broker_status", None)
    if callable(broker_status):
        try:
            broker = broker_status()
        except Exception as exc:
            broker = (False, f"broker status unavailable ({type(exc).__name__})")
        if broker is not None:
            checks["broker"] = CheckOut(ok=bool(broker[0]), detail=str(broker[1]))
    body = ReadyOut(ready=all(c.ok for c in checks.values()), checks=checks)
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump(mode="json"))


def _db_metrics(request: Request) -> bytes:
    """Gauges read from the database at scrape time (correct across processes and restarts)."""
    registry = CollectorRegistry(auto_describe=True)
    jobs = Gauge("cdss_jobs", "Analysis jobs in the database, by state.", ["state"], registry=registry)
    deliveries = Gauge(
        "cdss_deliveries", "Deliveries in the database, by state.", ["state"], registry=registry
    )
    received = Gauge("cdss_instances_stored", "Instances in the database.", registry=registry)
    head = Gauge("cdss_audit_chain_head_seq", "Newest audit event seq (chain head).", registry=registry)
    with request.app.state.db.session() as session:
        stats = collect_stats(session, request.app.state.node)
        head.set(session.execute(select(func.coalesce(func.max(AuditEvent.seq), 0))).scalar_one())
    for state, n in stats.jobs.items():
        jobs.labels(state).set(n)
    for state, n in stats.deliveries.items():
        deliveries.labels(state).set(n)
    received.set(stats.received)
    for queue, n in stats.queue_depth.items():
        QUEUE_DEPTH.labels(queue).set(n)
    return generate_latest(registry)


def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition: the node's process metrics plus database gauges."""
    db_part = _db_metrics(request)
    return Response(content=generate_latest(REGISTRY) + db_part, media_type=CONTENT_TYPE_LATEST)


def add_metrics_route(app: Any, require_token: bool) -> None:
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        tags=["health and metrics"],
        summary="Prometheus metrics" + ("" if require_token else " (anonymous)"),
        dependencies=[Depends(require_reader)] if require_token else [],
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                "description": "Prometheus text format 0.0.4.",
            },
            **(AUTH_ERRORS if require_token else {}),
        },
    )
