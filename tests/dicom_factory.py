"""Small, valid DICOM images for receive/route tests (pydicom-built; compressed with pydicom or DCMTK).

These are not anatomical images (``cdss.synth`` makes those); they are small IOD-conformant
CR / DX / SC instances whose pixels are a gradient, good for exercising the network path.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "CR",
    "DX_PRESENTATION",
    "DX_PROCESSING",
    "SC",
    "SC_MF_BYTE",
    "SC_MF_WORD",
    "dcmtk_compress",
    "make_image",
    "write",
]

CR = UID("1.2.840.10008.5.1.4.1.1.1")
DX_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
DX_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.1.1")
SC = UID("1.2.840.10008.5.1.4.1.1.7")
SC_MF_BYTE = UID("1.2.840.10008.5.1.4.1.1.7.2")
SC_MF_WORD = UID("1.2.840.10008.5.1.4.1.1.7.3")


def make_image(
    sop_class: str = DX_PRESENTATION,
    *,
    rows: int = 128,
    columns: int = 96,
    bits: int = 12,
    frames: int | None = None,
    body_part: str | None = "LSPINE",
    view_position: str | None = "LL",
    patient_id: str = "PAT-0001",
    patient_name: str = "Test^Patient",
    accession: str = "ACC0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """A small, valid image of ``sop_class`` (MONOCHROME2) with a file meta (Explicit VR LE)."""
    sop_class = UID(sop_class)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "cdss tests"
    ds.PatientOrientation = ["P", "F"]
    ds.StudyDescription = "LUMBAR SPINE"
    ds.SeriesDescription = "L-SPINE LAT"
    if body_part:
        ds.BodyPartExamined = body_part
    if sop_class in (SC, SC_MF_BYTE, SC_MF_WORD):
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    else:
        ds.Modality = "CR" if sop_class == CR else "DX"
        if view_position:
            ds.ViewPosition = view_position
    if sop_class in (DX_PRESENTATION, DX_PROCESSING):
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION" if sop_class == DX_PRESENTATION else "FOR PROCESSING"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.BurnedInAnnotation = "NO"
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.DetectorType = "SCINTILLATOR"
        ds.Laterality = ""
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = []
        ds.ViewCodeSequence = []
        ds.PatientOrientation = ["P", "F"]
        ds.LossyImageCompression = "00"
    if sop_class == CR:
        ds.ImagerPixelSpacing = [0.15, 0.15]
    if sop_class == SC_MF_BYTE:
        bits = 8
    if sop_class == SC_MF_WORD:
        bits = max(bits, 9)
    if sop_class in (SC_MF_BYTE, SC_MF_WORD):
        frames = frames or 2
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = 100.0
    allocated = 8 if bits <= 8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if sop_class in (DX_PRESENTATION, DX_PROCESSING, CR):
        ds.WindowCenter = 2 ** (bits - 1)
        ds.WindowWidth = 2**bits
    rng = np.random.default_rng(seed)
    n = frames or 1
    yy, xx = np.mgrid[0:rows, 0:columns]
    base = (yy * columns + xx) * ((2**bits - 1) / (rows * columns))
    arr = np.stack([base + rng.integers(0, 4, size=base.shape) for _ in range(n)])
    arr = np.clip(arr, 0, 2**bits - 1).astype(np.uint8 if allocated == 8 else np.uint16)
    if n == 1:
        arr = arr[0]
    ds.PixelData = arr.tobytes()
    return ds


def write(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian, **encoding: object) -> Path:
    """Write ``ds`` in ``transfer_syntax`` (native syntaxes or pydicom 3 encoders: RLE, JPEG-LS, J2K).

    ``encoding`` goes to :meth:`pydicom.dataset.Dataset.compress` (e.g. ``j2k_cr=[20]`` for lossy J2K).
    """
    ds = copy.deepcopy(ds)
    ts = UID(transfer_syntax)
    if ts.is_compressed:
        ds.compress(ts, generate_instance_uid=False, **encoding)
    else:
        ds.file_meta.TransferSyntaxUID = ts
    if ts in (ImplicitVRLittleEndian, ExplicitVRBigEndian):
        ds.file_meta.TransferSyntaxUID = ts
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmtk_compress(src: Path, dst: Path, tool: str, *options: str) -> Path:
    """Compress with a DCMTK tool (``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``)."""
    proc = subprocess.run([tool, *options, str(src), str(dst)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(options)} failed: {proc.stderr.strip()}")
    return dst
