"""Session, tokens and queue statistics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from sqlalchemy import func, select

from cdss.api.auth import Admin, Reader
from cdss.api.routes.records import AUTH_ERRORS, NOT_FOUND
from cdss.api.schemas import ErrorOut, StatsOut, TokenCreate, TokenCreated, TokenOut, WhoAmI, WorkersOut
from cdss.api.tokens import TokenError, UnknownToken, create_token, list_tokens, revoke_token
from cdss.audit import Action, EventID, EventType, record_event
from cdss.db.models import Delivery, DeliveryState, Instance, Job, JobState, Result, Study, utcnow

router = APIRouter(prefix="/api/v1", tags=["session and administration"])


@router.get(
    "/auth/whoami", response_model=WhoAmI, summary="The caller's token name and role", responses=AUTH_ERRORS
)
def whoami(principal: Reader) -> Any:
    return WhoAmI(name=principal.name, role=principal.role)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Record the end of a dashboard session",
    responses=AUTH_ERRORS,
)
def logout(request: Request, principal: Reader) -> Response:
    """Audited as 110114 User Authentication / Logout. The token stays valid (revoke it to end it)."""
    with request.app.state.db.session() as session:
        record_event(
            session,
            EventID.USER_AUTHENTICATION,
            action=Action.EXECUTE,
            event_type=EventType.LOGOUT,
            user=principal.name,
            source=principal.source,
            description=f"API token {principal.name!r} logged out of the dashboard",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def collect_stats(session: Any, node: Any) -> StatsOut:
    """Counts per state and totals (no patient data); also used for the Prometheus gauges."""
    jobs = dict.fromkeys((s.value for s in JobState), 0)
    jobs.update({s.value: n for s, n in session.execute(select(Job.state, func.count()).group_by(Job.state))})
    deliveries = dict.fromkeys((s.value for s in DeliveryState), 0)
    deliveries.update(
        {
            s.value: n
            for s, n in session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
        }
    )
    received = session.execute(select(func.count(Instance.id))).scalar_one()
    studies = session.execute(select(func.count(Study.id))).scalar_one()
    results = session.execute(select(func.count(Result.id))).scalar_one()
    workers = None
    backend = None
    if node is not None:
        workers = WorkersOut(alive=int(node.workers_alive()), expected=int(node.workers_expected()))
        depth = getattr(node, "queue_depth", None)
        if depth is not None:
            backend = {str(k): int(v) for k, v in dict(depth()).items()}
    return StatsOut(
        generated_at=utcnow(),
        jobs=jobs,
        deliveries=deliveries,
        received=received,
        studies=studies,
        analysed=jobs[JobState.SUCCEEDED.value],
        not_applicable=jobs[JobState.NOT_APPLICABLE.value],
        results=results,
        delivered=deliveries[DeliveryState.DELIVERED.value],
        failed=jobs[JobState.DEAD.value] + deliveries[DeliveryState.DEAD.value],
        queue_depth={
            "jobs": jobs[JobState.QUEUED.value],
            "deliveries": deliveries[DeliveryState.PENDING.value],
        },
        workers=workers,
        backend_queue_depth=backend,
    )


@router.get(
    "/stats",
    response_model=StatsOut,
    summary="Queue depth and counters (no patient data; not audited)",
    responses=AUTH_ERRORS,
)
def stats(request: Request, principal: Reader) -> Any:
    with request.app.state.db.session() as session:
        return collect_stats(session, request.app.state.node)


# ------------------------------------------------------------------ tokens
TokenName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]


@router.get(
    "/tokens", response_model=list[TokenOut], summary="List API tokens (admin)", responses=AUTH_ERRORS
)
def get_tokens(request: Request, principal: Admin) -> Any:
    with request.app.state.db.session() as session:
        return [TokenOut.model_validate(t) for t in list_tokens(session)]


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API token (admin); the secret is in the response only",
    responses={
        **AUTH_ERRORS,
        400: {"model": ErrorOut, "description": "The body is not valid JSON."},
        409: {"model": ErrorOut, "description": "The name is taken or was revoked."},
    },
)
def post_token(request: Request, principal: Admin, body: TokenCreate) -> Any:
    try:
        with request.app.state.db.session() as session:
            issued = create_token(
                session, body.name, body.role, actor=principal.name, source=principal.source
            )
            token = next(t for t in list_tokens(session) if t.name == issued.name)
            out = TokenCreated(**TokenOut.model_validate(token).model_dump(), token=issued.secret)
    except TokenError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return out


@router.delete(
    "/tokens/{name}",
    response_model=TokenOut,
    summary="Revoke an API token (admin)",
    responses={**AUTH_ERRORS, **NOT_FOUND, 409: {"model": ErrorOut, "description": "Already revoked."}},
)
def delete_token(request: Request, principal: Admin, name: TokenName) -> Any:
    try:
        with request.app.state.db.session() as session:
            token = revoke_token(session, name, actor=principal.name, source=principal.source)
            out = TokenOut.model_validate(token)
    except TokenError as exc:
        code = 404 if isinstance(exc, UnknownToken) else 409
        raise HTTPException(status_code=code, detail=str(exc)) from exc
    return out
