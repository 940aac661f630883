"""Real peers for the test-suite: DCMTK, dicom3tools, Orthanc, PostgreSQL, RabbitMQ, Chromium.

A test that needs a peer calls :func:`require` (or uses a fixture from ``conftest.py``). When the
peer is missing the test is *skipped* with the reason on a developer's laptop, but *fails* when
``CDSS_REQUIRE_PEERS=1`` (set by ``.ci/run`` / ``make test``), so CI never goes green by skipping.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

__all__ = [
    "DICOMWEB_PLUGIN",
    "Orthanc",
    "dciodvfy_errors",
    "free_port",
    "peers_required",
    "require",
    "require_binary",
    "run_orthanc",
]

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def peers_required() -> bool:
    return os.environ.get("CDSS_REQUIRE_PEERS", "") not in ("", "0", "false", "no")


def require(available: bool, what: str, how: str) -> None:
    """Skip (laptop) or fail (CI) when a peer is not available."""
    if available:
        return
    message = f"{what} is not available; {how}"
    if peers_required():
        pytest.fail(f"CDSS_REQUIRE_PEERS=1 but {message}", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    require(
        path is not None, f"`{name}`", f"install it with `apt-get install {package}` (or run `make test`)"
    )
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def dciodvfy_errors(path: Path | str) -> list[str]:
    """Run ``dciodvfy -new`` and return its ``Error`` lines (the exit code is not reliable)."""
    exe = require_binary("dciodvfy", "dicom3tools")
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if line.startswith("Error")]


@dataclass
class Orthanc:
    """A running Orthanc (the PACS in tests)."""

    aet: str
    dicom_port: int
    http_port: int
    storage: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def instances(self) -> list[str]:
        return list(self.get("/instances").json())

    def tags(self, orthanc_id: str) -> dict:
        return dict(self.get(f"/instances/{orthanc_id}/simplified-tags").json())

    def file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file").content

    def destination(self, name: str = "pacs") -> dict[str, object]:
        """This Orthanc as a ``[[destinations]]`` entry of a cdss configuration."""
        return {"name": name, "ae_title": self.aet, "host": "127.0.0.1", "port": self.dicom_port}

    def objects(self) -> list[Dataset]:
        """Every instance Orthanc holds, read back as a dataset."""
        return [dcmread(io.BytesIO(self.file(i))) for i in self.instances()]

    def wait_for_objects(self, count: int, timeout: float) -> list[Dataset]:
        """At least ``count`` instances (then one more second for unexpected extras), else fail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.instances()) >= count:
                time.sleep(1.0)  # let any (unexpected) extra object arrive too
                return self.objects()
            time.sleep(0.5)
        raise AssertionError(
            f"{len(self.instances())} of {count} result objects reached the PACS in {timeout} s"
        )


def referenced_uids(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in ``ds`` (SEG, SR evidence, GSPS references)."""
    return {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID" and e.value}


@contextmanager
def run_orthanc(
    workdir: Path,
    *,
    aet: str = "ORTHANC",
    dicomweb: bool = False,
    modalities: dict[str, tuple[str, str, int]] | None = None,
    extra: dict | None = None,
    dicom_port: int | None = None,
) -> Iterator[Orthanc]:
    """Start Orthanc on free loopback ports with its own storage; stop it afterwards.

    ``dicom_port`` pins the DICOM port (e.g. a destination that was unreachable comes up).
    """
    exe = require_binary("Orthanc", "orthanc")
    if dicomweb:
        require(
            DICOMWEB_PLUGIN.exists(),
            "Orthanc DICOMweb plugin",
            "install it with `apt-get install orthanc-dicomweb`",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "orthanc-storage"
    dicom_port, http_port = dicom_port or free_port(), free_port()
    config = {
        "Name": "cdss-test-pacs",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
        "StableAge": 1,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/", "EnableWado": True},
        "HttpServerEnabled": True,
        "LogExportedResources": False,
    }
    config = {k: v for k, v in config.items() if v is not None}
    config.update(extra or {})
    cfg_path = workdir / "orthanc.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    log = (workdir / "orthanc.log").open("wb")
    proc = subprocess.Popen([exe, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", http_port, timeout=60)
        wait_for_port("127.0.0.1", dicom_port, timeout=60)
        yield Orthanc(aet=aet, dicom_port=dicom_port, http_port=http_port, storage=storage, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
