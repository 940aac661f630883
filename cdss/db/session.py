"""Engine, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so that a committed
transaction survives a power loss (DESIGN.md invariant 1), ``foreign_keys=ON`` and a busy timeout
so that receiver threads and workers can share the file. PostgreSQL uses the same models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "create_db_engine", "migrate"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Execution option marking a read-only session's connection (SQLite then begins deferred).
READ_ONLY_OPTION = "cdss_read_only"
#: How long a SQLite writer waits for the in-process writer lock before it goes on to SQLite's
#: own locking (same as the busy timeout), seconds.
WRITER_WAIT_S = 30.0
_HOLDS_WRITER = "cdss_holds_writer_lock"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_db_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine for ``url``; SQLite parent directories are created.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///var/cdss.db`` or ``postgresql+psycopg://localhost/cdss``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            # Each thread gets its own connection; SQLite serialises writers itself.
            pool_size=pool_size,
            max_overflow=20,
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        # Take the write lock at BEGIN so that concurrent read-then-write transactions do not
        # deadlock on lock upgrade (SQLITE_BUSY that the busy timeout cannot resolve).
        # Read-only sessions (Database.read_session) begin deferred: in WAL mode they neither wait
        # for nor block the writer.
        # Writers of this process queue on a Python lock before BEGIN IMMEDIATE: SQLite's busy
        # handler sleeps in steps of up to 100 ms while it waits, so concurrent C-STOREs would
        # each lose milliseconds after the lock is already free; a thread waiting on the Python
        # lock wakes at once. Other processes (receiver processes, workers) still meet SQLite's
        # own lock. Waiting is bounded like the busy timeout, so a nested writer cannot hang.
        writer_lock = threading.Lock()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY_OPTION, False):
                conn.exec_driver_sql("BEGIN")
                return
            if writer_lock.acquire(timeout=WRITER_WAIT_S):
                conn.info[_HOLDS_WRITER] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release_writer(conn.info)
                raise

        def _release_writer(info: dict[str, Any]) -> None:
            if info.pop(_HOLDS_WRITER, False):
                writer_lock.release()

        @event.listens_for(engine, "commit")
        def _after_commit(conn: Any) -> None:
            _release_writer(conn.info)

        @event.listens_for(engine, "rollback")
        def _after_rollback(conn: Any) -> None:
            _release_writer(conn.info)

        @event.listens_for(engine.pool, "checkin")
        def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
            if record is not None:  # a connection returned mid-transaction still lets go
                _release_writer(record.info)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # Fail fast (C-STORE answers 0xA700) instead of hanging for the OS connect timeout.
        connect_args["connect_timeout"] = 5
    return create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection_engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database schema to the newest Alembic revision (run on every start)."""
    command.upgrade(_alembic_config(engine), "head")


class Database:
    """The node's database: an engine plus a session factory.

    Use :meth:`session` for a unit of work: it commits on success and rolls back on error, so
    each job step is one transaction (DESIGN.md invariant 3).
    """

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False, run_migrations: bool = True):
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size, echo=echo)
        if run_migrations:
            migrate(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_factory = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: it never takes SQLite's write lock and is rolled back at the
        end (anything written in it is discarded). For the C-STORE hot path's lookups."""
        with self._read_factory() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
