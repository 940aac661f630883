"""DICOM datasets for synthetic radiographs: DX (For Presentation / For Processing) and CR.

Headers look like those of a real department: synthetic but plausible patient, study and
series identification, equipment, exposure, the anatomy and view attributes with the spellings
found in the wild (``BodyPartExamined`` "LSPINE", "L-SPINE", "LUMBAR SPINE", absent ...), and
UIDs from :func:`pydicom.uid.generate_uid` seeded by (seed, index) so a file is reproducible.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from cdss.synth.acquisition import CR_IMAGE_STORAGE, DX_FOR_PROCESSING, Acquisition, Exposure

__all__ = ["HeaderSpec", "Patient", "build_dataset", "sample_patient", "uid_for"]

_FAMILY = [
    "MUELLER", "SCHMIDT", "GARCIA", "NGUYEN", "KIM", "SILVA", "KOWALSKI", "TANAKA", "OKAFOR",
    "JOHANSSON", "ROSSI", "DUBOIS", "SMITH", "PATEL", "HOFFMANN", "NOVAK", "HANSEN", "LOPEZ",
    "YILMAZ", "CHEN", "MARTIN", "WEBER", "COHEN", "MORENO",
]  # fmt: skip
_GIVEN_F = ["ANNA", "MARIA", "SOFIA", "EMMA", "LENA", "YUKI", "AMARA", "CLARA", "EVA", "NORA", "MEI", "INES"]
_GIVEN_M = [
    "JAN",
    "LUCA",
    "DAVID",
    "OMAR",
    "KENJI",
    "PETER",
    "MARCO",
    "JONAS",
    "IVAN",
    "TOMAS",
    "LEO",
    "ARJUN",
]
_MANUFACTURERS = [
    ("SYNTHRAY", "DR-4343 Synth", "DX", "SCINTILLATOR"),
    ("ACME MEDICAL", "FlatPanel 3543", "DX", "SCINTILLATOR"),
    ("ORTHOGON", "DirectView 9", "DX", "DIRECT"),
    ("PHOSPHOR IMAGING", "CR-35 Synth", "CR", "STORAGE"),
]


#: BodyPartExamined defined terms of unpaired parts (CR then omits Laterality)
_UNPAIRED_TERMS = {"LSPINE", "CSPINE", "SPINE", "CHEST", "PELVIS", "SKULL", "HEAD", "NECK", "ABDOMEN"}


def uid_for(seed: int, index: int, what: str) -> str:
    """A reproducible UID for (seed, index, what)."""
    return str(generate_uid(entropy_srcs=["cdss.synth", str(seed), str(index), what]))


@dataclass
class Patient:
    name: str
    patient_id: str
    sex: str
    birth_date: dt.date
    study_date: dt.date
    study_time: dt.time
    accession: str
    age_years: int


def sample_patient(rng: np.random.Generator, *, age_range: tuple[int, int] = (18, 90)) -> Patient:
    """A synthetic patient (names from small lists, ids and dates random)."""
    sex = "F" if rng.random() < 0.58 else "M"
    given = str(rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M))
    name = f"{rng.choice(_FAMILY)}^{given}"
    age = int(rng.integers(age_range[0], age_range[1] + 1))
    study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    birth = study - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    t = dt.time(int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60)))
    return Patient(
        name=name,
        patient_id=f"SYN{int(rng.integers(0, 10**7)):07d}",
        sex=sex,
        birth_date=birth,
        study_date=study,
        study_time=t,
        accession=f"A{int(rng.integers(0, 10**8)):08d}",
        age_years=age,
    )


@dataclass
class HeaderSpec:
    """View-specific attributes.

    Attributes
    ----------
    body_part
        BodyPartExamined as written (``None`` = attribute absent).
    view_position
        ViewPosition (``None`` = absent for DX, empty for CR).
    series_description, protocol_name, study_description
        Free text as a department writes it.
    image_laterality
        ImageLaterality for DX (R, L, U, B); ``Laterality`` is written for paired parts on CR.
    patient_orientation
        PatientOrientation values, e.g. ``["P", "F"]``.
    anatomy
        Attribute name in :data:`pydicom.sr.codedict.codes.SCT` for the Anatomic Region Sequence.
    """

    body_part: str | None
    view_position: str | None
    series_description: str
    protocol_name: str
    study_description: str
    image_laterality: str
    patient_orientation: list[str]
    anatomy: str


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _tm(t: dt.time) -> str:
    return t.strftime("%H%M%S")


def build_dataset(
    *,
    seed: int,
    index: int,
    acq: Acquisition,
    exposure: Exposure,
    spec: HeaderSpec,
    patient: Patient,
    rng: np.random.Generator,
    series_number: int = 1,
    instance_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    acquisition_uid_tag: str = "",
    uid_namespace: str = "",
) -> Dataset:
    """Assemble the DICOM dataset (Explicit VR Little Endian, uncompressed pixel data)."""
    is_cr = acq.sop_class_uid == CR_IMAGE_STORAGE
    maker = _MANUFACTURERS[3] if is_cr else _MANUFACTURERS[int(rng.integers(0, 3))]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if is_cr else ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = acq.sop_class_uid
    ds.SOPInstanceUID = sop_uid or uid_for(seed, index, f"{uid_namespace}sop{acquisition_uid_tag}")
    ds.StudyDate = _da(patient.study_date)
    ds.SeriesDate = ds.StudyDate
    ds.AcquisitionDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = _tm(patient.study_time)
    ds.SeriesTime = ds.StudyTime
    ds.AcquisitionTime = ds.StudyTime
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = patient.accession
    ds.Modality = "CR" if is_cr else "DX"
    ds.Manufacturer = maker[0]
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StationName = f"XR{int(rng.integers(1, 9))}"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.ManufacturerModelName = maker[1]
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_years:03d}Y"
    if spec.body_part is not None:
        ds.BodyPartExamined = spec.body_part
    elif is_cr:
        ds.BodyPartExamined = ""  # Type 2 on CR: present, empty
    ds.KVP = round(float(rng.uniform(70, 95)), 1)
    ds.DeviceSerialNumber = f"SN{int(rng.integers(10000, 99999))}"
    ds.SoftwareVersions = "cdss.synth 1"
    ds.ProtocolName = spec.protocol_name
    ds.DistanceSourceToDetector = round(float(rng.choice([1000.0, 1150.0, 1500.0, 1800.0])), 1)
    ds.DistanceSourceToPatient = round(float(ds.DistanceSourceToDetector) / acq.magnification, 1)
    ds.ExposureTime = int(rng.integers(20, 400))
    ds.XRayTubeCurrent = int(rng.integers(100, 500))
    ds.Exposure = max(1, int(ds.ExposureTime) * int(ds.XRayTubeCurrent) // 1000)
    if is_cr:
        ds.ViewPosition = spec.view_position or ""
        ds.PlateType = "ST-VI"
    else:
        if spec.view_position is not None:
            ds.ViewPosition = spec.view_position
        ds.DetectorType = maker[3]
        ds.PositionerType = "COLUMN"
        ds.AcquisitionContextSequence = []
        ds.DetectorConfiguration = "AREA"
        ds.EstimatedRadiographicMagnificationFactor = round(acq.magnification, 4)
    if acq.write_imager_spacing:
        ds.ImagerPixelSpacing = [round(acq.imager_spacing_mm, 6)] * 2
    if acq.write_pixel_spacing:
        ds.PixelSpacing = [round(acq.patient_spacing_mm, 6)] * 2
        if not is_cr:
            ds.PixelSpacingCalibrationType = "GEOMETRY"
            ds.PixelSpacingCalibrationDescription = "magnification corrected"
    ds.StudyInstanceUID = study_uid or uid_for(seed, index, f"{uid_namespace}study")
    ds.SeriesInstanceUID = series_uid or uid_for(seed, index, f"{uid_namespace}series{acquisition_uid_tag}")
    ds.StudyID = f"{int(rng.integers(1, 99999))}"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    if acq.write_patient_orientation:
        ds.PatientOrientation = spec.patient_orientation
    else:
        ds.PatientOrientation = ""  # Type 2C: present, empty (as many CR plates write it)
    if is_cr:  # Laterality is Type 2C: the side for paired parts; empty when the part is unknown
        paired = spec.anatomy in ("Hand", "Knee") and spec.image_laterality in ("L", "R")
        if paired:
            ds.Laterality = spec.image_laterality
        elif spec.body_part not in _UNPAIRED_TERMS:  # a reader cannot tell: present, empty
            ds.Laterality = ""
    else:
        ds.ImageLaterality = spec.image_laterality
        ds.PresentationIntentType = "FOR PROCESSING" if acq.for_processing else "FOR PRESENTATION"
        code = getattr(codes.SCT, spec.anatomy)
        region = Dataset()
        region.CodeValue = code.value
        region.CodingSchemeDesignator = code.scheme_designator
        region.CodeMeaning = code.meaning
        ds.AnatomicRegionSequence = [region]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acq.photometric
    ds.Rows, ds.Columns = exposure.pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if not is_cr:
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if acq.photometric == "MONOCHROME1" else -1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if acq.photometric == "MONOCHROME1" else "IDENTITY"
    if acq.sop_class_uid != DX_FOR_PROCESSING:
        ds.WindowCenter = exposure.window_center
        ds.WindowWidth = exposure.window_width
        ds.WindowCenterWidthExplanation = "NORMAL"
    ds.PixelData = exposure.pixels.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CDSS_SYNTH_1"
    ds.file_meta = meta
    return ds
