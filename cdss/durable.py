"""Durable writes on POSIX file systems (bottom layer; the spool and the audit syslog spool use it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory, so that a rename or a new file in it survives a crash or power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
