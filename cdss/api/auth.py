"""Bearer-token authentication, roles and the audit events of API access.

* No or an unknown/revoked token → 401 and a 110113 Security Alert (subtype 110132 *Use of
  Restricted Function*, outcome 4) with the caller's address.
* A valid token without the required role → 403 and the same kind of alert naming the token.
* The first use of a token after ``api.session_idle_s`` of inactivity → 110114 User
  Authentication (subtype Login); ``POST /api/v1/auth/logout`` → 110114 Logout.
* Every read of patient data → 110112 Query (lists, searches) or 110103 DICOM Instances Accessed
  (pixel data); every read of the audit trail → 110101 Audit Log Used; each recorded in the
  transaction that reads, so a read whose audit event cannot be written fails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cdss.api.tokens import find_token
from cdss.audit import Action, EventID, EventType, Outcome, record_event
from cdss.db.models import Role, utcnow

__all__ = [
    "Principal",
    "audit_read",
    "client_address",
    "require_admin",
    "require_reader",
]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="API token from `cdss users create NAME --role admin|auditor` "
    "(header `Authorization: Bearer cdss_…`).",
)

#: ``last_used_at`` is written at most this often per token (keeps reads from writing every time).
_TOUCH_INTERVAL = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    name: str
    role: Role
    source: str | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def client_address(request: Request) -> str | None:
    """The peer address of the HTTP connection (behind a proxy: the proxy's, see docs/admin-api.md)."""
    return request.client.host if request.client else None


def _alert(
    request: Request, *, reason: str, user: str | None, description: str, extra: dict[str, Any] | None = None
) -> None:
    db = request.app.state.db
    with db.session() as session:
        record_event(
            session,
            EventID.SECURITY_ALERT,
            action=Action.EXECUTE,
            outcome=Outcome.MINOR_FAILURE,
            event_type=EventType.USE_OF_RESTRICTED_FUNCTION,
            user=user,
            source=client_address(request),
            description=description,
            detail={"reason": reason, "method": request.method, "path": request.url.path, **(extra or {})},
        )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Resolve the Bearer token to a :class:`Principal` (401 + audit when it fails)."""
    source = client_address(request)
    if credentials is None or not credentials.credentials:
        _alert(request, reason="missing_token", user=None, description="API request without a Bearer token")
        raise _unauthorized("a Bearer token is required (Authorization: Bearer cdss_…)")
    db = request.app.state.db
    settings = request.app.state.settings
    principal: Principal | None = None
    reason, token_name = "unknown_token", None
    with db.session() as session:
        token = find_token(session, credentials.credentials)
        if token is not None and token.active:
            now = utcnow()
            idle = dt.timedelta(seconds=settings.api.session_idle_s)
            if token.last_used_at is None or now - token.last_used_at > idle:
                record_event(
                    session,
                    EventID.USER_AUTHENTICATION,
                    action=Action.EXECUTE,
                    event_type=EventType.LOGIN,
                    user=token.name,
                    source=source,
                    description=f"API token {token.name!r} ({token.role.value}) in use after "
                    + ("first issue" if token.last_used_at is None else "inactivity"),
                    detail={"role": token.role.value, "path": request.url.path},
                )
            if token.last_used_at is None or now - token.last_used_at > _TOUCH_INTERVAL:
                token.last_used_at = now
            principal = Principal(token.name, token.role, source)
        elif token is not None:
            reason, token_name = "revoked_token", token.name
    if principal is None:
        _alert(
            request,
            reason=reason,
            user=token_name,
            description="API request with a revoked token"
            if reason == "revoked_token"
            else "API request with an unknown token",
        )
        raise _unauthorized("the token is not valid (unknown or revoked)")
    return principal


def require_reader(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid token (``auditor`` or ``admin``)."""
    return principal


def require_admin(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A valid ``admin`` token (403 + audit otherwise)."""
    if principal.role is not Role.ADMIN:
        _alert(
            request,
            reason="wrong_role",
            user=principal.name,
            description=f"token {principal.name!r} with role {principal.role.value} tried an admin action",
            extra={"role": principal.role.value, "required": Role.ADMIN.value},
        )
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="this action needs an admin token")
    return principal


Reader = Annotated[Principal, Depends(require_reader)]
Admin = Annotated[Principal, Depends(require_admin)]


def audit_read(
    session: Session,
    request: Request,
    principal: Principal,
    *,
    event: EventID = EventID.QUERY,
    results: int | None = None,
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    description: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Record one read of patient data or of the audit trail by ``principal``."""
    facts: dict[str, Any] = {"path": request.url.path, "query": str(request.query_params)}
    if event is EventID.AUDIT_LOG_USED:
        facts["uri"] = str(request.url.path)
    if results is not None:
        facts["results"] = results
    facts.update(detail or {})
    record_event(
        session,
        event,
        action=Action.READ if event is not EventID.QUERY else Action.EXECUTE,
        user=principal.name,
        source=principal.source,
        study_instance_uid=study_instance_uid,
        patient_id=patient_id,
        accession_number=accession_number,
        description=description or f"{request.method} {request.url.path}",
        detail=facts,
    )
