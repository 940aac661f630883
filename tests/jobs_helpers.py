"""Helpers for the job/dispatch tests: database rows as the receiver would create them."""

from __future__ import annotations

import hashlib
import itertools

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cdss.db import Database, Instance, Job, Series, Study

_counter = itertools.count(1)


def add_jobs(
    db: Database,
    n: int = 1,
    *,
    max_attempts: int = 3,
    calling_aet: str = "MODALITY",
    study_uid: str | None = None,
) -> list[int]:
    """Insert ``n`` instances (one study, one series) with a queued job each; return the job ids."""
    study_uid = study_uid or generate_uid()
    ids: list[int] = []
    with db.session() as s:
        study = s.query(Study).filter_by(study_instance_uid=study_uid).one_or_none()
        if study is None:
            study = Study(study_instance_uid=study_uid, patient_id="TEST^ID", patient_name="Test^Patient")
            s.add(study)
            s.flush()
        series = Series(series_instance_uid=generate_uid(), study_id=study.id, modality="DX")
        s.add(series)
        s.flush()
        for _ in range(n):
            k = next(_counter)
            inst = Instance(
                sop_instance_uid=generate_uid(),
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                series_id=series.id,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                sha256=hashlib.sha256(str(k).encode()).hexdigest(),
                spool_key=f"instances/none/{k}.dcm",
                size_bytes=1,
                calling_ae_title=calling_aet,
            )
            s.add(inst)
            s.flush()
            job = Job(instance_id=inst.id, max_attempts=max_attempts)
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def make_sc(study_uid: str, *, rows: int = 16, columns: int = 16) -> Dataset:
    """A small, valid Secondary Capture Image (Explicit VR Little Endian) in ``study_uid``."""
    import datetime as dt

    import numpy as np
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST^ID"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 9000
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(rows * columns) % 256).astype(np.uint8).tobytes()
    return ds


def add_results(db: Database, spool, settings, job_id: int, datasets, *, calling_aet: str = "MODALITY"):
    """Write ``datasets`` to the spool and record them (Result + Delivery rows) for ``job_id``."""
    import io

    from pydicom import dcmwrite

    from cdss.jobs.results import StoredResult, record_results

    objs = []
    for ds in datasets:
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        stored = spool.store_result(buf.getvalue())
        objs.append(
            StoredResult(
                kind="SC",
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                spool_key=stored.key,
                sha256=stored.sha256,
                size_bytes=stored.size,
                model_name="test",
                model_version="0",
            )
        )
    with db.session() as s:
        rows = record_results(s, job_id, objs, settings, calling_aet)
        return [r.id for r in rows]
