"""Run ``cdss serve`` as a subprocess and drive it like a site would (DCMTK storescu as the modality).

Used by the end-to-end, crash and benchmark code. Nothing here fakes a part of the node.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.peers import free_port, require, wait_for_port

__all__ = [
    "NodeProcess",
    "StorescuReport",
    "dcmtk_storescu",
    "models_available",
    "require_models",
    "storescu",
    "synthetic_images",
]

WEIGHTS = Path(__file__).resolve().parent.parent / "cdss" / "analysis" / "weights"
# Every process spawned by a NodeProcess, so that a failing test cannot leave a node running
# (see ``reap_spawned``, called after every test by an autouse fixture in conftest.py).
_SPAWNED: list[subprocess.Popen[bytes]] = []


def reap_spawned() -> int:
    """SIGKILL every node or worker process a test left running; return how many there were."""
    left = [p for p in _SPAWNED if p.poll() is None]
    for proc in left:
        proc.kill()
        proc.wait()
    _SPAWNED.clear()
    return len(left)


SHIPPED = (WEIGHTS / "lumbar" / "cdss-lumbar-seg.pt", WEIGHTS / "cervical" / "cdss-cervical.pt")


def models_available(*which: str) -> tuple[bool, str]:
    """Whether the shipped weights of ``which`` (``"lumbar"``, ``"cervical"``; default both) exist."""
    wanted = which or ("lumbar", "cervical")
    paths = [p for p, name in zip(SHIPPED, ("lumbar", "cervical"), strict=True) if name in wanted]
    missing = [str(p.relative_to(WEIGHTS.parent.parent.parent)) for p in paths if not p.is_file()]
    return (not missing, ", ".join(missing))


def require_models(*which: str) -> None:
    """Skip (laptop) / fail (CI) when shipped model weights are not in the tree."""
    ok, missing = models_available(*which)
    require(
        ok,
        f"the shipped model weights ({missing})",
        "train and ship them (`cdss train ...`), see docs/analysis.md",
    )


def dcmtk_storescu() -> str:
    """Path of DCMTK's storescu (the virtualenv may shadow it with pynetdicom's app of the same name)."""
    candidates = [shutil.which("storescu"), "/usr/bin/storescu", "/usr/local/bin/storescu"]
    for exe in candidates:
        if not exe or not os.path.exists(exe):
            continue
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in out.lower():
            return exe
    require(False, "DCMTK `storescu`", "install it with `apt-get install dcmtk`")
    raise AssertionError("unreachable")


@dataclass
class StorescuReport:
    """What storescu said: files it got a success response for, and the rest."""

    returncode: int
    acknowledged: list[Path]
    failed: list[Path]
    output: str


def storescu(
    files: Iterable[Path],
    port: int,
    *,
    aec: str = "CDSS",
    aet: str = "MODALITY",
    host: str = "127.0.0.1",
    timeout: float = 600,
    extra: Iterable[str] = (),
) -> StorescuReport:
    """Send ``files`` with DCMTK storescu (``-v``) and report which were acknowledged with Success.

    A file counts as acknowledged only when storescu logged ``Received Store Response (Success)``
    (or a warning status) right after sending it.
    """
    files = [Path(f) for f in files]
    cmd = [dcmtk_storescu(), "-v", "-aet", aet, "-aec", aec, *extra, host, str(port), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in out.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = Path(m.group(1).strip())
            continue
        m = re.search(r"Received Store Response \((.+)\)", line)
        if m and current is not None:
            status = m.group(1)
            if status.startswith("Success") or status.startswith("Warning"):
                acknowledged.append(current)
            current = None
    failed = [f for f in files if f not in set(acknowledged)]
    return StorescuReport(proc.returncode, acknowledged, failed, out)


def synthetic_images(out: Path, kinds: Iterable[tuple[str, int]], *, max_side: int = 512) -> list[Path]:
    """Write synthetic radiographs (``cdss.synth``), Explicit VR Little Endian, one file per image.

    ``kinds`` is ``(kind, index)`` pairs, e.g. ``("lumbar_lateral", 0)``; seeds are fixed.
    """
    from cdss.synth.generator import generate

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, index in kinds:
        ds, _truth = generate(kind, seed=4242, index=index, max_side=max_side)
        path = out / f"{kind}_{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class NodeProcess:
    """A ``cdss serve`` subprocess with its own configuration, database and spool under ``workdir``."""

    workdir: Path
    destinations: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    dicom_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    database_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    starts: int = 0
    banner: str = ""  # the last start's banner (set by fixtures that start it)

    @property
    def config_path(self) -> Path:
        return self.workdir / "cdss.toml"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.workdir / 'var' / 'cdss.db'}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"node-{self.starts}.log"

    def write_config(self) -> None:
        cfg: dict[str, Any] = {
            "dicom": {"ae_title": "CDSS", "port": self.dicom_port, "bind": "127.0.0.1"},
            "storage": {"path": str(self.workdir / "var" / "spool"), "min_free_mb": 0},
            "database": {"url": self.db_url},
            "api": {"enabled": True, "host": "127.0.0.1", "port": self.api_port},
            "dispatch": {"initial_backoff_s": 0.5, "max_backoff_s": 5.0, "connect_timeout_s": 5.0},
            "jobs": {"for_processing_wait_s": 2.0, "retry_backoff_s": 1.0, "reconcile_interval_s": 1.0},
            "logging": {"level": "INFO"},
            "destinations": self.destinations,
        }
        for section, values in self.extra.items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomli_w.dumps(cfg))

    def start(self, timeout: float = 120) -> str:
        """Start the node and wait for its banner; return the banner text."""
        self.write_config()
        self.starts += 1
        log = self.log_path.open("wb")
        self.proc = self._spawn("serve", log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cdss serve exited with {self.proc.returncode}:\n{self.log()}")
            if "cdss node is running" in self.log():
                wait_for_port("127.0.0.1", self.dicom_port, timeout=10)
                return self.log()
            time.sleep(0.1)
        raise TimeoutError(f"cdss serve did not start in {timeout} s:\n{self.log()}")

    def _spawn(self, command: str, log: Any, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("YOLO_OFFLINE", "1")
        for key in list(env):
            if key.startswith("CDSS_") and key != "CDSS_REQUIRE_PEERS":
                env.pop(key)
        cmd = [
            sys.executable,
            "-c",
            "from cdss.cli import main; main()",
            command,
            "--config",
            str(self.config_path),
        ]
        proc = subprocess.Popen(
            [*cmd, *args], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        _SPAWNED.append(proc)
        return proc

    def start_worker(self) -> None:
        """Start ``cdss worker`` (Celery) with the same configuration (jobs.backend = celery)."""
        with (self.workdir / "worker.log").open("wb") as log:
            self.worker = self._spawn("worker", log, "--concurrency", "1")

    def stop_worker(self, timeout: float = 60) -> int | None:
        """SIGTERM the worker (Celery warm shutdown) and return its exit code."""
        if self.worker is None:
            return None
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        rc = self.worker.returncode
        self.worker = None
        return rc

    def worker_log(self) -> str:
        try:
            return (self.workdir / "worker.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait (graceful shutdown); return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        """SIGKILL (a crash) and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def database(self) -> Any:
        from cdss.db import Database

        return Database(self.db_url, run_migrations=False)
