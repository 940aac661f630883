"""Association policy and TLS: rejected peers get A-ASSOCIATE-RJ and a Security Alert audit event."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from cdss.metrics import REGISTRY
from tests.dicom_factory import make_image, write
from tests.peers import require_binary
from tests.receive_support import Node, audit_rows, echoscu, rows, run_node, storescu

pytestmark = pytest.mark.integration


def _rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("cdss_associations_rejected_total", {"reason": reason}) or 0.0


def _security_alerts(node: Node) -> list:
    return audit_rows(node, "Security Alert")


def _assert_alert(node: Node, reason: str, outcome: int, *, calling: str | None = "MODALITY") -> None:
    alerts = [a for a in _security_alerts(node) if (a.detail or {}).get("reason") == reason]
    assert alerts, f"no Security Alert with reason {reason}"
    alert = alerts[-1]
    assert alert.event_id == "110113"
    assert alert.event_type == "Node Authentication"
    assert alert.outcome == outcome
    assert alert.source == "127.0.0.1"
    if calling:
        assert alert.user == f"AETITLE={calling}"


def test_calling_ae_not_allowed_is_rejected_and_audited(tmp_path: Path, db_url: str) -> None:
    before = _rejections("calling_aet_not_allowed")
    with run_node(tmp_path, db_url, dicom={"allowed_calling_aets": ["CR1", "DX2"]}) as node:
        proc = echoscu(node, aet="MODALITY")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "Association Rejected" in out
        assert "Calling AE Title Not Recognized" in out
        _assert_alert(node, "calling_aet_not_allowed", 8)
        assert _rejections("calling_aet_not_allowed") == before + 1
        # An allowed AE title gets through, and a rejected peer stored nothing.
        assert echoscu(node, aet="DX2").returncode == 0
        sent = write(make_image(), tmp_path / "dx.dcm")
        assert storescu(node, sent, aet="INTRUDER").statuses == []
        assert rows(node)["instances"] == 0
        assert storescu(node, sent, aet="CR1").statuses == [0]


def test_wrong_called_ae_title_is_rejected(tmp_path: Path) -> None:
    with run_node(tmp_path) as node:
        proc = echoscu(node, aec="SOMEONE_ELSE")
        assert proc.returncode != 0
        assert "Called AE Title Not Recognized" in proc.stdout + proc.stderr
        _assert_alert(node, "called_aet_mismatch", 4)


def test_called_ae_check_can_be_disabled(tmp_path: Path) -> None:
    with run_node(tmp_path, dicom={"require_called_aet": False}) as node:
        assert echoscu(node, aec="ANYTHING").returncode == 0
        assert _security_alerts(node) == []


def test_source_address_allow_list(tmp_path: Path) -> None:
    with run_node(tmp_path, dicom={"allowed_addresses": ["10.0.0.0/8", "192.168.1.7"]}) as node:
        proc = echoscu(node)
        assert proc.returncode != 0
        assert "Association Rejected" in proc.stdout + proc.stderr
        _assert_alert(node, "address_not_allowed", 8)
    with run_node(tmp_path / "b", dicom={"allowed_addresses": ["127.0.0.0/8"]}) as node:
        assert echoscu(node).returncode == 0


def test_association_limit_is_rejected_transiently_and_audited(tmp_path: Path) -> None:
    with run_node(tmp_path, dicom={"max_associations": 1}) as node:
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", node.port, ae_title="CDSS")
        assert held.is_established
        try:
            proc = echoscu(node)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0
            assert "Association Rejected" in out
            assert "Local Limit Exceeded" in out
        finally:
            held.release()
        _assert_alert(node, "association_limit", 4)
        assert echoscu(node).returncode == 0


# --------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    exe = require_binary("openssl", "openssl")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


def _leaf(directory: Path, ca: tuple[Path, Path], name: str, usage: str) -> tuple[Path, Path]:
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext), cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A test CA with server and client certificates, plus a client of a foreign CA."""
    base = tmp_path_factory.mktemp("pki")
    ca = _ca(base, "ca")
    other = _ca(base / "other", "other-ca")
    return {
        "ca": ca,
        "server": _leaf(base, ca, "server", "serverAuth"),
        "client": _leaf(base, ca, "client", "clientAuth"),
        "stranger": _leaf(base / "other", other, "stranger", "clientAuth"),
    }


