"""``cdss serve`` (the node in the foreground) and ``cdss worker`` (a Celery job worker)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from cdss.cli.common import settings_or_exit
from cdss.config import JobBackend

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="TOML configuration file (default: $CDSS_CONFIG, else embedded defaults)."
)


def serve(config: Path | None = CONFIG_OPTION) -> None:
    """Run the node in the foreground: DICOM receiver, analysis workers, dispatcher, admin API.

    With no configuration everything is embedded: SQLite and the spool under ./var, AE title
    CDSS on port 11112, admin API on 127.0.0.1:8080. Stop with Ctrl-C or SIGTERM; unfinished
    jobs and deliveries resume on the next start.
    """
    from cdss.logs import configure_logging, get_logger
    from cdss.node import Node, NodeStartError

    settings = settings_or_exit(config)
    configure_logging(settings.logging.level, settings.logging.json_output)
    log = get_logger("cdss.serve")
    node = Node(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        node.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        node.start()
    except NodeStartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    sys.stdout.write(node.banner())
    sys.stdout.flush()
    try:
        node.wait()
    finally:
        node.stop()
        log.info("stopped")


def worker(
    config: Path | None = CONFIG_OPTION,
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="Worker threads/processes (default: jobs.workers)."
    ),
    pool: str = typer.Option(
        "threads", "--pool", help="Celery pool: threads (one model copy per process), prefork or solo."
    ),
    hostname: str | None = typer.Option(
        None, "--hostname", help="Celery node name (default: celery@<host>)."
    ),
) -> None:
    """Run a Celery job worker (jobs.backend = "celery"): consumes job ids from the broker.

    Needs the same [database] and [storage] as `cdss serve` (PostgreSQL and a shared spool
    path when it runs on another machine). Models load once per worker process.
    """
    from cdss.db import Database
    from cdss.jobs.celery_backend import WorkerContext, run_worker
    from cdss.jobs.pipeline import PipelineContext, make_processor
    from cdss.jobs.processes import make_registry
    from cdss.logs import configure_logging
    from cdss.node import WARM_UP
    from cdss.store import Spool

    settings = settings_or_exit(config)
    if settings.jobs.backend != JobBackend.CELERY:
        typer.echo(
            'warning: jobs.backend is not "celery"; this worker consumes the broker queue, but '
            "`cdss serve` only publishes there with backend = celery",
            err=True,
        )
    configure_logging(settings.logging.level, settings.logging.json_output)

    def factory() -> WorkerContext:
        db = Database(settings.database.url, pool_size=settings.database.pool_size)
        spool = Spool(settings.storage)
        registry = make_registry(settings.models, workers=settings.jobs.workers)
        ctx = PipelineContext(settings, db, spool, registry)
        return WorkerContext(
            db, settings.jobs, make_processor(ctx), prepare=lambda: registry.warm_up(list(WARM_UP))
        )

    run_worker(
        settings.jobs,
        factory,
        pool=pool,
        concurrency=concurrency,
        loglevel=settings.logging.level,
        hostname=hostname,
    )


def register(app: typer.Typer) -> None:
    """Attach ``cdss serve`` and ``cdss worker``."""
    app.command("serve")(serve)
    app.command("worker")(worker)
