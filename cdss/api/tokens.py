"""API tokens: random secrets shown once, stored as SHA-256, each with one role.

Roles: ``admin`` may act (re-run jobs, retry deliveries, manage tokens) and read; ``auditor``
may only read (records, audit trail, metrics). Creating and revoking a token are audit events
(110113 Security Alert, subtype 110137 User Security Attributes Changed).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.audit import Action, EventID, EventType, record_event
from cdss.db.models import ApiToken, Role, utcnow

__all__ = [
    "TOKEN_PREFIX",
    "IssuedToken",
    "TokenError",
    "UnknownToken",
    "create_token",
    "find_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

#: Every token starts with this, so that secret scanners and people recognise it.
TOKEN_PREFIX = "cdss_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class TokenError(ValueError):
    """A token name is invalid, taken, or unknown; the message says which and what to do."""


class UnknownToken(TokenError):
    """No token has that name."""


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token: ``secret`` is shown once and never stored."""

    name: str
    role: Role
    secret: str


def hash_token(secret: str) -> str:
    """SHA-256 hex digest of a token (what the database stores)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 bits of entropy


def create_token(
    session: Session, name: str, role: Role | str, *, actor: str, source: str | None = None
) -> IssuedToken:
    """Create a token named ``name`` with ``role`` (audited in the same transaction).

    Parameters
    ----------
    actor
        Who creates it: ``cli:<os user>`` or the admin token's name.
    source
        Address of the request (``None`` on the command line).

    Raises
    ------
    TokenError
        ``name`` is not 1-64 characters of ``A-Z a-z 0-9 . _ @ -``, is in use, or was revoked
        (names are never reused, so the audit trail stays unambiguous).
    """
    role = Role(role)
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"token name {name!r} is invalid: use 1-64 characters A-Z a-z 0-9 . _ @ - (starting with a letter or digit)"
        )
    existing = session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
    if existing is not None:
        if existing.active:
            raise TokenError(f"a token named {name!r} already exists (role {existing.role.value})")
        raise TokenError(
            f"the token named {name!r} was revoked; names are not reused so that the audit trail stays "
            f"unambiguous — choose another name (e.g. {name}-2)"
        )
    secret = _generate()
    session.add(ApiToken(name=name, role=role, token_sha256=hash_token(secret), active=True))
    record_event(
        session,
        EventID.SECURITY_ALERT,
        action=Action.CREATE,
        event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
        user=actor,
        source=source,
        description=f"API token {name!r} created with role {role.value}",
        detail={"subject": f"api-token:{name}", "token": name, "role": role.value, "change": "created"},
    )
    session.flush()
    return IssuedToken(name, role, secret)


def revoke_token(session: Session, name: str, *, actor: str, source: str | None = None) -> ApiToken:
    """Revoke the token ``name`` (audited). Revoking twice is an error.

    Raises
    ------
    TokenError
        No token has that name, or it is already revoked.
    """
    token = session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
    if token is None:
        raise UnknownToken(f"no token named {name!r} (see `cdss users list`)")
    if not token.active:
        raise TokenError(f"token {name!r} was already revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    token.active = False
    token.revoked_at = utcnow()
    record_event(
        session,
        EventID.SECURITY_ALERT,
        action=Action.DELETE,
        event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
        user=actor,
        source=source,
        description=f"API token {name!r} (role {token.role.value}) revoked",
        detail={"subject": f"api-token:{name}", "token": name, "role": token.role.value, "change": "revoked"},
    )
    session.flush()
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, active and revoked, by name."""
    return list(session.execute(select(ApiToken).order_by(ApiToken.name)).scalars())


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The token whose SHA-256 matches ``secret`` (active or not), or ``None``."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    return session.execute(
        select(ApiToken).where(ApiToken.token_sha256 == hash_token(secret))
    ).scalar_one_or_none()
