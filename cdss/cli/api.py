"""``cdss api``: run the admin/audit API and dashboard alone (without receiver or workers)."""

from __future__ import annotations

from pathlib import Path

import typer

from cdss.cli.common import settings_or_exit


def api(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML configuration file (default: $CDSS_CONFIG)."
    ),
    host: str | None = typer.Option(None, "--host", help="Bind address (default: api.host)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Port (default: api.port)."),
) -> None:
    """Serve the admin API, dashboard, /healthz, /readyz and /metrics (uvicorn).

    Records 110100 Application Activity (Application Start / Stop) around its lifetime and
    forwards the audit trail to syslog when audit.syslog_host is set.
    """
    import uvicorn

    from cdss.api import create_app
    from cdss.audit import Action, EventID, EventType, record_event
    from cdss.db import Database
    from cdss.logs import configure_logging

    settings = settings_or_exit(config)
    configure_logging(settings.logging.level, settings.logging.json_output)
    db = Database(settings.database.url, pool_size=settings.database.pool_size)
    bind_host, bind_port = host or settings.api.host, port or settings.api.port

    def activity(kind: EventType, text: str) -> None:
        with db.session() as session:
            record_event(
                session,
                EventID.APPLICATION_ACTIVITY,
                action=Action.EXECUTE,
                event_type=kind,
                user="cdss",
                source=bind_host,
                description=text,
                detail={"component": "api", "port": bind_port},
            )

    activity(EventType.APPLICATION_START, f"admin API started on {bind_host}:{bind_port} (standalone)")
    try:
        uvicorn.run(
            create_app(settings, db),
            host=bind_host,
            port=bind_port,
            log_level=settings.logging.level.lower(),
            access_log=False,  # URLs carry patient identifiers in query strings: never in the log
        )
    finally:
        activity(EventType.APPLICATION_STOP, "admin API stopped")
        db.dispose()


def register(app: typer.Typer) -> None:
    """Attach ``cdss api`` to the main app."""
    app.command("api")(api)
