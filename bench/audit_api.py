"""Audit trail and admin API speed: appends, chain verification, syslog forwarding, API reads.

Usage: ``python -m bench.audit_api [--events N] [--postgres URL]`` (numbers go to docs/audit.md
and docs/admin-api.md; nothing here is asserted in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from cdss.audit import Action, EventID, record_event
from cdss.audit.message import AuditSource
from cdss.audit.syslog import AuditForwarder
from cdss.audit.verify import verify_chain
from cdss.config import AuditSettings, Settings
from cdss.db import Database


def appends(db: Database, n: int, per_tx: int) -> float:
    t0 = time.perf_counter()
    done = 0
    while done < n:
        with db.session() as s:
            for _ in range(min(per_tx, n - done)):
                record_event(
                    s,
                    EventID.QUERY,
                    action=Action.EXECUTE,
                    user="bench",
                    source="127.0.0.1",
                    patient_id="PAT-1",
                    description="bench event",
                    detail={"path": "/api/v1/studies", "query": "limit=50", "results": 50},
                )
                done += 1
    return n / (time.perf_counter() - t0)


def verify_rate(db: Database) -> tuple[int, float]:
    t0 = time.perf_counter()
    with db.session() as s:
        report = verify_chain(s)
    assert report.ok
    return report.events, report.events / (time.perf_counter() - t0)


def forward_rate(db: Database, tmp: Path) -> float:
    received = 0
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                n = await reader.readuntil(b" ")
                await reader.readexactly(int(n[:-1]))
                received += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port_box: list[int] = []

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_box.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True).start()
    ready.wait(10)
    settings = AuditSettings(syslog_host="127.0.0.1", syslog_port=port_box[0], spool_path=tmp / "spool")
    fwd = AuditForwarder(settings, db, AuditSource("CDSS@bench", "CDSS", "bench"))
    t0 = time.perf_counter()
    report = fwd.run_once()
    elapsed = time.perf_counter() - t0
    fwd.stop()
    assert report.pending == 0, report
    return report.sent / elapsed


def api_reads(tmp: Path, n_studies: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from cdss.api import create_app
    from cdss.api.tokens import create_token
    from tests.api_helpers import add_study, bearer

    db = Database(f"sqlite:///{tmp / 'api.db'}")
    for i in range(n_studies):
        add_study(
            db,
            accession=f"A{i:05d}",
            patient_id=f"P{i}",
            summary={"text": f"finding {i}"},
            results=("SEG", "SR", "GSPS"),
        )
    with db.session() as s:
        token = create_token(s, "bench", "auditor", actor="bench").secret
    client = TestClient(create_app(Settings(), db))
    out = {}
    for name, path in (
        ("GET /api/v1/stats", "/api/v1/stats"),
        ("GET /api/v1/studies?limit=50", "/api/v1/studies?limit=50"),
        ("GET /api/v1/studies?status=failed", "/api/v1/studies?status=failed"),
        (
            "GET /api/v1/studies/by-accession/{acc}/history",
            f"/api/v1/studies/by-accession/A{n_studies // 2:05d}/history",
        ),
        ("GET /api/v1/audit/events?limit=50", "/api/v1/audit/events?limit=50"),
    ):
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            r = client.get(path, headers=bearer(token))
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
        out[name] = statistics.median(times)
    db.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        targets = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")]
        name = f"cdss_bench_{uuid.uuid4().hex[:8]}"
        admin = None
        try:
            admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            targets.append(("postgresql", args.postgres.rsplit("/", 1)[0] + "/" + name))
        except Exception as exc:
            print(f"PostgreSQL skipped: {exc}")
        for label, url in targets:
            db = Database(url)
            one = appends(db, 500, 1)
            batch = appends(db, args.events - 500, 100)
            events, rate = verify_rate(db)
            fwd = forward_rate(db, tmp / label)
            print(
                f"{label}: append {one:,.0f}/s (1 event per transaction), {batch:,.0f}/s (100 per transaction); "
                f"verify {events:,} events at {rate:,.0f}/s; syslog TCP forward (spool + send) {fwd:,.0f} msg/s"
            )
            db.dispose()
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for op, ms in api_reads(tmp, args.studies).items():
            print(f"{op}: median {ms:.1f} ms ({args.studies} studies, SQLite)")


if __name__ == "__main__":
    main()
