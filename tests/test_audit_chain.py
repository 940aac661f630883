"""The audit hash chain on SQLite and PostgreSQL: concurrent appends, the append-only guard, and a
mutation test of the verifier (every kind of tampering is caught and the first bad seq named).

Tampering needs the guard out of the way, as an attacker with owner rights would do it: the
SQLite triggers are dropped, PostgreSQL's are disabled for the statement's transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from cdss.audit import Action, EventID, EventType, Outcome, record_event
from cdss.audit.chain import CHAINED_FIELDS, GENESIS_HASH, chain_hash
from cdss.audit.verify import Anchor, ProblemKind, parse_anchor, verify_chain
from cdss.db import Database
from cdss.db.models import AuditEvent

N = 10


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url, pool_size=12)
    yield database
    database.dispose()


def fill(db: Database, n: int = N) -> None:
    """``n`` events of varied kinds (patients, details, failures), one transaction each."""
    t0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    for i in range(n):
        with db.session() as s:
            record_event(
                s,
                [EventID.INSTANCES_TRANSFERRED, EventID.QUERY, EventID.SECURITY_ALERT][i % 3],
                action=[Action.CREATE, Action.EXECUTE, Action.EXECUTE][i % 3],
                outcome=Outcome.MINOR_FAILURE if i % 4 == 3 else Outcome.SUCCESS,
                event_type=EventType.USE_OF_RESTRICTED_FUNCTION if i % 3 == 2 else None,
                user=f"AETITLE=MOD{i}" if i % 3 == 0 else "olivia",
                source=f"10.0.0.{i}",
                study_instance_uid=f"1.2.826.0.1.3680043.8.498.{i}",
                patient_id=f"PAT-{i}",
                accession_number=f"ACC{i:03d}",
                description=f"event {i} — ünïcode ok",
                detail={"i": i, "nested": {"values": [1, 2.5, None, "x"]}},
                occurred_at=t0 + dt.timedelta(seconds=i, microseconds=123456),
            )


def tamper(db: Database, *statements: tuple[str, dict[str, Any]]) -> None:
    """Run raw SQL against audit_events with the append-only guard out of the way."""
    with db.session() as s:
        if db.dialect == "postgresql":
            s.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            s.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            s.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        for sql, params in statements:
            s.execute(text(sql), params)
        if db.dialect == "postgresql":
            s.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def verify(db: Database, anchors: list[Anchor] | None = None):  # type: ignore[no-untyped-def]
    with db.session() as s:
        return verify_chain(s, anchors=anchors or [], batch=3)  # small batches exercise paging


def row(db: Database, seq: int) -> AuditEvent:
    with db.session() as s:
        return s.execute(select(AuditEvent).where(AuditEvent.seq == seq)).scalar_one()


# ------------------------------------------------------------------ the intact chain
def test_intact_chain_verifies_and_reports_its_head(db: Database) -> None:
    fill(db)
    report = verify(db)
    assert report.ok and report.problem is None
    assert (report.events, report.first_seq, report.head_seq) == (N, 1, N)
    assert report.head_hash == row(db, N).hash
    assert row(db, 1).prev_hash == GENESIS_HASH
    # the stored rows hash to what they say (canonical form survives the database round trip)
    with db.session() as s:
        for r in s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
            assert chain_hash(r.prev_hash, {c: getattr(r, c) for c in CHAINED_FIELDS}) == r.hash
    assert verify(db, [Anchor(N, report.head_hash), Anchor(3, row(db, 3).hash)]).ok


def test_empty_chain_is_ok(db: Database) -> None:
    report = verify(db)
    assert report.ok and report.events == 0 and report.head_seq is None


def test_parse_anchor() -> None:
    assert parse_anchor("12:" + "AB" * 32) == Anchor(12, "ab" * 32)
    for bad in ("12", "x:" + "a" * 64, "0:" + "a" * 64, "3:abc", "3:" + "g" * 64):
        with pytest.raises(ValueError):
            parse_anchor(bad)


# ------------------------------------------------------------------ the guard
def test_database_refuses_update_and_delete(db: Database) -> None:
    fill(db, 3)
    statements = [
        "UPDATE audit_events SET description = 'x' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
    ]
    if db.dialect == "postgresql":
        statements.append("TRUNCATE audit_events")
    for sql in statements:
        with pytest.raises(DBAPIError, match="append-only"), db.session() as s:
            s.execute(text(sql))
    assert verify(db).ok and verify(db).events == 3


# ------------------------------------------------------------------ mutation test
@pytest.mark.parametrize(
    ("name", "statements", "bad_seq", "kind"),
    [
        (
            "edit description",
            [("UPDATE audit_events SET description = 'nothing happened' WHERE seq = 4", {})],
            4,
            ProblemKind.EDITED,
        ),
        (
            "edit patient",
            [("UPDATE audit_events SET patient_id = 'PAT-X' WHERE seq = 7", {})],
            7,
            ProblemKind.EDITED,
        ),
        ("edit outcome", [("UPDATE audit_events SET outcome = 0 WHERE seq = 4", {})], 4, ProblemKind.EDITED),
        (
            "edit user to null",
            [('UPDATE audit_events SET "user" = NULL WHERE seq = 2', {})],
            2,
            ProblemKind.EDITED,
        ),
        ("edit detail", [("UPDATE audit_events SET detail = NULL WHERE seq = 6", {})], 6, ProblemKind.EDITED),
        (
            "edit time",
            [("UPDATE audit_events SET occurred_at = :t WHERE seq = 3", {"t": "LATER"})],
            3,
            ProblemKind.EDITED,
        ),
        ("delete middle", [("DELETE FROM audit_events WHERE seq = 5", {})], 6, ProblemKind.DELETED),
        ("delete two", [("DELETE FROM audit_events WHERE seq IN (8, 9)", {})], 10, ProblemKind.DELETED),
        ("delete first", [("DELETE FROM audit_events WHERE seq = 1", {})], 2, ProblemKind.BAD_START),
        (
            "swap seq of two rows",
            [
                ("UPDATE audit_events SET seq = -3 WHERE seq = 3", {}),
                ("UPDATE audit_events SET seq = 3 WHERE seq = 7", {}),
                ("UPDATE audit_events SET seq = 7 WHERE seq = -3", {}),
            ],
            3,
            ProblemKind.EDITED,
        ),
        (
            "forge hash at end",
            [("UPDATE audit_events SET hash = :h WHERE seq = 10", {"h": "f" * 64})],
            10,
            ProblemKind.EDITED,
        ),
    ],
)
def test_verifier_catches_tampering(
    db: Database,
    name: str,
    statements: list[tuple[str, dict[str, Any]]],
    bad_seq: int | None,
    kind: ProblemKind | None,
) -> None:
    fill(db)
    later = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    statements = [
        (sql, {k: (later if v == "LATER" else v) for k, v in params.items()}) for sql, params in statements
    ]
    tamper(db, *statements)
    report = verify(db)
    assert not report.ok, name
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (bad_seq, kind), report.problem.message
    assert str(bad_seq) in report.problem.message


def test_swapped_physical_order_is_caught(db: Database) -> None:
    """Rows 3 and 4 exchange their insertion order (ids) while keeping their seq and hashes."""
    fill(db)
    a, b = row(db, 3).id, row(db, 4).id
    tamper(
        db,
        ("UPDATE audit_events SET id = :tmp WHERE seq = 3", {"tmp": 10_000}),
        ("UPDATE audit_events SET id = :a WHERE seq = 4", {"a": a}),
        ("UPDATE audit_events SET id = :b WHERE seq = 3", {"b": b}),
    )
    report = verify(db)
    assert not report.ok and report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (4, ProblemKind.REORDERED)


def test_inserted_forged_row_is_caught(db: Database) -> None:
    """A forged row slipped in at seq 5 (later rows renumbered, forged hash computed correctly)."""
    fill(db)
    prev = row(db, 4)
    forged = {
        "seq": 5,
        "occurred_at": prev.occurred_at + dt.timedelta(milliseconds=1),
        "event_id": "110100",
        "event_name": "Application Activity",
        "event_type": None,
        "action": "E",
        "outcome": 0,
        "user": "cdss",
        "source": None,
        "study_instance_uid": None,
        "patient_id": None,
        "accession_number": None,
        "description": "forged",
        "detail": None,
        "prev_hash": prev.hash,
    }
    forged_hash = chain_hash(prev.hash, forged)
    tamper(
        db,
        ("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5", {}),
        ("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000", {}),
        (
            'INSERT INTO audit_events (seq, occurred_at, event_id, event_name, action, outcome, "user", '
            "description, prev_hash, hash) VALUES (5, :t, '110100', 'Application Activity', 'E', 0, 'cdss', "
            "'forged', :p, :h)",
            {
                "t": forged["occurred_at"].replace(tzinfo=None)
                if db.dialect == "sqlite"
                else forged["occurred_at"],
                "p": prev.hash,
                "h": forged_hash,
            },
        ),
    )
    report = verify(db)
    assert not report.ok
    # the forged row itself links and hashes correctly; the renumbered original after it does not
    assert report.problem is not None and report.problem.seq == 6
    assert report.problem.kind is ProblemKind.EDITED


def test_tail_truncation_needs_an_anchor(db: Database) -> None:
    """What a hash chain alone cannot see: the newest rows removed. The external anchor catches it."""
    fill(db)
    head = verify(db)
    anchor = Anchor(head.head_seq or 0, head.head_hash or "")
    tamper(db, ("DELETE FROM audit_events WHERE seq > 7", {}))
    alone = verify(db)
    assert alone.ok and alone.head_seq == 7  # the limit of the chain, documented in docs/audit.md
    anchored = verify(db, [anchor])
    assert not anchored.ok and anchored.problem is not None
    assert (anchored.problem.seq, anchored.problem.kind) == (N, ProblemKind.TRUNCATED)
    assert "ends at seq 7" in anchored.problem.message


def test_recomputed_chain_needs_an_anchor(db: Database) -> None:
    """An attacker who edits seq 2 and recomputes every later hash leaves a valid chain; the anchor differs."""
    fill(db)
    before = verify(db)
    with db.session() as s:
        rows = list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
        fields = [{c: getattr(r, c) for c in CHAINED_FIELDS} for r in rows]
    fields[1]["description"] = "rewritten history"
    prev = GENESIS_HASH
    updates = []
    for f in fields:
        f["prev_hash"] = prev
        h = chain_hash(prev, f)
        updates.append(
            (
                "UPDATE audit_events SET description = :d, prev_hash = :p, hash = :h WHERE seq = :s",
                {"d": f["description"], "p": prev, "h": h, "s": f["seq"]},
            )
        )
        prev = h
    tamper(db, *updates)
    assert verify(db).ok  # undetectable from inside the database
    report = verify(db, [Anchor(before.head_seq or 0, before.head_hash or "")])
    assert not report.ok and report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (N, ProblemKind.ANCHOR_MISMATCH)


# ------------------------------------------------------------------ concurrency
def test_concurrent_appends_keep_the_chain_gap_free(db: Database) -> None:
    threads, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.session() as s:
                    record_event(
                        s,
                        EventID.QUERY,
                        action=Action.EXECUTE,
                        user=f"worker-{k}",
                        description=f"{k}/{i}",
                        detail={"k": k, "i": i},
                    )
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors[:3]
    report = verify(db)
    assert report.ok, report.problem
    assert report.events == threads * per_thread and report.head_seq == threads * per_thread
    with db.session() as s:
        seqs = list(s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars())
        users = {u for (u,) in s.execute(select(AuditEvent.user)).all()}
    assert seqs == list(range(1, threads * per_thread + 1))
    assert users == {f"worker-{k}" for k in range(threads)}


def test_rolled_back_transaction_leaves_no_gap(db: Database) -> None:
    fill(db, 2)
    with pytest.raises(RuntimeError), db.session() as s:
        record_event(s, EventID.QUERY, action=Action.EXECUTE, description="rolled back")
        raise RuntimeError("caller failed after recording")
    fill(db, 1)
    report = verify(db)
    assert report.ok and report.events == 3 and report.head_seq == 3
