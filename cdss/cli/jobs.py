"""``cdss jobs ...`` and ``cdss deliveries ...``: look at the queues, re-run dead jobs, retry dead deliveries.

They work on the database directly, so they also work while the node runs (the local backend
picks re-queued work up within ``jobs.poll_interval_s``; for the Celery backend the job id is
published as well). Each action is recorded in the audit trail like the API's.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cdss.cli.common import cli_actor, settings_or_exit
from cdss.config import JobBackend, Settings
from cdss.jobs.summary import JobSummary

jobs_app = typer.Typer(help="Analysis jobs: list, re-run.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Result deliveries: list, retry dead ones.", no_args_is_help=True)

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="TOML configuration file (default: $CDSS_CONFIG).")


def _open(config: Path | None) -> tuple[Settings, Any]:
    from cdss.db import Database

    settings = settings_or_exit(config)
    return settings, Database(settings.database.url)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@jobs_app.command("list")
def list_jobs(
    state: str | None = typer.Option(
        None, "--state", help="queued, running, succeeded, not_applicable or dead."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="Newest jobs first, at most this many."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """List jobs, newest first (no patient data: ids, states, analyses, errors)."""
    from sqlalchemy import select

    from cdss.db import Instance, Job, JobState
    from cdss.jobs.states import count_jobs

    _, db = _open(config)
    stmt = select(Job, Instance.sop_instance_uid, Instance.calling_ae_title).join(
        Instance, Instance.id == Job.instance_id
    )
    if state:
        try:
            stmt = stmt.where(Job.state == JobState(state))
        except ValueError as exc:
            typer.echo(
                f"error: unknown state {state!r}; one of {', '.join(s.value for s in JobState)}", err=True
            )
            raise typer.Exit(2) from exc
    with db.session() as session:
        rows = session.execute(stmt.order_by(Job.id.desc()).limit(limit)).all()
        table = Table(
            "id",
            "state",
            "analysis",
            "attempts",
            "created (UTC)",
            "from AE",
            "SOP Instance UID",
            "last error / findings",
        )
        for job, sop_uid, aet in rows:
            info = job.last_error or ""
            summary = JobSummary.from_json(job.summary)
            if not info and summary is not None:
                info = summary.reason or summary.findings_line()
            table.add_row(
                str(job.id),
                job.state.value,
                job.analysis or "",
                f"{job.attempts}/{job.max_attempts}",
                _when(job.created_at),
                aet,
                sop_uid,
                info[:120],
            )
    console = Console()
    console.print(table)
    counts = count_jobs(db)
    console.print("  ".join(f"{s.value}: {n}" for s, n in counts.items()))
    db.dispose()


@jobs_app.command("rerun")
def rerun(
    job_id: int = typer.Argument(..., help="Job id (see `cdss jobs list --state dead`)."),
    force: bool = typer.Option(
        False, "--force", help="Also re-run a succeeded / not-applicable job (a second set of results)."
    ),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Queue a dead job again with a fresh attempt budget."""
    from cdss.jobs.admin import rerun as rerun_audited
    from cdss.jobs.states import JobStateError

    settings, db = _open(config)
    try:
        job = rerun_audited(db, job_id, force=force, user=cli_actor(), source=socket.gethostname())
    except JobStateError as exc:
        typer.echo(f"error: {exc}", err=True)
        db.dispose()
        raise typer.Exit(1) from exc
    if settings.jobs.backend == JobBackend.CELERY:
        from cdss.jobs.celery_backend import CeleryBackend

        CeleryBackend(settings.jobs, db).publish(job_id)
    typer.echo(f"job {job.id} queued (attempts reset; the node picks it up within seconds)")
    db.dispose()


@deliveries_app.command("list")
def list_deliveries(
    state: str | None = typer.Option(None, "--state", help="pending, sending, delivered or dead."),
    limit: int = typer.Option(50, "--limit", min=1, help="Newest first, at most this many."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """List result deliveries, newest first."""
    from sqlalchemy import select

    from cdss.db import Delivery, DeliveryState, Result
    from cdss.dispatch.states import count_deliveries

    _, db = _open(config)
    stmt = select(Delivery, Result.kind, Result.job_id).join(Result, Result.id == Delivery.result_id)
    if state:
        try:
            stmt = stmt.where(Delivery.state == DeliveryState(state))
        except ValueError as exc:
            typer.echo(
                f"error: unknown state {state!r}; one of {', '.join(s.value for s in DeliveryState)}",
                err=True,
            )
            raise typer.Exit(2) from exc
    with db.session() as session:
        rows = session.execute(stmt.order_by(Delivery.id.desc()).limit(limit)).all()
        table = Table(
            "id",
            "state",
            "kind",
            "job",
            "destination",
            "attempts",
            "status",
            "next try / delivered (UTC)",
            "last error",
        )
        for d, kind, job_id in rows:
            when = (
                d.delivered_at
                if d.delivered_at
                else (d.next_attempt_at if d.state.value == "pending" else None)
            )
            table.add_row(
                str(d.id),
                d.state.value,
                kind,
                str(job_id),
                f"{d.destination} {d.ae_title}@{d.host}:{d.port}",
                f"{d.attempts}/{d.max_attempts}",
                "" if d.last_status is None else f"0x{d.last_status:04X}",
                _when(when),
                (d.last_error or "")[:120],
            )
    console = Console()
    console.print(table)
    console.print("  ".join(f"{s.value}: {n}" for s, n in count_deliveries(db).items()))
    db.dispose()


@deliveries_app.command("retry")
def retry(
    delivery_id: int = typer.Argument(..., help="Delivery id (see `cdss deliveries list --state dead`)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Send a dead delivery again (fresh attempt budget, starting now)."""
    from cdss.dispatch.admin import retry as retry_audited
    from cdss.dispatch.states import DeliveryStateError

    _, db = _open(config)
    try:
        d = retry_audited(db, delivery_id, user=cli_actor(), source=socket.gethostname())
    except DeliveryStateError as exc:
        typer.echo(f"error: {exc}", err=True)
        db.dispose()
        raise typer.Exit(1) from exc
    typer.echo(f"delivery {d.id} to {d.destination} queued (the node sends it within seconds)")
    db.dispose()


def register(app: typer.Typer) -> None:
    """Attach ``cdss jobs`` and ``cdss deliveries``."""
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(deliveries_app, name="deliveries")
