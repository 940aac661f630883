"""``cdss audit ...``: verify the hash chain, search, export and forward the audit trail.

Reading the audit trail from the command line is itself audited (110101 Audit Log Used, user
``cli:<os user>``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import socket
import sys
from pathlib import Path
from typing import Any, BinaryIO

import typer

from cdss.cli.common import cli_actor, settings_or_exit
from cdss.config import Settings
from cdss.db import Database

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML configuration file (default: $CDSS_CONFIG).")


def _db(settings: Settings) -> Database:
    return Database(settings.database.url, pool_size=2)


def _record_use(db: Any, description: str, detail: dict[str, Any]) -> None:
    from cdss.audit import Action, EventID, record_event

    with db.session() as session:
        record_event(
            session,
            EventID.AUDIT_LOG_USED,
            action=Action.READ,
            user=cli_actor(),
            source=socket.gethostname(),
            description=description,
            detail={"uri": "cdss:audit_events", **detail},
        )


def _when(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date/time", param_hint=name) from exc
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


# ------------------------------------------------------------------ verify
@app.command("verify")
def verify(
    anchor: list[str] = typer.Option(
        [],
        "--anchor",
        "-a",
        help="SEQ:HASH known from outside (syslog receiver, an earlier verify); repeatable.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    config: Path | None = ConfigOpt,
) -> None:
    """Walk the hash chain; exit 1 naming the first bad seq when anything was tampered with.

    Prints the chain head (seq:hash): store it outside the node and pass it back with --anchor
    later, which also detects removed newest rows and a recomputed chain.
    """
    from cdss.audit.verify import parse_anchor, verify_chain

    try:
        anchors = [parse_anchor(a) for a in anchor]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from exc
    settings = settings_or_exit(config)
    db = _db(settings)
    try:
        with db.session() as session:
            report = verify_chain(session, anchors=anchors)
        _record_use(
            db,
            "audit chain verified from the command line: "
            + ("ok" if report.problem is None else f"FAILED at seq {report.problem.seq}"),
            {"verify": report.as_dict()},
        )
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        if report.ok:
            typer.echo(
                f"OK: {report.events} events, seq {report.first_seq or 0}..{report.head_seq or 0}"
                + (f", {report.anchors_checked} anchor(s) matched" if anchors else "")
            )
        else:
            assert report.problem is not None
            typer.echo(
                f"TAMPERED at seq {report.problem.seq} ({report.problem.kind.value}): {report.problem.message}"
            )
        if report.head_seq is not None:
            typer.echo(f"chain head: {report.head_seq}:{report.head_hash}")
    raise typer.Exit(0 if report.ok else 1)


# ------------------------------------------------------------------ list / query
def _filter(
    since: str | None,
    until: str | None,
    event: str | None,
    user: str | None,
    source: str | None,
    study_uid: str | None,
    patient_id: str | None,
    accession: str | None,
    outcome: int | None,
    failures: bool,
    text: str | None,
    seq_from: int | None,
    seq_to: int | None,
) -> Any:
    from cdss.audit.query import AuditFilter

    return AuditFilter(
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        event=event,
        user=user,
        source=source,
        study_instance_uid=study_uid,
        patient_id=patient_id,
        accession_number=accession,
        outcome=outcome,
        failures_only=failures,
        text=text,
        seq_from=seq_from,
        seq_to=seq_to,
    )


SinceOpt = typer.Option(None, "--since", help="ISO 8601 (UTC when no offset), inclusive.")
UntilOpt = typer.Option(None, "--until", help="ISO 8601 (UTC when no offset), exclusive.")
EventOpt = typer.Option(None, "--event", "-e", help="Event ID code (110113) or meaning (Security Alert).")
UserOpt = typer.Option(None, "--user", "-u", help="Who (exact): token name, AETITLE=…, cdss, cli:…")
SourceOpt = typer.Option(None, "--source", help="Network address (exact).")
StudyOpt = typer.Option(None, "--study-uid", help="Study Instance UID.")
PatientOpt = typer.Option(None, "--patient-id", help="Patient ID.")
AccessionOpt = typer.Option(None, "--accession", help="Accession number.")
OutcomeOpt = typer.Option(None, "--outcome", help="Outcome indicator 0, 4, 8 or 12.")
FailuresOpt = typer.Option(False, "--failures", help="Only events with a non-zero outcome.")
TextOpt = typer.Option(None, "--text", help="Substring of the description (case-insensitive).")
SeqFromOpt = typer.Option(None, "--seq-from", min=1, help="Smallest seq.")
SeqToOpt = typer.Option(None, "--seq-to", min=1, help="Largest seq.")


@app.command("list")
def list_(
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    event: str | None = EventOpt,
    user: str | None = UserOpt,
    source: str | None = SourceOpt,
    study_uid: str | None = StudyOpt,
    patient_id: str | None = PatientOpt,
    accession: str | None = AccessionOpt,
    outcome: int | None = OutcomeOpt,
    failures: bool = FailuresOpt,
    text: str | None = TextOpt,
    seq_from: int | None = SeqFromOpt,
    seq_to: int | None = SeqToOpt,
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many (newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    config: Path | None = ConfigOpt,
) -> None:
    """Show matching events, newest last (the last --limit of them)."""
    from cdss.audit.query import count_events, event_dict, select_events

    flt = _filter(
        since,
        until,
        event,
        user,
        source,
        study_uid,
        patient_id,
        accession,
        outcome,
        failures,
        text,
        seq_from,
        seq_to,
    )
    settings = settings_or_exit(config)
    db = _db(settings)
    try:
        with db.session() as session:
            total = count_events(session, flt)
            rows = list(session.execute(select_events(flt, newest_first=True).limit(limit)).scalars())
            events = [event_dict(r) for r in reversed(rows)]
        _record_use(
            db,
            f"audit trail listed from the command line ({len(events)} of {total})",
            {"filter": flt.as_dict()},
        )
    finally:
        db.dispose()
    if as_json:
        for e in events:
            typer.echo(json.dumps(e, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "seq",
        "time (UTC)",
        "event",
        "act",
        "out",
        "user",
        "source",
        "accession",
        "description",
        title=f"{len(events)} of {total} events",
    )
    for e in events:
        name = e["event_name"] + (f" / {e['event_type']}" if e["event_type"] else "")
        table.add_row(
            str(e["seq"]),
            e["occurred_at"][:19],
            f"{e['event_id']} {name}",
            e["action"],
            str(e["outcome"]),
            e["user"] or "",
            e["source"] or "",
            e["accession_number"] or "",
            e["description"],
        )
    Console(width=200).print(table)


app.command("query", help="Same as `list`.")(list_)


# ------------------------------------------------------------------ export
@app.command("export")
def export(
    fmt: str = typer.Option(
        "json", "--format", "-f", help="json, csv, syslog (RFC 5424, octet-counted) or xml."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="File to write (default: stdout)."),
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    event: str | None = EventOpt,
    user: str | None = UserOpt,
    source: str | None = SourceOpt,
    study_uid: str | None = StudyOpt,
    patient_id: str | None = PatientOpt,
    accession: str | None = AccessionOpt,
    outcome: int | None = OutcomeOpt,
    failures: bool = FailuresOpt,
    text: str | None = TextOpt,
    seq_from: int | None = SeqFromOpt,
    seq_to: int | None = SeqToOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Export matching events in chain order (streamed; any size).

    json: one array of events with their chain fields; csv: one row per event; syslog: the exact
    RFC 5424 messages the forwarder sends, octet-counted (replay with `nc HOST PORT < file`);
    xml: the PS3.15 A.5 AuditMessage of each event, one per line.
    """
    from cdss.audit.message import AuditSource, audit_message_xml
    from cdss.audit.query import EXPORT_COLUMNS, event_dict, iter_events
    from cdss.audit.syslog import format_syslog_message, octet_frame

    fmt = fmt.lower()
    if fmt not in ("json", "csv", "syslog", "xml"):
        raise typer.BadParameter("use json, csv, syslog or xml", param_hint="--format")
    flt = _filter(
        since,
        until,
        event,
        user,
        source,
        study_uid,
        patient_id,
        accession,
        outcome,
        failures,
        text,
        seq_from,
        seq_to,
    )
    settings = settings_or_exit(config)
    audit_source = AuditSource.for_node(
        settings.dicom.ae_title, settings.audit.source_id, settings.audit.enterprise_site_id
    )
    db = _db(settings)
    stream: BinaryIO = out.open("wb") if out else sys.stdout.buffer
    count = 0
    try:
        with db.session() as session:
            if fmt == "csv":
                import io

                text_out = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
                writer = csv.writer(text_out, lineterminator="\r\n")
                writer.writerow(EXPORT_COLUMNS)
            elif fmt == "json":
                stream.write(b"[")
            for row in iter_events(session, flt):
                if fmt == "json":
                    stream.write(
                        (b"," if count else b"")
                        + b"\n"
                        + json.dumps(event_dict(row), ensure_ascii=False).encode("utf-8")
                    )
                elif fmt == "csv":
                    data = event_dict(row)
                    writer.writerow(
                        [
                            ""
                            if data[c] is None
                            else json.dumps(data[c], sort_keys=True)
                            if isinstance(data[c], dict)
                            else data[c]
                            for c in EXPORT_COLUMNS
                        ]
                    )
                elif fmt == "syslog":
                    stream.write(
                        octet_frame(
                            format_syslog_message(
                                row,
                                audit_source,
                                facility=settings.audit.syslog_facility,
                                app_name=settings.audit.syslog_app_name,
                                enterprise_number=settings.audit.syslog_enterprise_number,
                            )
                        )
                    )
                else:
                    stream.write(audit_message_xml(row, audit_source) + b"\n")
                count += 1
            if fmt == "json":
                stream.write(b"\n]\n")
            if fmt == "csv":
                text_out.detach()
        stream.flush()
        _record_use(
            db,
            f"audit trail exported from the command line ({count} events, {fmt})",
            {"filter": flt.as_dict(), "format": fmt},
        )
    finally:
        if out:
            stream.close()
        db.dispose()
    if out:
        typer.echo(f"{count} events written to {out}", err=True)


