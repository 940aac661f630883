"""``cdss audit ...`` and ``cdss users ...`` on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import pytest
from lxml import etree
from sqlalchemy import select, text
from typer.testing import CliRunner

from cdss.cli import app
from cdss.db import Database
from cdss.db.models import ApiToken, AuditEvent
from tests.test_audit_chain import fill
from tests.test_audit_syslog import SCHEMA, parse_octet_stream, parse_rfc5424

runner = CliRunner()


@pytest.fixture
def env(db_url: str, tmp_path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    db = Database(db_url)
    fill(db, 6)
    db.dispose()
    yield {"CDSS_DATABASE_URL": db_url, "CDSS_AUDIT_SPOOL_PATH": str(tmp_path / "audit-spool")}


def cdss(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_verify_ok_then_tampered_then_anchored(env: dict[str, str]) -> None:
    r = cdss(env, "audit", "verify")
    assert r.exit_code == 0, r.output
    assert "OK: 6 events, seq 1..6" in r.output
    head = re.search(r"chain head: (\d+:[0-9a-f]{64})", r.output)
    assert head is not None and head.group(1).startswith("6:")
    # the verification itself was audited (110101), so the chain is now 7 long
    assert cdss(env, "audit", "verify", "--anchor", head.group(1)).exit_code == 0
    db = Database(env["CDSS_DATABASE_URL"])
    with db.session() as s:
        if db.dialect == "postgresql":
            s.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            s.execute(text("DROP TRIGGER audit_events_no_delete"))
        s.execute(text("DELETE FROM audit_events WHERE seq = 3"))
        if db.dialect == "postgresql":
            s.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    db.dispose()
    bad = cdss(env, "audit", "verify", "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert report["ok"] is False and report["problem"]["seq"] == 4 and report["problem"]["kind"] == "deleted"
    text_out = cdss(env, "audit", "verify")
    assert text_out.exit_code == 1 and "TAMPERED at seq 4 (deleted)" in text_out.output
    bad_anchor = runner.invoke(app, ["audit", "verify", "--anchor", "nonsense"], env=env)
    assert bad_anchor.exit_code == 2


def test_list_query_and_export_formats(env: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = cdss(env, "audit", "list", "--json", "--event", "110113")
    assert r.exit_code == 0
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [e["seq"] for e in rows] == [3, 6] and all(e["event_id"] == "110113" for e in rows)
    q = cdss(env, "audit", "query", "--json", "--accession", "ACC001")
    assert [json.loads(line)["seq"] for line in q.output.splitlines()] == [2]
    table = cdss(env, "audit", "list", "--failures")
    assert (
        table.exit_code == 0 and "of 1 events" in table.output
    )  # only event 3 (i=3) failed... of the 8 so far

    out = tmp_path / "audit.json"
    assert cdss(env, "audit", "export", "--format", "json", "--out", str(out)).exit_code == 0
    exported = json.loads(out.read_text())
    assert [e["seq"] for e in exported][:6] == [1, 2, 3, 4, 5, 6]
    assert exported[0]["detail"] == {"i": 0, "nested": {"values": [1, 2.5, None, "x"]}}

    c = cdss(env, "audit", "export", "--format", "csv", "--seq-to", "6")
    rows = list(csv.DictReader(io.StringIO(c.output)))
    assert len(rows) == 6 and rows[5]["hash"] == exported[5]["hash"]

    sys_out = tmp_path / "audit.syslog"
    assert (
        cdss(env, "audit", "export", "--format", "syslog", "--seq-to", "6", "-o", str(sys_out)).exit_code == 0
    )
    messages = parse_octet_stream(sys_out.read_bytes())
    assert len(messages) == 6
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    for msg, e in zip(messages, exported, strict=False):
        parsed = parse_rfc5424(msg)
        assert parsed["sd"]["seq"] == str(e["seq"]) and parsed["sd"]["hash"] == e["hash"]
        assert schema.validate(etree.fromstring(parsed["xml"])), schema.error_log

    x = cdss(env, "audit", "export", "--format", "xml", "--seq-to", "6")
    docs = [etree.fromstring(line.encode()) for line in x.output.splitlines()]
    assert len(docs) == 6 and all(schema.validate(d) for d in docs)

    db = Database(env["CDSS_DATABASE_URL"])
    with db.session() as s:
        used = list(s.execute(select(AuditEvent).where(AuditEvent.event_id == "110101")).scalars())
    db.dispose()
    assert len(used) == 7 and all(u.user.startswith("cli:") for u in used)


def test_users_create_list_revoke(env: dict[str, str]) -> None:
    r = runner.invoke(app, ["users", "create", "alice", "--role", "admin"], env=env)
    assert r.exit_code == 0
    secret = r.stdout.strip().splitlines()[-1]
    assert secret.startswith("cdss_") and len(secret) > 40
    assert runner.invoke(app, ["users", "create", "alice", "--role", "auditor"], env=env).exit_code == 1
    assert runner.invoke(app, ["users", "create", "bad name", "--role", "auditor"], env=env).exit_code == 1
    assert runner.invoke(app, ["users", "create", "bob", "--role", "superuser"], env=env).exit_code == 2
    listed = json.loads(cdss(env, "users", "list", "--json").output)
    assert [(t["name"], t["role"], t["active"]) for t in listed] == [("alice", "admin", True)]
    assert cdss(env, "users", "revoke", "alice").exit_code == 0
    assert runner.invoke(app, ["users", "revoke", "alice"], env=env).exit_code == 1
    assert runner.invoke(app, ["users", "revoke", "nobody"], env=env).exit_code == 1
    reuse = runner.invoke(app, ["users", "create", "alice", "--role", "admin"], env=env)
    assert reuse.exit_code == 1 and "not reused" in reuse.output
    db = Database(env["CDSS_DATABASE_URL"])
    with db.session() as s:
        token = s.execute(select(ApiToken)).scalar_one()
        changes = [
            (e.user, e.detail["change"])
            for e in s.execute(select(AuditEvent).where(AuditEvent.event_id == "110113")).scalars()
            if (e.detail or {}).get("token") == "alice"
        ]
    db.dispose()
    assert token.active is False and secret not in token.token_sha256
    assert [c for _, c in changes] == ["created", "revoked"] and all(u.startswith("cli:") for u, _ in changes)
