"""Dispatch: C-STORE of results to a real Orthanc / pynetdicom SCP, retries, dead letter, leases."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from cdss.config import Destination, DispatchSettings, Peer, SegProfile, Settings, StorageSettings
from cdss.db import AuditEvent, Database, Delivery, DeliveryState, utcnow
from cdss.dispatch import (
    DeliveryStateError,
    Dispatcher,
    claim_batch,
    reconcile_deliveries,
    retry_delivery,
)
from cdss.leases import new_owner
from cdss.route.destinations import delivery_targets, seg_profiles_wanted
from cdss.store import Spool
from tests.jobs_helpers import add_jobs, add_results, make_sc
from tests.peers import Orthanc, free_port, run_orthanc

pytestmark = pytest.mark.integration

FAST = DispatchSettings(
    max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.2, connect_timeout_s=3, batch_size=10, workers=1
)


def _settings(tmp_path: Path, port: int, ae: str = "ORTHANC", **dispatch) -> Settings:
    return Settings(
        storage=StorageSettings(path=tmp_path / "spool", min_free_mb=0, fsync=False),
        destinations=[Destination(name="pacs", ae_title=ae, host="127.0.0.1", port=port, send_sc=True)],
        dispatch=FAST.model_copy(update=dispatch),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    yield database
    database.dispose()


def _deliveries(db: Database) -> list[Delivery]:
    with db.session() as s:
        rows = list(s.execute(select(Delivery).order_by(Delivery.id)).scalars())
        for r in rows:
            s.expunge(r)
        return rows


def _setup(db: Database, settings: Settings, n: int = 3) -> tuple[Spool, list[str], str]:
    spool = Spool(settings.storage)
    study = generate_uid()
    (job_id,) = add_jobs(db, study_uid=study)
    datasets = [make_sc(study) for _ in range(n)]
    add_results(db, spool, settings, job_id, datasets)
    return spool, [str(ds.SOPInstanceUID) for ds in datasets], study


def _orthanc_sop_uids(pacs: Orthanc) -> list[str]:
    return [pacs.tags(i)["SOPInstanceUID"] for i in pacs.instances()]


def _drain(
    dispatcher: Dispatcher, db: Database, until_states: set[DeliveryState], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatcher.run_once()
        if {d.state for d in _deliveries(db)} <= until_states:
            return
        time.sleep(0.05)
    raise AssertionError(f"deliveries did not reach {until_states}: {[d.state for d in _deliveries(db)]}")


def test_results_reach_orthanc_over_one_association_with_audit(
    db: Database, orthanc: Orthanc, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, orthanc.dicom_port, orthanc.aet)
    spool, uids, study = _setup(db, settings, n=3)
    report = Dispatcher(settings, db, spool).run_once()
    assert report is not None and len(report.delivered) == 3
    rows = _deliveries(db)
    assert {r.state for r in rows} == {DeliveryState.DELIVERED}
    assert {r.last_status for r in rows} == {0} and all(r.delivered_at for r in rows)
    assert sorted(_orthanc_sop_uids(orthanc)) == sorted(uids)
    assert len(report.completed_jobs) == 1
    with db.session() as s:
        events = list(s.execute(select(AuditEvent).where(AuditEvent.event_id == "110104")).scalars())
    assert len(events) == 1  # one event per study batch and destination
    ev = events[0]
    assert ev.action == "R" and ev.outcome == 0 and ev.study_instance_uid == study
    assert ev.user == f"AETITLE={orthanc.aet}" and sorted(ev.detail["sop_instance_uids"]) == sorted(uids)
    assert ev.detail["destination"] == "pacs"
    assert Dispatcher(settings, db, spool).run_once() is None  # nothing left


def test_unreachable_pacs_retries_then_dead_letter_then_retry_delivers(db: Database, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    settings = _settings(tmp_path, port)
    spool, uids, _ = _setup(db, settings, n=2)
    dispatcher = Dispatcher(settings, db, spool)
    _drain(dispatcher, db, {DeliveryState.DEAD})
    rows = _deliveries(db)
    assert all(r.attempts == 3 and r.last_status is None for r in rows)
    assert all("could not associate" in r.last_error or "no answer" in r.last_error for r in rows)
    with db.session() as s:
        failure = s.execute(select(AuditEvent).where(AuditEvent.event_id == "110104")).scalar_one()
    assert failure.outcome == 8 and "dead-lettered" in failure.description

    with pytest.raises(DeliveryStateError, match="does not exist"):
        retry_delivery(db, 424242)
    with run_orthanc(tmp_path / "late-pacs", dicom_port=port) as pacs:
        for r in rows:
            assert retry_delivery(db, r.id).state is DeliveryState.PENDING
        with pytest.raises(DeliveryStateError, match="only dead"):
            retry_delivery(db, rows[0].id)
        _drain(dispatcher, db, {DeliveryState.DELIVERED})
        assert sorted(_orthanc_sop_uids(pacs)) == sorted(uids)
    assert all(r.attempts == 1 for r in _deliveries(db))


@contextmanager
def _scp(status: int = 0x0000, ae_title: str = "REFUSER", require_called: bool = False) -> Iterator[int]:
    """A pynetdicom Storage SCP that answers every C-STORE with ``status``."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.require_called_aet = require_called
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield port
    finally:
        server.shutdown()


