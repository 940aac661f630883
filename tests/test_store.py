"""The durable spool: content addressing, atomic writes, watermark, sweeps, key validation."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from cdss.config import StorageSettings
from cdss.store import TEMP_PREFIX, Spool, SpoolArea, SpoolFullError, SpoolWriteError


def _spool(tmp_path: Path, **kw: object) -> Spool:
    return Spool(StorageSettings(path=tmp_path / "spool", min_free_mb=kw.pop("min_free_mb", 0), **kw))


def test_store_instance_is_content_addressed_and_readable(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    data = b"DICM-ish bytes \x00\x01" * 100
    sha = hashlib.sha256(data).hexdigest()
    stored = spool.store_instance(data)
    assert stored.sha256 == sha
    assert stored.key == f"instances/{sha[:2]}/{sha[2:4]}/{sha}.dcm"
    assert stored.size == len(data)
    assert stored.created is True
    assert spool.read(stored.key) == data
    assert spool.path(stored.key) == tmp_path.absolute() / "spool" / stored.key
    assert spool.verify(stored.key)
    # No temporary file is left next to it.
    assert [p.name for p in spool.path(stored.key).parent.iterdir()] == [f"{sha}.dcm"]


def test_parts_are_stored_as_the_file_they_make_up(tmp_path: Path) -> None:
    """Header and dataset written as two parts: same key, size and bytes as the joined file."""
    header, body = b"\x00" * 128 + b"DICM" + b"meta", bytes(range(256)) * 4000
    joined = _spool(tmp_path / "a").store_instance(header + body)
    spool = _spool(tmp_path / "b")
    parts = spool.store_instance((header, body))
    assert (parts.key, parts.sha256, parts.size, parts.created) == (
        joined.key,
        joined.sha256,
        joined.size,
        True,
    )
    assert spool.read(parts.key) == header + body
    # A bytearray is one part, not a sequence of ints.
    again = spool.store_instance(bytearray(header + body))
    assert (again.key, again.created) == (parts.key, False)


def test_results_have_their_own_area(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    stored = spool.store_result(b"result")
    assert stored.key.startswith("results/")
    assert spool.read(stored.key) == b"result"


def test_same_content_twice_is_idempotent(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    first = spool.store_instance(b"abc" * 1000)
    second = spool.store_instance(b"abc" * 1000)
    assert first.key == second.key
    assert first.created and not second.created
    assert list(spool.iter_keys(SpoolArea.INSTANCES)) == [first.key]


def test_a_damaged_file_with_the_right_name_is_replaced(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    stored = spool.store_instance(b"payload" * 10)
    spool.path(stored.key).write_bytes(b"short")  # e.g. a torn write from a crash
    assert not spool.verify(stored.key)
    again = spool.store_instance(b"payload" * 10)
    assert again.created
    assert spool.verify(stored.key)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "instances/../../etc/passwd",
        "instances/ab/cd/" + "0" * 63 + ".dcm",
        "instances/ab/cd/" + "g" * 64 + ".dcm",
        "/instances/ab/cd/" + "0" * 64 + ".dcm",
        "other/ab/cd/" + "0" * 64 + ".dcm",
        "instances/1.2.3/4.5.6/1.2.3.dcm",
    ],
)
def test_path_accepts_only_hash_keys(tmp_path: Path, key: str) -> None:
    spool = _spool(tmp_path)
    with pytest.raises(ValueError, match="not a spool key"):
        spool.path(key)


def test_watermark_refuses_before_writing(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    free = spool.free_mb()
    full = _spool(tmp_path, min_free_mb=int(free) + 1024)
    assert full.below_watermark()
    with pytest.raises(SpoolFullError, match="min_free_mb"):
        full.store_instance(b"x" * 100)
    assert list(full.iter_keys(SpoolArea.INSTANCES)) == []
    # Incoming size counts against the watermark too.
    edge = _spool(tmp_path, min_free_mb=max(int(free) - 1, 0))
    assert edge.below_watermark(incoming_bytes=4 * 1024 * 1024)


def test_write_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    instances = spool.root / "instances"
    instances.rmdir()
    instances.write_bytes(b"not a directory")  # every mkdir below it fails
    with pytest.raises(SpoolWriteError, match="spool write to"):
        spool.store_instance(b"data")
    assert instances.read_bytes() == b"not a directory"


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    stored = spool.store_instance(b"keep me")
    directory = spool.path(stored.key).parent
    stale = directory / f"{TEMP_PREFIX}stale.part"
    fresh = directory / f"{TEMP_PREFIX}fresh.part"
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert spool.sweep_temp(older_than_s=3600) == 1
    assert not stale.exists()
    assert fresh.exists()
    assert spool.exists(stored.key)
    assert spool.sweep_temp(older_than_s=0) == 1
    assert not fresh.exists()
    assert list(spool.iter_keys("instances")) == [stored.key]


def test_delete_and_iter_keys_age_filter(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    a = spool.store_instance(b"a")
    b = spool.store_instance(b"b")
    old = time.time() - 100
    os.utime(spool.path(a.key), (old, old))
    assert list(spool.iter_keys("instances", older_than_s=50)) == [a.key]
    assert spool.delete(b.key) is True
    assert spool.delete(b.key) is False
    assert not spool.exists(b.key)


def test_fsync_off_still_stores_atomically(tmp_path: Path) -> None:
    spool = _spool(tmp_path, fsync=False)
    stored = spool.store_instance(b"fast" * 100)
    assert spool.read(stored.key) == b"fast" * 100


def test_files_and_directories_are_not_world_readable(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    stored = spool.store_instance(b"phi")
    path = spool.path(stored.key)
    assert path.stat().st_mode & 0o007 == 0
    assert path.parent.stat().st_mode & 0o007 == 0
