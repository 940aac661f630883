"""Family B DICOM headers: DX (For Presentation / For Processing) and CR with real-world variety.

Only the DICOM *writing* helpers are shared with family A (UIDs from
:func:`cdss.synth.headers.uid_for`, synthetic patients from :func:`~cdss.synth.headers.sample_patient`);
which attributes are written and how they vary is family B's own: other manufacturers and
descriptions, ViewPosition LL/RL/LATERAL/empty/absent, PatientOrientation derived from the real
image geometry (or empty/absent), BodyPartExamined spellings, 8-bit images (Bits Allocated 8),
rescale slope/intercept on CR, and a VOI LUT Sequence instead of a window on some images.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from cdss.synth.family_b.detector import Acq, Exposure
from cdss.synth.headers import Patient, uid_for

__all__ = ["ABSENT", "HeaderB", "build_dataset", "header_record"]

#: marker for "attribute not written at all" (``None`` would be ambiguous with "empty")
ABSENT = "<absent>"

_MAKERS_DX = [
    ("NORDLICHT IMAGING", "Helix DR 4343", "SCINTILLATOR"),
    ("KESTREL MEDICAL", "K-Flat 3543w", "SCINTILLATOR"),
    ("AURORA X-RAY", "Aurora DRX Pro", "DIRECT"),
]
_MAKERS_CR = [("LUMEN DIAGNOSTICS", "LumiCR 900"), ("SILVERLINE", "SL-Reader 2")]
#: BodyPartExamined defined terms of unpaired parts (CR then omits Laterality; any other value
#: gets an empty Laterality, Type 2C, since a reader cannot tell)
_UNPAIRED = {"LSPINE", "SPINE", "CHEST", "ABDOMEN", "PELVIS", "TSPINE"}


@dataclass
class HeaderB:
    """View-specific header content (``ABSENT`` = not written; ``""`` = written empty)."""

    body_part: str
    view_position: str
    patient_orientation: list[str] | str  # list of two codes, "" (empty) or ABSENT
    series_description: str
    protocol_name: str
    study_description: str
    image_laterality: str  # U, L, R
    anatomy: str  # pydicom.sr.codedict codes.SCT attribute
    conformant: bool = True


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _tm(t: dt.time) -> str:
    return t.strftime("%H%M%S")


def build_dataset(
    *,
    seed: int,
    index: int,
    namespace: str,
    acq: Acq,
    exposure: Exposure,
    spec: HeaderB,
    patient: Patient,
    rng: np.random.Generator,
) -> Dataset:
    """The DICOM dataset (Explicit VR Little Endian, uncompressed) of one family B image."""
    is_cr = acq.is_cr
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if is_cr else ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = acq.sop_class_uid
    ds.SOPInstanceUID = uid_for(seed, index, f"{namespace}sop")
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
    if is_cr:
        maker = _MAKERS_CR[int(rng.integers(0, len(_MAKERS_CR)))]
        ds.Manufacturer, model = maker
    else:
        mk = _MAKERS_DX[int(rng.integers(0, len(_MAKERS_DX)))]
        ds.Manufacturer, model, detector_type = mk
    ds.InstitutionName = str(
        rng.choice(["Synthetic Regional Clinic", "Klinikum Synthetika", "Ospedale Sintetico"])
    )
    ds.ReferringPhysicianName = "ORDERING^SYNTH"
    ds.StationName = f"RAD{int(rng.integers(1, 30)):02d}"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.ManufacturerModelName = model
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_years:03d}Y"
    if spec.body_part != ABSENT:
        ds.BodyPartExamined = spec.body_part
    elif is_cr:
        ds.BodyPartExamined = ""  # Type 2 on CR
    ds.KVP = round(float(rng.uniform(75, 102)), 0)
    ds.DeviceSerialNumber = f"B{int(rng.integers(100000, 999999))}"
    ds.SoftwareVersions = "cdss.synth.family_b 1"
    ds.ProtocolName = spec.protocol_name
    ds.DistanceSourceToDetector = round(acq.sid_mm, 1)
    ds.DistanceSourceToPatient = round(acq.sod_mm, 1)
    ds.ExposureTime = int(rng.integers(40, 600))
    ds.XRayTubeCurrent = int(rng.integers(160, 640))
    ds.Exposure = max(1, int(ds.ExposureTime) * int(ds.XRayTubeCurrent) // 1000 // (3 if acq.low_dose else 1))
    ds.Grid = (
        ["FOCUSED", "RECIPROCATING"]
        if acq.grid is None and not is_cr
        else (["FOCUSED"] if acq.grid else ["NONE"])
    )
    if is_cr:
        ds.ViewPosition = "" if spec.view_position == ABSENT else spec.view_position  # Type 2
        ds.PlateType = "IP-ST"
    else:
        if spec.view_position != ABSENT:
            ds.ViewPosition = spec.view_position
        ds.DetectorType = detector_type
        ds.PositionerType = "COLUMN"
        ds.AcquisitionContextSequence = []
        ds.DetectorConfiguration = "AREA"
        ds.EstimatedRadiographicMagnificationFactor = round(acq.magnification, 4)
    if acq.write_imager_spacing:
        ds.ImagerPixelSpacing = [round(acq.pitch_mm, 6)] * 2
    ps = acq.written_pixel_spacing()
    if ps is not None:
        ds.PixelSpacing = [round(ps, 6)] * 2
        if not is_cr:
            ds.PixelSpacingCalibrationType = "GEOMETRY" if acq.pixel_spacing_calibrated else "FIDUCIAL"
            ds.PixelSpacingCalibrationDescription = (
                "source-to-object geometry"
                if acq.pixel_spacing_calibrated
                else "detector plane (uncorrected)"
            )
    ds.StudyInstanceUID = uid_for(seed, index, f"{namespace}study")
    ds.SeriesInstanceUID = uid_for(seed, index, f"{namespace}series")
    ds.StudyID = f"{int(rng.integers(1, 999999))}"
    ds.SeriesNumber = int(rng.integers(1, 6))
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = int(rng.integers(1, 4))
    po = spec.patient_orientation
    if isinstance(po, list):
        ds.PatientOrientation = po
    elif po == "":
        ds.PatientOrientation = ""  # Type 2C on CR: present, empty
    if is_cr:
        if spec.anatomy in ("Hand", "Knee", "HipJoint") and spec.image_laterality in ("L", "R"):
            ds.Laterality = spec.image_laterality
        elif spec.body_part not in _UNPAIRED:
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
    ds.BitsAllocated = 8 if exposure.pixels.dtype == np.uint8 else 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    slope, intercept = acq.rescale
    if not is_cr:
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if acq.photometric == "MONOCHROME1" else -1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if acq.photometric == "MONOCHROME1" else "IDENTITY"
    elif (slope, intercept) != (1.0, 0.0):
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleType = "US"
    if exposure.window is not None:
        ds.WindowCenter = f"{exposure.window[0]:.1f}"
        ds.WindowWidth = f"{exposure.window[1]:.1f}"
        ds.WindowCenterWidthExplanation = str(rng.choice(["DEFAULT", "NORMAL", "SOFT"]))
    elif exposure.voi_lut is not None:
        desc, data = exposure.voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", desc)
        item.LUTExplanation = "SIGMOID DISPLAY"
        item.add_new(0x00283006, "OW", data.astype("<u2").tobytes())
        ds.VOILUTSequence = [item]
    ds.PixelData = exposure.pixels.tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CDSS_SYNTH_B1"
    ds.file_meta = meta
    return ds


def header_record(ds: Dataset, spec: HeaderB) -> dict:
    """What was written, for the ground truth (``None`` = absent, ``""`` = empty)."""

    def get(keyword: str) -> object:
        if keyword not in ds:
            return None
        v = ds[keyword].value
        if v is None:
            return ""
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            return [str(x) for x in v]
        return str(v)

    voi = "lut" if "VOILUTSequence" in ds else ("window" if "WindowCenter" in ds else "none")
    return {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "modality": str(ds.Modality),
        "body_part_examined": get("BodyPartExamined"),
        "view_position": get("ViewPosition"),
        "image_laterality": get("ImageLaterality"),
        "laterality": get("Laterality"),
        "patient_orientation": get("PatientOrientation"),
        "presentation_intent_type": get("PresentationIntentType"),
        "series_description": get("SeriesDescription"),
        "protocol_name": get("ProtocolName"),
        "manufacturer": get("Manufacturer"),
        "window_center": get("WindowCenter"),
        "window_width": get("WindowWidth"),
        "voi": voi,
        "rescale_slope": get("RescaleSlope"),
        "rescale_intercept": get("RescaleIntercept"),
        "pixel_spacing": get("PixelSpacing"),
        "imager_pixel_spacing": get("ImagerPixelSpacing"),
        "bits_allocated": int(ds.BitsAllocated),
        "conformant": bool(spec.conformant),
    }
