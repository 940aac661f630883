"""Helpers the benchmarks in ``bench/`` share: CPU time of a process (tree) and scratch
PostgreSQL databases. Measurement plumbing only; nothing here is a test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["cpu_seconds", "drop_postgres", "scratch_postgres"]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return out


def cpu_seconds(pid: int, *, descendants: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (``/proc``), with ``descendants`` also of its living
    child processes (e.g. the node's receiver processes). A process that is gone counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if descendants:
            todo += _children(p)
    return total


def scratch_postgres(admin_url: str) -> str:
    """Create an empty database through ``admin_url``; return its URL (drop it with
    :func:`drop_postgres`)."""
    name = f"cdss_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres(admin_url: str, url: str) -> None:
    """Drop the database of ``url`` (made by :func:`scratch_postgres`), closing its sessions."""
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
