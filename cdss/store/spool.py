"""Durable, content-addressed spool for received instances and produced results.

Layout (relative to ``storage.path``)::

    instances/<h0h1>/<h2h3>/<sha256>.dcm     received DICOM files, as stored by cdss.receive
    results/<h0h1>/<h2h3>/<sha256>.dcm       DICOM objects the node produced

``<sha256>`` is the lower-case hex SHA-256 of the file's bytes. File names are derived from that
hash only (DESIGN.md invariant 2): nothing a peer sends (UIDs, AE titles, patient data) ever
becomes part of a path.

Durability (DESIGN.md invariant 1): bytes go to a temporary file in the destination directory,
the file is ``fsync``-ed, renamed onto its final name and the directory is ``fsync``-ed. Newly
created directories are fsynced into their parents as well. After :meth:`Spool.store_instance`
returns, the file survives a crash or power loss (given storage that honours ``fsync``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import cast

from cdss.config import StorageSettings
from cdss.durable import fsync_dir

__all__ = [
    "KEY_PATTERN",
    "TEMP_PREFIX",
    "Spool",
    "SpoolArea",
    "SpoolError",
    "SpoolFullError",
    "SpoolWriteError",
    "StoredFile",
]

#: Prefix of temporary files; they live next to their final name until the rename.
TEMP_PREFIX = ".tmp-"

#: A valid spool key: ``<area>/<2 hex>/<2 hex>/<64 hex>.dcm``.
KEY_PATTERN = re.compile(r"^(instances|results)/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})\.dcm$")

_DIR_MODE = 0o750
_FILE_MODE = 0o640


class SpoolArea(StrEnum):
    """Top-level areas of the spool."""

    INSTANCES = "instances"
    RESULTS = "results"


class SpoolError(Exception):
    """Base class of spool errors."""


class SpoolWriteError(SpoolError):
    """Writing, fsyncing or renaming a spool file failed (the message names the path and errno)."""


class SpoolFullError(SpoolWriteError):
    """Free space is below ``storage.min_free_mb`` (checked before writing)."""


@dataclass(frozen=True)
class StoredFile:
    """A file durably stored in the spool.

    Attributes
    ----------
    key
        Relative path inside the spool (``instances/ab/cd/<sha256>.dcm``); store it in the database.
    sha256
        Lower-case hex SHA-256 of the bytes.
    size
        Size in bytes.
    created
        ``True`` when this call created the file; ``False`` when an identical file was already
        there (content addressing makes the write idempotent). Callers that clean up after a
        failed transaction must delete only files they created.
    """

    key: str
    sha256: str
    size: int
    created: bool = True


class Spool:
    """The node's durable file store.

    Parameters
    ----------
    settings
        ``[storage]`` settings: ``path`` (created if missing), ``min_free_mb`` (watermark) and
        ``fsync`` (turn off only for throw-away test nodes).

    Notes
    -----
    Thread-safe: concurrent writers of the same content race only on ``os.replace`` of
    identical bytes, which is atomic.
    """

    def __init__(self, settings: StorageSettings):
        self.settings = settings
        self.root = Path(settings.path).absolute()
        self.fsync = settings.fsync
        self.min_free_mb = settings.min_free_mb
        self.root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        for area in SpoolArea:
            self._ensure_dir(self.root / area.value)

    # ------------------------------------------------------------------ paths
    @staticmethod
    def key_for(area: SpoolArea | str, sha256: str) -> str:
        """Return the key of content with hex digest ``sha256`` in ``area``."""
        area = SpoolArea(area)
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a lower-case hex SHA-256: {sha256!r}")
        return f"{area.value}/{sha256[0:2]}/{sha256[2:4]}/{sha256}.dcm"

    def path(self, key: str) -> Path:
        """Absolute path of ``key``.

        Raises
        ------
        ValueError
            ``key`` is not a spool key (``instances|results/<2 hex>/<2 hex>/<sha256>.dcm``); this
            also rules out any path traversal.
        """
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a spool key: {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(self, key: str) -> bytes:
        """Return the bytes stored under ``key`` (``FileNotFoundError`` if absent)."""
        return self.path(key).read_bytes()

    def verify(self, key: str) -> bool:
        """``True`` when the file under ``key`` exists and its SHA-256 matches its name."""
        path = self.path(key)
        if not path.is_file():
            return False
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest() == path.stem

    # ------------------------------------------------------------------ space
    def free_mb(self) -> float:
        """Free space of the spool's file system available to this process, MiB."""
        return shutil.disk_usage(self.root).free / (1024 * 1024)

    def below_watermark(self, incoming_bytes: int = 0) -> bool:
        """``True`` when free space minus ``incoming_bytes`` is below ``storage.min_free_mb``."""
        return self.free_mb() - incoming_bytes / (1024 * 1024) < self.min_free_mb

    # ------------------------------------------------------------------ writes
    def store_instance(self, data: bytes | Sequence[bytes], *, sha256: str | None = None) -> StoredFile:
        """Durably store a received DICOM file (see module docstring).

        Parameters
        ----------
        data
            The file's bytes, or its consecutive parts (e.g. header and dataset as received:
            written one after the other, never joined into one more copy in memory).
        sha256
            Hex SHA-256 of the whole file when the caller already computed it (saves hashing twice).

        Raises
        ------
        SpoolFullError
            Free space would fall below ``storage.min_free_mb``.
        SpoolWriteError
            The write, fsync or rename failed; no temporary file is left behind.
        """
        return self._store(SpoolArea.INSTANCES, data, sha256)

    def store_result(self, data: bytes | Sequence[bytes], *, sha256: str | None = None) -> StoredFile:
        """Durably store a DICOM object produced by the node (same guarantees as instances)."""
        return self._store(SpoolArea.RESULTS, data, sha256)

    def delete(self, key: str) -> bool:
        """Remove ``key`` (durably when ``fsync`` is on); ``False`` if it did not exist.

        Use only for files no database row references (e.g. after a failed transaction, for a
        :class:`StoredFile` with ``created=True``).
        """
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        if self.fsync:
            fsync_dir(path.parent)
        return True

    def _store(self, area: SpoolArea, data: bytes | Sequence[bytes], sha256: str | None = None) -> StoredFile:
        # bytes-like: one part (a bytearray or memoryview must not be split into its ints)
        one = isinstance(data, bytes | bytearray | memoryview)
        parts = (cast(bytes, data),) if one else tuple(cast(Sequence[bytes], data))
        size = sum(len(part) for part in parts)
        if self.below_watermark(size):
            raise SpoolFullError(
                f"spool {self.root}: {self.free_mb():.0f} MiB free, {size / 2**20:.1f} MiB incoming, "
                f"watermark storage.min_free_mb = {self.min_free_mb} MiB"
            )
        if sha256 is None:
            digest = hashlib.sha256()
            for part in parts:
                digest.update(part)
            sha256 = digest.hexdigest()
        sha = sha256
        key = self.key_for(area, sha)
        final = self.root / key
        try:
            self._ensure_dir(final.parent)
            if final.is_file() and final.stat().st_size == size:
                # Identical content already stored (the name is its hash). Make sure it is
                # durable even if the earlier writer crashed between rename and directory fsync.
                if self.fsync:
                    fd = os.open(final, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    fsync_dir(final.parent)
                return StoredFile(key=key, sha256=sha, size=size, created=False)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=final.parent)
        except OSError as exc:
            raise self._write_error(final, exc) from exc
        tmp = Path(tmp_name)
        try:
            try:
                os.fchmod(fd, _FILE_MODE)
                for part in parts:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            if self.fsync:
                fsync_dir(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._write_error(final, exc) from exc
        return StoredFile(key=key, sha256=sha, size=size, created=True)

    @staticmethod
    def _write_error(path: Path, exc: OSError) -> SpoolWriteError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SpoolFullError(f"spool write to {path} failed: disk full ({exc.strerror})")
        return SpoolWriteError(f"spool write to {path} failed: [{exc.errno}] {exc.strerror or exc}")

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` (and parents up to the root) durably."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            if current == self.root or current.parent == current:
                break
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                if not path.is_dir():
                    raise
            if self.fsync:
                fsync_dir(path.parent)

    # ------------------------------------------------------------------ maintenance
    def sweep_temp(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by interrupted writes; return how many were removed.

        Parameters
        ----------
        older_than_s
            Only files whose modification time is older than this are removed, so that a
            sweep never races a writer in another process sharing the spool (a write takes
            milliseconds to seconds). Use ``0`` when no other process can be writing.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for area in SpoolArea:
            base = self.root / area.value
            if not base.is_dir():
                continue
            for path in base.glob(f"*/*/{TEMP_PREFIX}*"):
                try:
                    if path.is_file() and path.stat().st_mtime <= cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def iter_keys(self, area: SpoolArea | str, older_than_s: float = 0.0) -> Iterator[str]:
        """Yield the keys of stored files in ``area`` (temporary files excluded).

        Parameters
        ----------
        older_than_s
            Only files at least this old (modification time), e.g. for orphan reconciliation.
        """
        area = SpoolArea(area)
        cutoff = time.time() - older_than_s
        base = self.root / area.value
        for path in base.glob("*/*/*.dcm"):
            key = path.relative_to(self.root).as_posix()
            if not KEY_PATTERN.fullmatch(key):
                continue
            try:
                if older_than_s and path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            yield key