# ------------------------------------------------------------------ forward
@app.command("forward")
def forward(
    once: bool = typer.Option(False, "--once", help="Spool and send once, print what happened, exit."),
    config: Path | None = ConfigOpt,
) -> None:
    """Forward the audit trail to the syslog receiver of the audit settings (for nodes without an API).

    `cdss serve` and `cdss api` already forward when audit.syslog_host is set; run this only where
    neither runs. Exit code 1 with --once when messages remain pending.
    """
    import time

    from cdss.audit.message import AuditSource
    from cdss.audit.syslog import AuditForwarder

    settings = settings_or_exit(config)
    if not settings.audit.syslog_host:
        typer.echo("error: audit.syslog_host is not configured; nothing to forward to", err=True)
        raise typer.Exit(2)
    db = _db(settings)
    fwd = AuditForwarder(
        settings.audit,
        db,
        AuditSource.for_node(
            settings.dicom.ae_title, settings.audit.source_id, settings.audit.enterprise_site_id
        ),
    )
    try:
        if once:
            report = fwd.run_once()
            typer.echo(json.dumps(report.__dict__))
            raise typer.Exit(0 if report.pending == 0 else 1)
        typer.echo(
            f"forwarding to {settings.audit.syslog_host}:{settings.audit.syslog_port} ({settings.audit.syslog_protocol.value}); Ctrl-C stops",
            err=True,
        )
        fwd.start()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fwd.stop()
        db.dispose()


def register(root: typer.Typer) -> None:
    """Attach ``cdss audit`` to the main app."""
    root.add_typer(app, name="audit")
