"""Shared fixtures: real peers (see tests/peers.py) and databases for both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.node_process import NodeProcess, reap_spawned, require_models
from tests.peers import Orthanc, require, run_orthanc

POSTGRES_ADMIN_URL = os.environ.get(
    "CDSS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_available() -> tuple[bool, str]:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True, ""
    except Exception as exc:
        return False, str(exc).splitlines()[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards)."""
    ok, why = _postgres_available()
    require(
        ok, f"PostgreSQL at {POSTGRES_ADMIN_URL} ({why})", "start PostgreSQL or set CDSS_TEST_POSTGRES_URL"
    )
    name = f"cdss_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run a test against both database backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cdss.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A private Orthanc instance acting as the PACS."""
    with run_orthanc(tmp_path / "orthanc") as pacs:
        yield pacs


@pytest.fixture
def pacs_node(tmp_path: Path, orthanc: Orthanc) -> Iterator[NodeProcess]:
    """``cdss serve`` (shipped models) sending its results to the private Orthanc; ``.banner`` is its start banner."""
    require_models()
    node = NodeProcess(tmp_path / "node", destinations=[orthanc.destination()])
    node.banner = node.start()
    yield node
    node.stop()


@pytest.fixture(autouse=True)
def _reap_node_processes() -> Iterator[None]:
    """Kill any ``cdss serve``/``cdss worker`` a test started and did not stop (e.g. it failed)."""
    yield
    reap_spawned()