def _tls_node(tmp_path: Path, pki: dict[str, tuple[Path, Path]], **dicom: object):
    settings = {
        "tls_enabled": True,
        "tls_certificate": str(pki["server"][0]),
        "tls_private_key": str(pki["server"][1]),
        "tls_ca_certificates": str(pki["ca"][0]),
        "tls_require_client_certificate": True,
    }
    settings.update(dicom)
    return run_node(tmp_path, dicom=settings)


def _tls_args(pki: dict[str, tuple[Path, Path]], client: str = "client") -> tuple[str, ...]:
    cert, key = pki[client]
    return ("+tls", str(key), str(cert), "+cf", str(pki["ca"][0]))


def test_mutual_tls_echo_and_store(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    with _tls_node(tmp_path, pki) as node:
        proc = echoscu(node, options=_tls_args(pki))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = storescu(node, sent, options=_tls_args(pki))
        assert result.statuses == [0], result.output
        assert rows(node)["instances"] == 1
        assert _security_alerts(node) == []


def test_tls_client_of_a_foreign_ca_is_refused_and_audited(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]]
) -> None:
    before = _rejections("tls_failed")
    with _tls_node(tmp_path, pki) as node:
        proc = echoscu(node, options=_tls_args(pki, "stranger"))
        assert proc.returncode != 0
        _wait_for_alert(node, "tls_failed")
        _assert_alert(node, "tls_failed", 8, calling=None)
        assert _rejections("tls_failed") >= before + 1


def test_plain_dicom_on_the_tls_port_is_refused(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    with _tls_node(tmp_path, pki) as node:
        proc = echoscu(node)  # no TLS at all
        assert proc.returncode != 0
        _wait_for_alert(node, "tls_failed")


def test_tls_without_client_certificate_when_required(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]]
) -> None:
    with _tls_node(tmp_path, pki) as node:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"][0]))
        with socket.create_connection(("127.0.0.1", node.port), timeout=20) as raw:
            refused = False
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 16)
                    refused = tls.recv(1024) == b""  # TLS 1.3: the alert may arrive on first read
            except (ssl.SSLError, OSError):
                refused = True
            assert refused
        _wait_for_alert(node, "tls_failed")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_below_1_2_is_refused(tmp_path: Path, pki: dict[str, tuple[Path, Path]], version: str) -> None:
    with _tls_node(tmp_path, pki) as node:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(pki["ca"][0]))
        ctx.load_cert_chain(str(pki["client"][0]), str(pki["client"][1]))
        try:
            ctx.minimum_version = getattr(ssl.TLSVersion, version)
            ctx.maximum_version = getattr(ssl.TLSVersion, version)
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            pytest.fail(f"this OpenSSL cannot even offer {version}")
        with socket.create_connection(("127.0.0.1", node.port), timeout=20) as raw:
            try:
                ctx.wrap_socket(raw, server_hostname="localhost")
                refused_by = "nobody"
            except (ssl.SSLError, ConnectionError) as exc:
                refused_by = str(exc)
        # The client did offer the old version; the server refused it.
        assert refused_by != "nobody"
        assert "NO_PROTOCOLS_AVAILABLE" not in refused_by
        _wait_for_alert(node, "tls_failed")


def test_tls_1_3_is_negotiated_when_offered(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    with _tls_node(tmp_path, pki) as node:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(pki["ca"][0]))
        ctx.load_cert_chain(str(pki["client"][0]), str(pki["client"][1]))
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CDSS", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        version = assoc.dul.socket.socket.version()  # type: ignore[union-attr]
        status = assoc.send_c_echo()
        assoc.release()
        assert version == "TLSv1.3"
        assert status.Status == 0


def test_tls_handshake_does_not_block_other_peers(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    """A client that connects and never speaks must not stall the accept loop."""
    with _tls_node(tmp_path, pki) as node:
        idle = socket.create_connection(("127.0.0.1", node.port), timeout=20)
        try:
            done = threading.Event()
            result: dict[str, int] = {}

            def echo() -> None:
                result["rc"] = echoscu(node, options=_tls_args(pki)).returncode
                done.set()

            threading.Thread(target=echo, daemon=True).start()
            assert done.wait(60), "echo stalled behind an idle TLS connection"
            assert result["rc"] == 0
        finally:
            idle.close()


def _wait_for_alert(node: Node, reason: str) -> None:
    # The server audits the failed handshake in its own thread; give it a moment.
    import time

    for _ in range(100):
        if any((a.detail or {}).get("reason") == reason for a in _security_alerts(node)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no Security Alert with reason {reason}")
