"""The database's two kinds of session on the embedded SQLite (WAL): a write session takes the
write lock at BEGIN (no lock-upgrade deadlocks), a read session never takes it and discards
anything written in it. The C-STORE hot path relies on the second for its duplicate lookup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cdss.db import AuditEvent, Database


def _try_write_lock(path: Path) -> bool:
    """Whether another connection can take the write lock right now (no waiting)."""
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return False
    finally:
        con.close()


def test_read_session_leaves_the_write_lock_free_and_write_session_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "cdss.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.read_session() as s:
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
            assert _try_write_lock(path)
        with db.session() as s:
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
            assert not _try_write_lock(path)
        assert _try_write_lock(path)
    finally:
        db.dispose()


def test_read_session_discards_writes(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    try:
        with db.session() as s:
            s.execute(text("CREATE TABLE scratch (x INTEGER)"))
            s.execute(text("INSERT INTO scratch VALUES (1), (2)"))
        with pytest.raises(RuntimeError), db.read_session() as s:
            s.execute(text("DELETE FROM scratch"))
            raise RuntimeError("an error inside the session")
        with db.read_session() as s:
            s.execute(text("DELETE FROM scratch"))  # no error: still discarded at the end
        with db.read_session() as s:
            assert s.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 2
    finally:
        db.dispose()