def test_refusing_pacs_status_is_recorded_and_dead_lettered(db: Database, tmp_path: Path) -> None:
    with _scp(0xA700) as port:
        settings = _settings(tmp_path, port, "REFUSER")
        spool, _, _ = _setup(db, settings, n=2)
        _drain(Dispatcher(settings, db, spool), db, {DeliveryState.DEAD})
    rows = _deliveries(db)
    assert {r.last_status for r in rows} == {0xA700}
    assert all("0xA700" in r.last_error and r.attempts == 3 for r in rows)


def test_warning_statuses_count_as_delivered(db: Database, tmp_path: Path) -> None:
    with _scp(0xB007) as port:
        settings = _settings(tmp_path, port, "REFUSER")
        spool, _, _ = _setup(db, settings, n=1)
        Dispatcher(settings, db, spool).run_once()
    (row,) = _deliveries(db)
    assert row.state is DeliveryState.DELIVERED and row.last_status == 0xB007


def test_rejected_association_reason_is_kept(db: Database, tmp_path: Path) -> None:
    with _scp(0, ae_title="REALNAME", require_called=True) as port:
        settings = _settings(tmp_path, port, "WRONGNAME", max_attempts=1)
        spool, _, _ = _setup(db, settings, n=1)
        Dispatcher(settings, db, spool).run_once()
    (row,) = _deliveries(db)
    assert row.state is DeliveryState.DEAD
    assert "rejected" in row.last_error and "Called AE" in row.last_error


def test_orthanc_refusing_the_transfer_syntax_dead_letters(db: Database, tmp_path: Path) -> None:
    jpeg_only = {"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2.4.50"]}
    with run_orthanc(tmp_path / "picky", extra=jpeg_only) as pacs:
        settings = _settings(tmp_path, pacs.dicom_port, pacs.aet, max_attempts=2)
        spool, _, _ = _setup(db, settings, n=1)
        _drain(Dispatcher(settings, db, spool), db, {DeliveryState.DEAD})
        assert pacs.instances() == []
    (row,) = _deliveries(db)
    assert row.last_status is None and row.attempts == 2
    assert "did not accept" in row.last_error or "rejected" in row.last_error or "associate" in row.last_error


