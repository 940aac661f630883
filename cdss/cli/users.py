"""``cdss users ...``: API tokens for the admin API and dashboard (roles admin / auditor)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cdss.cli.common import cli_actor, settings_or_exit
from cdss.db import Database
from cdss.db.models import Role

app = typer.Typer(help="API tokens (admin: act and read; auditor: read).", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML configuration file (default: $CDSS_CONFIG).")


def _db(config: Path | None) -> Database:
    settings = settings_or_exit(config)
    return Database(settings.database.url, pool_size=2)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Token name (who uses it), e.g. alice or prometheus."),
    role: Role = typer.Option(..., "--role", "-r", help="admin (act and read) or auditor (read only)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Create a token. The secret is printed once on stdout; only its SHA-256 is stored."""
    from cdss.api.tokens import TokenError, create_token

    db = _db(config)
    try:
        with db.session() as session:
            issued = create_token(session, name, role, actor=cli_actor())
    except TokenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(
        f"token {issued.name!r} ({issued.role.value}) created; store it now, it is not shown again:", err=True
    )
    typer.echo(issued.secret)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config: Path | None = ConfigOpt,
) -> None:
    """List tokens (names, roles, state; never secrets)."""
    from cdss.api.tokens import list_tokens

    db = _db(config)
    try:
        with db.session() as session:
            rows: list[dict[str, Any]] = [
                {
                    "name": t.name,
                    "role": t.role.value,
                    "active": t.active,
                    "created_at": t.created_at.isoformat(),
                    "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in list_tokens(session)
            ]
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "role", "state", "created (UTC)", "last used (UTC)")
    for r in rows:
        table.add_row(
            r["name"],
            r["role"],
            "active" if r["active"] else f"revoked {r['revoked_at'][:19]}",
            r["created_at"][:19],
            (r["last_used_at"] or "-")[:19],
        )
    Console().print(table)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="Token name."),
    config: Path | None = ConfigOpt,
) -> None:
    """Revoke a token at once (its name is not reused)."""
    from cdss.api.tokens import TokenError, revoke_token

    db = _db(config)
    try:
        with db.session() as session:
            revoke_token(session, name, actor=cli_actor())
    except TokenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(f"token {name!r} revoked")


def register(root: typer.Typer) -> None:
    """Attach ``cdss users`` to the main app."""
    root.add_typer(app, name="users")
