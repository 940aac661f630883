"""Receiving images from a real modality (DCMTK storescu/echoscu) into the in-process node.

Checked for every accepted image: C-STORE-RSP status, the study/series/instance rows, the queued
job (and the on_job_created callback), the audit event, and the spool file (hash-named, byte-exact
dataset as sent).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from sqlalchemy import select

from cdss.db import Instance, Job, JobState, Series, Study
from tests.dicom_factory import (
    CR,
    DX_PRESENTATION,
    DX_PROCESSING,
    SC,
    SC_MF_BYTE,
    SC_MF_WORD,
    dcmtk_compress,
    make_image,
    write,
)
from tests.receive_support import (
    Node,
    audit_rows,
    dataset_bytes,
    dcmtk_binary,
    echoscu,
    pynetdicom_store,
    rows,
    run_node,
    spool_files,
    storescu,
    temp_files,
)

pytestmark = pytest.mark.integration


def _instance(node: Node, sop_instance_uid: str) -> Instance:
    with node.db.session() as s:
        return s.execute(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)).scalar_one()


def _assert_stored(node: Node, sent: Path, transfer_syntax: str) -> Instance:
    """The instance from ``sent`` is in the DB, queued, audited and byte-exact in the spool."""
    ds = dcmread(sent, stop_before_pixels=True)
    inst = _instance(node, ds.SOPInstanceUID)
    assert inst.transfer_syntax_uid == transfer_syntax
    assert inst.sop_class_uid == ds.SOPClassUID
    assert inst.calling_ae_title == "MODALITY"
    assert inst.peer_address == "127.0.0.1"
    # Spool: the key is the file's hash, nothing from the peer.
    stored = node.spool.read(inst.spool_key)
    assert hashlib.sha256(stored).hexdigest() == inst.sha256
    assert inst.spool_key == f"instances/{inst.sha256[:2]}/{inst.sha256[2:4]}/{inst.sha256}.dcm"
    assert ds.SOPInstanceUID not in inst.spool_key
    assert stored[:128] == b"\x00" * 128 and stored[128:132] == b"DICM"
    back = dcmread(node.spool.path(inst.spool_key))
    assert back.file_meta.TransferSyntaxUID == transfer_syntax
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    with node.db.session() as s:
        job = s.execute(select(Job).where(Job.instance_id == inst.id)).scalar_one()
        assert job.state is JobState.QUEUED
        assert job.id in node.jobs
        series = s.get(Series, inst.series_id)
        assert series is not None and series.series_instance_uid == ds.SeriesInstanceUID
        study = s.get(Study, series.study_id)
        assert study is not None and study.study_instance_uid == ds.StudyInstanceUID
        assert study.patient_id == ds.PatientID
        assert study.accession_number == ds.AccessionNumber
    events = [
        e
        for e in audit_rows(node, "DICOM Instances Transferred")
        if e.detail and e.detail.get("sop_instance_uid") == ds.SOPInstanceUID and e.outcome == 0
    ]
    assert len(events) == 1
    event = events[0]
    assert event.event_id == "110104"
    assert event.action == "C"
    assert event.user == "AETITLE=MODALITY"
    assert event.source == "127.0.0.1"
    assert event.study_instance_uid == ds.StudyInstanceUID
    assert event.patient_id == ds.PatientID
    assert event.accession_number == ds.AccessionNumber
    assert event.detail["job_id"] == job.id
    return inst


def test_c_echo(tmp_path: Path) -> None:
    with run_node(tmp_path) as node:
        proc = echoscu(node)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Received Echo Response (Success)" in proc.stdout + proc.stderr


def test_stop_frees_the_port_even_when_the_accept_loop_is_stuck(tmp_path: Path) -> None:
    # Seen in CI: an orphaned child receiver waited in socketserver's unbounded shutdown() while
    # its port still accepted. Here the accept loop is held in service_actions() on purpose.
    hold = threading.Event()
    with run_node(tmp_path) as node:
        server = node.receiver._server
        assert server is not None
        port = node.port
        stuck = threading.Event()

        def stuck_loop() -> None:
            stuck.set()
            hold.wait()

        server.service_actions = stuck_loop  # type: ignore[method-assign]
        assert stuck.wait(timeout=30)
        stopper = threading.Thread(target=node.receiver.stop)
        stopper.start()
        stopper.join(timeout=60)
        try:
            assert not stopper.is_alive(), "Receiver.stop() waited for a stuck accept loop"
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        finally:
            hold.set()


def test_store_dx_cr_and_sc_classes(tmp_path: Path, db_url: str) -> None:
    files = [
        write(make_image(DX_PRESENTATION), tmp_path / "dx.dcm"),
        write(make_image(DX_PROCESSING), tmp_path / "dxp.dcm"),
        write(make_image(CR), tmp_path / "cr.dcm"),
        write(make_image(SC), tmp_path / "sc.dcm"),
        write(make_image(SC_MF_BYTE, frames=3), tmp_path / "scb.dcm"),
        write(make_image(SC_MF_WORD, frames=2), tmp_path / "scw.dcm"),
    ]
    with run_node(tmp_path, db_url) as node:
        result = storescu(node, *files)
        assert result.statuses == [0x0000] * len(files), result.output
        assert result.returncode == 0
        for f in files:
            _assert_stored(node, f, ExplicitVRLittleEndian)
        assert rows(node) == {"studies": 6, "series": 6, "instances": 6, "jobs": 6}
        assert len(node.jobs) == 6
        assert temp_files(node) == []


def test_many_instances_of_one_study_share_rows(tmp_path: Path) -> None:
    study, series = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    files = [
        write(make_image(study_uid=study, series_uid=series, seed=i), tmp_path / f"{i}.dcm") for i in range(5)
    ]
    with run_node(tmp_path) as node:
        result = storescu(node, *files)
        assert result.statuses == [0] * 5, result.output
        assert rows(node) == {"studies": 1, "series": 1, "instances": 5, "jobs": 5}


def test_storescu_converts_to_implicit(tmp_path: Path) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    with run_node(tmp_path) as node:
        result = storescu(node, sent, options=("-xi",))
        assert result.statuses == [0], result.output
        _assert_stored(node, sent, ImplicitVRLittleEndian)


def test_concurrent_associations_into_one_study(tmp_path: Path, db_url: str) -> None:
    """Three modalities send the same study at once (row upserts race; duplicates race too)."""
    from concurrent.futures import ThreadPoolExecutor

    study, series = "1.2.826.0.1.3680043.8.498.61", "1.2.826.0.1.3680043.8.498.62"
    batches = [
        [
            write(make_image(study_uid=study, series_uid=series, seed=10 * b + i), tmp_path / f"{b}-{i}.dcm")
            for i in range(4)
        ]
        for b in range(3)
    ]
    shared = batches[0][0]  # also sent by every association: an exact duplicate race
    with run_node(tmp_path, db_url) as node, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda files: storescu(node, shared, *files), batches))
        for result in results:
            assert result.statuses == [0] * 5, result.output
        assert rows(node) == {"studies": 1, "series": 1, "instances": 12, "jobs": 12}
        assert len(spool_files(node)) == 12
        assert len(set(node.jobs)) == 12


@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian], ids=["big-endian", "deflated"]
)
def test_store_big_endian_and_deflated(tmp_path: Path, transfer_syntax: str) -> None:
    # storescu offers these only next to Explicit VR Little Endian, which the node prefers; a
    # pynetdicom SCU proposes exactly one syntax and sends the file's bytes unchanged.
    sent = write(make_image(), tmp_path / "dx.dcm", transfer_syntax)
    with run_node(tmp_path) as node:
        statuses = pynetdicom_store(node, sent, transfer_syntax=transfer_syntax)
        assert statuses == [0]
        inst = _assert_stored(node, sent, transfer_syntax)
        assert node.spool.read(inst.spool_key).endswith(dataset_bytes(sent))
        assert dcmread(node.spool.path(inst.spool_key)).pixel_array.shape == (128, 96)


def _dcmtk_encoded(tmp_path: Path, tool: str, option: str, bits: int) -> Path:
    src = write(make_image(bits=bits), tmp_path / f"src-{option}.dcm")
    return dcmtk_compress(src, tmp_path / f"enc{option}.dcm", dcmtk_binary(tool), option)


@pytest.mark.parametrize(
    ("tool", "option", "bits", "transfer_syntax", "propose"),
    [
        ("dcmcjpeg", "+eb", 8, JPEGBaseline8Bit, "-xy"),
        ("dcmcjpeg", "+ee", 12, JPEGExtended12Bit, "-xx"),
        ("dcmcjpeg", "+el", 12, "1.2.840.10008.1.2.4.57", None),
        ("dcmcjpeg", "+e1", 12, JPEGLosslessSV1, "-xs"),
        ("dcmcjpls", "+el", 12, JPEGLSLossless, "-xt"),
        ("dcmcjpls", "+en", 12, "1.2.840.10008.1.2.4.81", "-xu"),
        ("dcmcrle", "+ff", 12, RLELossless, "-xr"),
    ],
    ids=[
        "jpeg-baseline",
        "jpeg-extended",
        "jpeg-lossless",
        "jpeg-lossless-sv1",
        "jpeg-ls",
        "jpeg-ls-near",
        "rle",
    ],
)
def test_store_dcmtk_compressed(
    tmp_path: Path, tool: str, option: str, bits: int, transfer_syntax: str, propose: str | None
) -> None:
    sent = _dcmtk_encoded(tmp_path, tool, option, bits)
    assert dcmread(sent).file_meta.TransferSyntaxUID == transfer_syntax
    with run_node(tmp_path) as node:
        if propose:
            result = storescu(node, sent, options=(propose,))
            assert result.statuses == [0], result.output
        else:  # storescu has no option to propose JPEG Process 14 (non-SV1)
            assert pynetdicom_store(node, sent) == [0]
        inst = _assert_stored(node, sent, transfer_syntax)
        # The dataset is stored exactly as sent (no transcoding), and a worker can decode it.
        assert node.spool.read(inst.spool_key).endswith(dataset_bytes(sent))
        assert dcmread(node.spool.path(inst.spool_key)).pixel_array.shape == (128, 96)


@pytest.mark.parametrize(
    ("transfer_syntax", "propose", "kwargs"),
    [(JPEG2000Lossless, "-xv", {}), (JPEG2000, "-xw", {"j2k_cr": [20]})],
    ids=["j2k-lossless", "j2k"],
)
def test_store_pydicom_encoded_jpeg2000(
    tmp_path: Path, transfer_syntax: str, propose: str, kwargs: dict[str, object]
) -> None:
    sent = write(make_image(), tmp_path / "j2k.dcm", transfer_syntax, **kwargs)
    with run_node(tmp_path) as node:
        result = storescu(node, sent, options=(propose,))
        assert result.statuses == [0], result.output
        inst = _assert_stored(node, sent, transfer_syntax)
        assert node.spool.read(inst.spool_key).endswith(dataset_bytes(sent))


def test_exact_duplicate_is_acknowledged_without_a_second_job(tmp_path: Path, db_url: str) -> None:
    sent = write(make_image(), tmp_path / "dx.dcm")
    with run_node(tmp_path, db_url) as node:
        first = storescu(node, sent)
        again = storescu(node, sent, sent)
        assert first.statuses == [0] and again.statuses == [0, 0], again.output
        assert rows(node)["instances"] == 1 and rows(node)["jobs"] == 1
        assert len(node.jobs) == 1
        assert len([p for p in spool_files(node)]) == 1
        dup_events = [
            e for e in audit_rows(node, "DICOM Instances Transferred") if (e.detail or {}).get("duplicate")
        ]
        assert [e.detail["duplicate"] for e in dup_events] == ["identical", "identical"]
        assert all(e.outcome == 0 for e in dup_events)


def test_same_uid_different_content_keeps_the_first(tmp_path: Path, db_url: str) -> None:
    uid = "1.2.826.0.1.3680043.8.498.77"
    first = write(make_image(sop_instance_uid=uid, seed=1), tmp_path / "a.dcm")
    second = write(make_image(sop_instance_uid=uid, seed=2, patient_id="OTHER"), tmp_path / "b.dcm")
    with run_node(tmp_path, db_url) as node:
        assert storescu(node, first).statuses == [0]
        inst_before = _instance(node, uid)
        result = storescu(node, second)
        assert result.statuses == [0], result.output
        inst_after = _instance(node, uid)
        assert inst_after.sha256 == inst_before.sha256
        assert node.spool.read(inst_after.spool_key).endswith(dataset_bytes(first))
        assert rows(node)["jobs"] == 1
        assert len(spool_files(node)) == 1  # the second copy was not kept
        conflict = [
            e
            for e in audit_rows(node, "DICOM Instances Transferred")
            if (e.detail or {}).get("duplicate") == "conflict"
        ]
        assert len(conflict) == 1
        assert conflict[0].outcome == 4  # minor failure: a warning for the administrator
        assert conflict[0].patient_id == "OTHER"
        assert conflict[0].detail["stored_sha256"] == inst_before.sha256


def test_same_study_uid_for_another_patient_is_kept_and_flagged(tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.31"
    first = write(make_image(study_uid=study, patient_id="P-A", seed=1), tmp_path / "a.dcm")
    second = write(make_image(study_uid=study, patient_id="P-B", seed=2), tmp_path / "b.dcm")
    with run_node(tmp_path) as node:
        assert storescu(node, first, second).statuses == [0, 0]
        assert rows(node)["studies"] == 1 and rows(node)["instances"] == 2
        events = [e for e in audit_rows(node, "DICOM Instances Transferred") if e.outcome == 0]
        assert [e.patient_id for e in events] == ["P-A", "P-B"]  # the audit keeps what each said
        assert events[0].detail["relational_mismatch"] is None
        assert events[1].detail["relational_mismatch"] == [
            "PatientID differs from the study's first instance"
        ]


def test_instance_row_copies_routing_tags(tmp_path: Path) -> None:
    sent = write(make_image(body_part="CSPINE", view_position="RAO"), tmp_path / "c.dcm")
    with run_node(tmp_path) as node:
        assert storescu(node, sent).statuses == [0]
        inst = _instance(node, dcmread(sent).SOPInstanceUID)
        assert (inst.modality, inst.body_part_examined, inst.view_position) == ("DX", "CSPINE", "RAO")
        assert (inst.rows, inst.columns) == (128, 96)
        assert inst.presentation_intent == "FOR PRESENTATION"
        assert inst.photometric_interpretation == "MONOCHROME2"


def test_restart_sweeps_temp_files_and_orphans(tmp_path: Path) -> None:
    import os
    import time

    with run_node(tmp_path) as node:
        stored = node.spool.store_instance(b"orphan: written, never committed")
        kept_file = write(make_image(), tmp_path / "dx.dcm")
        assert storescu(node, kept_file).statuses == [0]
        temp = node.spool.path(stored.key).parent / ".tmp-crashed.part"
        temp.write_bytes(b"torn")
        old = time.time() - 7200
        for path in (node.spool.path(stored.key), temp):
            os.utime(path, (old, old))
    # Same spool and database, new process-equivalent start.
    with run_node(tmp_path) as node:
        assert not temp.exists()
        assert not node.spool.exists(stored.key)
        inst = _instance(node, dcmread(kept_file).SOPInstanceUID)
        assert node.spool.verify(inst.spool_key)


def test_no_patient_data_in_the_application_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import structlog

    secrets = ("Secret^Person", "PHI-ID-4711", "ACC-PHI-99", "19551231")
    uid = "1.2.826.0.1.3680043.8.498.4711"

    def phi_image(seed: int, rows: int = 128):  # type: ignore[no-untyped-def]
        ds = make_image(
            patient_name=secrets[0],
            patient_id=secrets[1],
            accession=secrets[2],
            sop_instance_uid=uid,
            seed=seed,
        )
        ds.PatientBirthDate = secrets[3]
        ds.Rows = rows
        return ds

    good = write(phi_image(1), tmp_path / "good.dcm")
    conflicting = write(phi_image(2), tmp_path / "conflict.dcm")
    bad = write(phi_image(3, rows=0), tmp_path / "bad.dcm")
    with (
        structlog.testing.capture_logs() as events,
        caplog.at_level(logging.DEBUG),
        run_node(tmp_path) as node,
    ):
        result = storescu(node, good, good, conflicting, bad)
        assert result.statuses == [0, 0, 0, 0xA910]
    logged = repr(events) + caplog.text
    assert any(e.get("event") == "c_store" for e in events)  # the capture did see the node's log
    for secret in secrets:
        assert secret not in logged


def test_synthetic_radiographs_arrive_intact_and_route(tmp_path: Path) -> None:
    """cdss.synth images go through storescu → node; the stored header routes to their kind."""
    from cdss.config import Analysis, RouteSettings
    from cdss.route import route
    from cdss.synth import generate

    expected = {
        "lumbar_lateral": Analysis.LUMBAR_LATERAL,
        "lumbar_ap": Analysis.LUMBAR_AP,
        "cervical_oblique": Analysis.CERVICAL_OBLIQUE,
        "other": Analysis.NOT_APPLICABLE,
    }
    files = {}
    for index, kind in enumerate(expected):
        ds, _ = generate(kind, seed=3, index=index, max_side=384)
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[kind] = path
    with run_node(tmp_path) as node:
        result = storescu(node, *files.values())
        assert result.statuses == [0] * len(files), result.output
        for kind, path in files.items():
            sent = dcmread(path, stop_before_pixels=True)
            inst = _assert_stored(node, path, str(sent.file_meta.TransferSyntaxUID))
            header = dcmread(node.spool.path(inst.spool_key), stop_before_pixels=True)
            assert route(header, RouteSettings(), inst.calling_ae_title).analysis is expected[kind]


def test_reconcile_refuses_when_spool_and_database_do_not_belong_together(tmp_path: Path) -> None:
    import os
    import time

    from cdss.store import SpoolArea
    from cdss.store.orphans import sweep_orphans

    files = [write(make_image(seed=i), tmp_path / f"{i}.dcm") for i in range(12)]
    with run_node(tmp_path) as node:
        assert storescu(node, *files).statuses == [0] * 12
        old = time.time() - 7200
        for path in spool_files(node):
            os.utime(path, (old, old))
        keys = sorted(p.relative_to(node.spool.root).as_posix() for p in spool_files(node))
    # The same spool with a new, empty database (a configuration mistake): nothing is deleted.
    with run_node(tmp_path, f"sqlite:///{tmp_path / 'other.db'}") as node:
        assert sorted(p.relative_to(node.spool.root).as_posix() for p in spool_files(node)) == keys
        assert sweep_orphans(node.db, node.spool, SpoolArea.INSTANCES) == 0
        assert len(spool_files(node)) == 12
