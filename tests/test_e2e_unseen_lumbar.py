"""End to end on held-out lateral lumbar films of the second synthetic family, as a modality sends them.

``cdss serve`` as a subprocess, DCMTK ``storescu`` as the modality, Orthanc as the PACS. The
films are the committed family-B held-out set (``fixtures/heldout/lumbar-b``, a seed no training
set used: the independently designed anatomy and rendering model, MONOCHROME1 and 2, 8–16 bit,
ViewPosition absent or empty on some), plus
one of them with every view tag removed (no ViewPosition, PatientOrientation, BodyPartExamined,
view codes or descriptions: only the picture says what it is) and a chest radiograph whose
header says LSPINE. Checked:

* every lateral film — tagged or not — gets exactly one SEG, one SR and one GSPS in the PACS;
* the chest film labelled LSPINE gets nothing and its job is *not applicable*;
* every level the SR reports as measured is within 15 pp of the ground truth (a level may be
  missing or not measured; a wrong grade is what must not happen).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from cdss.db import Instance, Job, JobState
from cdss.encode import codes as C
from cdss.synth import generate
from tests.node_process import NodeProcess, storescu
from tests.peers import Orthanc, referenced_uids

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

SET_B = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "lumbar-b"
#: Tags that say what a film shows; all removed from one film so only the classifier can route it.
VIEW_TAGS = (
    "ViewPosition",
    "PatientOrientation",
    "BodyPartExamined",
    "ViewCodeSequence",
    "AnatomicRegionSequence",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "ImageComments",
    "AcquisitionDeviceProcessingDescription",
)


def _sr_slips(sr: Dataset) -> dict[str, float]:
    """Level name → slip % of every level the SR reports as measured."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=False).content
    slips = {}
    for group in report.get_image_measurement_groups():
        ident = str(group.tracking_identifier)
        if not ident.endswith(" spondylolisthesis"):
            continue
        found = group.get_measurements(name=C.PRIVATE.SLIP_PCT)
        if found:
            slips[ident.split()[0]] = float(found[0].value)
    return slips


def test_unseen_lateral_films_with_and_without_tags_get_results_within_15pp(
    pacs_node: NodeProcess, orthanc: Orthanc, tmp_path: Path
) -> None:
    node = pacs_node
    modality = tmp_path / "modality"
    modality.mkdir()
    chosen = sorted(SET_B.glob("*.dcm"))[::4]  # 5 films: standard and hard, both photometrics
    truth: dict[str, dict[str, float]] = {}
    files = []
    for src in chosen:
        ds = dcmread(src)
        truth[str(ds.SOPInstanceUID)] = {
            lv["level"]: lv["slip_percent"]
            for lv in json.loads(src.with_suffix(".json").read_text())["levels"]
        }
        # the committed files are JPEG-LS (small); a modality sends uncompressed, and storescu
        # cannot transcode JPEG-LS itself
        ds.decompress(generate_instance_uid=False)  # lossless: the same instance
        ds.save_as(modality / src.name, enforce_file_format=True)
        files.append(modality / src.name)
    untagged = dcmread(modality / chosen[0].name)
    for keyword in VIEW_TAGS:
        if keyword in untagged:
            delattr(untagged, keyword)
    untagged.SOPInstanceUID = hd.UID()
    untagged.file_meta.MediaStorageSOPInstanceUID = untagged.SOPInstanceUID
    truth[str(untagged.SOPInstanceUID)] = truth[
        str(dcmread(chosen[0], stop_before_pixels=True).SOPInstanceUID)
    ]
    untagged.save_as(modality / "untagged.dcm", enforce_file_format=True)
    files.append(modality / "untagged.dcm")
    chest, _ = generate("other", seed=9200, index=0, family="b", body_part="chest", max_side=512)
    chest.BodyPartExamined = "LSPINE"
    chest.save_as(modality / "chest_as_lspine.dcm", enforce_file_format=True)
    files.append(modality / "chest_as_lspine.dcm")

    report = storescu(files, node.dicom_port)
    assert report.returncode == 0 and report.failed == [], report.output

    expected = 3 * len(truth)
    objects = orthanc.wait_for_objects(expected, timeout=300)
    by_source: dict[str, list[Dataset]] = {}
    for ds in objects:
        for uid in referenced_uids(ds) & set(truth):
            by_source.setdefault(uid, []).append(ds)
    db = node.database()
    try:
        with db.session() as s:
            jobs = {
                uid: (state.value, reason)
                for uid, state, reason in s.execute(
                    select(Instance.sop_instance_uid, Job.state, Job.route_reason).join(
                        Instance, Job.instance_id == Instance.id
                    )
                ).all()
            }
    finally:
        db.dispose()
    assert len(objects) == expected, (f"{len(objects)} objects for {len(truth)} lateral films", jobs)
    for uid in truth:
        got = sorted(str(d.Modality) for d in by_source.get(uid, []))
        assert got == ["PR", "SEG", "SR"], (uid, got, jobs.get(uid))

    reported = 0
    for uid, levels in truth.items():
        (sr,) = [d for d in by_source[uid] if d.Modality == "SR"]
        for level, slip in _sr_slips(sr).items():
            reported += 1
            assert abs(slip - levels[level]) <= 15.0, (uid, level, slip, levels[level])
    assert reported >= len(truth)  # the films are measured, not all abstained

    assert jobs[str(chest.SOPInstanceUID)][0] == JobState.NOT_APPLICABLE.value, jobs[
        str(chest.SOPInstanceUID)
    ]