def test_batches_are_per_destination_and_concurrent_claims_are_disjoint(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        settings = Settings(
            storage=StorageSettings(path=tmp_path / "spool", min_free_mb=0, fsync=False),
            destinations=[
                Destination(name="a", ae_title="A", host="127.0.0.1", port=1001, send_sc=True),
                Destination(name="b", ae_title="B", host="127.0.0.1", port=1002, send_sc=True),
            ],
            dispatch=FAST,
        )
        spool = Spool(settings.storage)
        study = generate_uid()
        for job_id in add_jobs(db, 10, study_uid=study):
            add_results(db, spool, settings, job_id, [make_sc(study) for _ in range(3)])
        assert len(_deliveries(db)) == 60

        claimed: list[int] = []
        lock = threading.Lock()

        def claimer() -> None:
            owner = new_owner("test")
            while batch := claim_batch(db, owner, 60, 7):
                assert len({c.destination for c in batch}) == 1
                with lock:
                    claimed.extend(c.id for c in batch)

        threads = [threading.Thread(target=claimer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(claimed) == 60 and max(Counter(claimed).values()) == 1

        # Leases expire: everything goes back to pending, then to dead at the attempt limit.
        later = utcnow() + dt.timedelta(seconds=120)
        assert len(reconcile_deliveries(db, now=later)) == 60
        assert {d.state for d in _deliveries(db)} == {DeliveryState.PENDING}
    finally:
        db.dispose()


def test_return_to_calling_ae_targets() -> None:
    settings = Settings(
        destinations=[Destination(name="pacs", ae_title="PACS", host="10.0.0.1", port=104, send_gsps=False)],
        peers=[
            Peer(ae_title="MODALITY", host="10.0.0.2", port=104),
            Peer(ae_title="PACSALIAS", host="10.0.0.1", port=104),
        ],
        dispatch=DispatchSettings(return_to_calling_ae=True),
    )
    assert [t.name for t in delivery_targets(settings, "SEG", "MODALITY")] == ["pacs", "calling-ae:MODALITY"]
    assert [t.name for t in delivery_targets(settings, "GSPS", "MODALITY")] == ["calling-ae:MODALITY"]
    assert [t.name for t in delivery_targets(settings, "SC", "MODALITY")] == []
    assert [t.name for t in delivery_targets(settings, "SR", "UNKNOWN")] == ["pacs"]
    # The peer's address equals a destination's (modulo AE title): both get it.
    names = [t.name for t in delivery_targets(settings, "SR", "PACSALIAS")]
    assert names == ["pacs", "calling-ae:PACSALIAS"]
    settings.dispatch.return_to_calling_ae = False
    assert [t.name for t in delivery_targets(settings, "SEG", "MODALITY")] == ["pacs"]


def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    from tests.peers import require_binary

    exe = require_binary("openssl", "openssl")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _pki(base: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (files in ``base``)."""
    base.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=base,
    )  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (base / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        )
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=base,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=base,
        )  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in base.iterdir()}


def test_tls_destination_with_mutual_authentication(db: Database, tmp_path: Path) -> None:
    import ssl

    pki = _pki(tmp_path / "pki")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca_crt"]))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(str(pki["server_crt"]), str(pki["server_key"]))
    received: list[str] = []
    ae = AE(ae_title="TLSPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=server_ctx,
        evt_handlers=[
            (evt.EVT_C_STORE, lambda e: received.append(str(e.request.AffectedSOPInstanceUID)) or 0)
        ],
    )
    try:
        settings = _settings(tmp_path, port, "TLSPACS", max_attempts=1)
        good = settings.destinations[0].model_copy(
            update={
                "tls": True,
                "tls_ca_certificates": pki["ca_crt"],
                "tls_certificate": pki["client_crt"],
                "tls_private_key": pki["client_key"],
            }
        )
        settings = settings.model_copy(update={"destinations": [good]})
        spool, uids, _ = _setup(db, settings, n=2)
        report = Dispatcher(settings, db, spool).run_once()
        assert report is not None and len(report.delivered) == 2
        assert sorted(received) == sorted(uids)

        # Without a client certificate the server refuses the handshake: a failed attempt, with the reason.
        no_cert = good.model_copy(update={"tls_certificate": None, "tls_private_key": None})
        settings2 = settings.model_copy(update={"destinations": [no_cert]})
        _setup(db, settings2, n=1)
        Dispatcher(settings2, db, spool).run_once()
        dead = [d for d in _deliveries(db) if d.state is DeliveryState.DEAD]
        assert len(dead) == 1 and dead[0].last_status is None and dead[0].last_error
    finally:
        server.shutdown()


def test_pacs_dropping_the_association_mid_batch(db: Database, tmp_path: Path) -> None:
    """The PACS aborts after the first object: it is delivered, the others are retried and delivered later."""
    seen: list[str] = []

    def on_store(event: evt.Event) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) == 2:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title="FLAKY")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 2  # the aborted association ends quickly
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        settings = _settings(tmp_path, port, "FLAKY")
        spool, uids, _ = _setup(db, settings, n=4)
        dispatcher = Dispatcher(settings, db, spool)
        first = dispatcher.run_once()
        assert first is not None and len(first.delivered) == 1 and len(first.retry) == 3
        pending = [d for d in _deliveries(db) if d.state is DeliveryState.PENDING]
        assert all(d.last_error and d.last_status is None for d in pending)
        _drain(dispatcher, db, {DeliveryState.DELIVERED})
    finally:
        server.shutdown()
    assert set(uids) <= set(seen)


def test_seg_profile_per_destination_targets() -> None:
    """Each destination gets the SEG of its own profile, exactly one; the calling AE the default."""
    settings = Settings(
        destinations=[
            Destination(name="pacs", ae_title="PACS", host="10.0.0.1", port=104),
            Destination(name="ohif", ae_title="OHIF", host="10.0.0.3", port=104, seg_profile="ohif"),
            Destination(
                name="noseg", ae_title="NOSEG", host="10.0.0.4", port=104, send_seg=False, seg_profile="ohif"
            ),
        ],
        peers=[Peer(ae_title="MODALITY", host="10.0.0.2", port=104)],
        dispatch=DispatchSettings(return_to_calling_ae=True),
    )
    assert seg_profiles_wanted(settings) == [SegProfile.STANDARD, SegProfile.OHIF]
    assert [t.name for t in delivery_targets(settings, "SEG", "MODALITY")] == ["pacs", "calling-ae:MODALITY"]
    assert [t.name for t in delivery_targets(settings, "SEG", "MODALITY", "standard")] == [
        "pacs",
        "calling-ae:MODALITY",
    ]
    assert [t.name for t in delivery_targets(settings, "SEG", "MODALITY", SegProfile.OHIF)] == ["ohif"]
    # Other kinds ignore the profile.
    assert [t.name for t in delivery_targets(settings, "SR", "MODALITY")] == [
        "pacs",
        "ohif",
        "noseg",
        "calling-ae:MODALITY",
    ]
    # The node-wide profile is the default of destinations without one.
    settings.results.seg_profile = SegProfile.OHIF
    assert seg_profiles_wanted(settings) == [SegProfile.OHIF]
    assert [t.name for t in delivery_targets(settings, "SEG", None, SegProfile.OHIF)] == ["pacs", "ohif"]
    assert delivery_targets(settings, "SEG", None, SegProfile.STANDARD) == []
    with pytest.raises(ValueError):
        delivery_targets(settings, "SEG", None, "dicomweb")
