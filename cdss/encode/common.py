"""What every result object shares: kinds, checks on the source, identity of the model, UIDs, labels.

Decisions (documented in ``docs/results.md``):

* One object of each kind per analysed source image, each in a **new series of the source
  study**. Series numbers are ``results.series_number_base`` + 0 (SEG), + 1 (SR), + 2 (GSPS),
  + 3 (SC); Instance Number is 1.
* Series Description = ``"AI <what> <model name> <model version>"`` followed by the caution text
  when ``results.research_use_only`` is true, shortened to the 64 characters of a LO value by
  abbreviating the model name first (the full identity is always in Contributing Equipment).
* General Equipment of a result describes the model that produced it (Manufacturer =
  ``results.manufacturer``, Manufacturer's Model Name = model name, Software Versions = model
  version and the cdss version, Device Serial Number = first 12 hex digits of the weights
  SHA-256). A Contributing Equipment item (purpose DCM 109102 "Processing Equipment") repeats this,
  with the Device UID derived from the weights digest (:attr:`ModelInfo.device_uid`) only when
  ``results.device_uid_in_contributing_equipment`` is set (see :meth:`EncodeContext.contributing_equipment`).
* Tracking UIDs are derived by pydicom's :func:`~pydicom.uid.generate_uid` (pydicom UID root,
  SHA-512 of the entropy sources) from the source SOP Instance UID, the model's Device UID and the tracked thing ("vertebra L4", "level L4-L5"), so
  the SEG segment, SR group and GSPS graphics of the same vertebra or finding share one UID, also
  across separate calls. Series and SOP Instance UIDs are random (``highdicom.UID()``).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from dataclasses import dataclass, field
from enum import StrEnum

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cdss import __version__ as cdss_version
from cdss.analysis.types import CervicalResult, LumbarResult, ModelInfo, Vertebra
from cdss.config import ResultSettings, SegProfile
from cdss.encode import codes as C

__all__ = [
    "AnyResult",
    "EncodeContext",
    "EncodeError",
    "EncodedObject",
    "ResultKind",
]

AnyResult = LumbarResult | CervicalResult

#: Longest Series Description / Content Description (VR LO).
LO_MAX = 64


#: Patient / General Study / Patient Study attributes copied from the source when present
#: (highdicom copies name, ID, birth date, sex, study UID/date/time/ID, accession, referrer).
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "EthnicGroup",
    "PatientComments",
    "StudyDescription",
    "PhysiciansOfRecord",
    "IssuerOfAccessionNumberSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)


class ResultKind(StrEnum):
    """Kind of result object."""

    SEG = "SEG"
    SR = "SR"
    GSPS = "GSPS"
    SC = "SC"


#: Offset of each kind's series number from ``results.series_number_base``.
SERIES_OFFSET: dict[ResultKind, int] = {
    ResultKind.SEG: 0,
    ResultKind.SR: 1,
    ResultKind.GSPS: 2,
    ResultKind.SC: 3,
}
#: Series number offset of a second SEG written in another profile than ``results.seg_profile``
#: (a destination with its own ``seg_profile``).
SECOND_SEG_SERIES_OFFSET = 4

#: What each kind is called in Series Descriptions.
KIND_TEXT: dict[ResultKind, str] = {
    ResultKind.SEG: "SEG",
    ResultKind.SR: "SR",
    ResultKind.GSPS: "GSPS",
    ResultKind.SC: "SC",
}


class EncodeError(ValueError):
    """The source dataset and the result cannot be encoded together; the message says why."""


@dataclass(frozen=True)
class EncodedObject:
    """One result object ready to be written (``dataset.save_as`` / :meth:`to_bytes`)."""

    kind: ResultKind
    dataset: Dataset
    #: For a SEG, the profile it is written in (:class:`~cdss.config.SegProfile`); None otherwise.
    seg_profile: SegProfile | None = None

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    def to_bytes(self) -> bytes:
        """The DICOM Part 10 file (preamble, file meta, dataset) as bytes."""
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, self.dataset, enforce_file_format=True)
        return buf.getvalue()

    def written(self) -> WrittenObject:
        """This object as its Part 10 bytes and identifiers (what crosses a process boundary)."""
        return WrittenObject(
            kind=self.kind,
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            series_instance_uid=self.series_instance_uid,
            seg_profile=self.seg_profile,
            data=self.to_bytes(),
        )


@dataclass(frozen=True)
class WrittenObject:
    """A result object already written to Part 10 bytes (:meth:`EncodedObject.written`).

    Offers what the job pipeline reads of an :class:`EncodedObject` (kind, UIDs, SEG profile,
    :meth:`to_bytes`), without the dataset: cheap to send from an analysis worker process.
    """

    kind: ResultKind
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    seg_profile: SegProfile | None
    data: bytes

    def to_bytes(self) -> bytes:
        """The DICOM Part 10 file, as written."""
        return self.data


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "~"


def describe(what: str, model: ModelInfo, settings: ResultSettings, limit: int = LO_MAX) -> str:
    """``"AI <what> <model name> <model version> <caution>"`` fitted into ``limit`` characters.

    When it is too long, the caution is first reduced to its part before ``" - "`` (the default
    ``"RESEARCH USE ONLY - not for diagnosis"`` becomes ``"RESEARCH USE ONLY"``), then the model
    name is abbreviated (ending in ``~``); the version is kept whole. The full caution and model
    identity are always in Image Comments / the SR and in Contributing Equipment.
    """
    caution = settings.caution_text.strip() if settings.research_use_only else ""
    short_caution = caution.split(" - ")[0].strip() if caution else ""
    head = f"AI {what}"

    def compose(name: str, c: str) -> str:
        return " ".join(p for p in (head, name, model.version, c) if p)

    for c in dict.fromkeys((caution, short_caution)):
        text = compose(model.name, c)
        if len(text) <= limit:
            return text
    room = limit - len(compose("", short_caution)) - 1
    if room >= 4:
        return compose(_shorten(model.name, room), short_caution)
    return _shorten(" ".join(p for p in ("AI", short_caution, model.version) if p), limit)


@dataclass
class EncodeContext:
    """Everything the per-kind encoders share for one source image and one result."""

    source: Dataset
    result: AnyResult
    settings: ResultSettings
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now().replace(microsecond=0))

    def __post_init__(self) -> None:
        check_source(self.source, self.result)

    # -- identity ---------------------------------------------------------------------------
    @property
    def model(self) -> ModelInfo:
        return self.result.model

    @property
    def model_name_lo(self) -> str:
        """The model name fitted into a LO value (64 characters)."""
        return _shorten(self.model.name, LO_MAX)

    @property
    def model_version_lo(self) -> str:
        return _shorten(self.model.version, LO_MAX)

    @property
    def research(self) -> bool:
        return bool(self.settings.research_use_only)

    @property
    def content_qualification(self) -> hd.ContentQualificationValues:
        return (
            hd.ContentQualificationValues.RESEARCH if self.research else hd.ContentQualificationValues.PRODUCT
        )

    def equipment(self) -> dict[str, str | list[str]]:
        """General Equipment keyword arguments for highdicom constructors."""
        return {
            "manufacturer": self.settings.manufacturer,
            "manufacturer_model_name": self.model_name_lo,
            "software_versions": [self.model_version_lo, f"cdss {cdss_version}"],
            "device_serial_number": self.model.short_digest,
        }

    def contributing_equipment(self) -> list[hd.ContributingEquipment]:
        """The model as Contributing Equipment, with its Device UID (IHE AIR)."""
        item = hd.ContributingEquipment(
            manufacturer=self.settings.manufacturer,
            purpose_of_reference=C.PROCESSING_EQUIPMENT,
            manufacturer_model_name=self.model_name_lo,
            software_versions=self.model_version_lo,
            device_serial_number=self.model.short_digest,
            contribution_datetime=self.created,
            contribution_description=_shorten(
                f"{self.model.architecture}; weights SHA-256 {self.model.weights_sha256}; "
                f"trained on {self.model.training_data}",
                1024,
            ),
        )
        if self.settings.device_uid_in_contributing_equipment:
            # Device UID (0018,1002) is not a highdicom argument; IHE AIR asks for it here. DICOM
            # allows it in this sequence only since after dicom3tools 2022 (which warns), so it is
            # opt-in; the SR's device observer UID and the Image Comments always carry it.
            item.DeviceUID = self.model.device_uid
        return [item]

    def algorithm_parameters(self) -> dict[str, str]:
        params = {"weights_sha256": self.model.weights_sha256, "architecture": self.model.architecture}
        if isinstance(self.result, LumbarResult):
            params["listhesis_threshold_percent"] = f"{self.result.listhesis_threshold_percent:g}"
        else:
            params["operating_point"] = f"{self.result.operating_point:g}"
        return params

    def algorithm_seg(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.model_name_lo,
            family=C.AI_FAMILY,
            version=self.model_version_lo,
            source=self.settings.manufacturer,
            parameters=self.algorithm_parameters(),
        )

    def algorithm_sr(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.model.name,
            version=self.model.version,
            family=C.AI_FAMILY,
            parameters=[f"{k}={v}" for k, v in self.algorithm_parameters().items()],
        )

    # -- series ------------------------------------------------------------------------------
    def series_number(self, kind: ResultKind) -> int:
        return int(self.settings.series_number_base) + SERIES_OFFSET[kind]

    def series_description(self, kind: ResultKind) -> str:
        return describe(KIND_TEXT[kind], self.model, self.settings)

    def common_kwargs(self, kind: ResultKind) -> dict[str, object]:
        """Keyword arguments every highdicom SOP class constructor accepts."""
        return {
            "series_instance_uid": hd.UID(),
            "series_number": self.series_number(kind),
            "sop_instance_uid": hd.UID(),
            "instance_number": 1,
            "series_description": self.series_description(kind),
            "content_qualification": self.content_qualification,
            # The private scheme is declared only where its codes are used (the SR): an unused
            # declaration is one more "unrecognized" designator for validators.
            "coding_schemes": [C.coding_scheme_declaration()] if kind is ResultKind.SR else None,
            "series_date": self.created.date(),
            "series_time": self.created.time(),
            "content_date": self.created.date(),
            "content_time": self.created.time(),
        }

    def caution_lines(self) -> list[str]:
        """Lines that say what produced the result and (if so configured) that it is research output."""
        lines = []
        if self.research:
            lines.append(f"AI RESULT - {self.settings.caution_text.strip()}")
        else:
            lines.append("AI RESULT - review before use")
        lines.append(f"{self.model.name} {self.model.version} (weights {self.model.short_digest})")
        return lines

    def image_comments(self) -> str:
        """Free-text Image Comments for SEG and SC (LT)."""
        lines = [*self.caution_lines(), f"Device UID {self.model.device_uid}"]
        return "\n".join(lines)

    # -- tracking ----------------------------------------------------------------------------
    def tracking_uid(self, *what: str) -> str:
        """A UID that is the same for the same (source image, model, tracked thing)."""
        # pydicom's generate_uid is deterministic only with a prefix (with prefix=None it
        # returns a random 2.25 UID); its default prefix is the pydicom UID root.
        parts = [str(self.source.SOPInstanceUID), self.model.device_uid, *what]
        return str(generate_uid(entropy_srcs=[f"{p}|" for p in parts]))

    def vertebra_uid(self, vertebra: Vertebra) -> str:
        return self.tracking_uid("vertebra", vertebra.value)

    def level_uid(self, upper: Vertebra, lower: Vertebra) -> str:
        return self.tracking_uid("level", f"{upper.value}-{lower.value}")

    def finding_uid(self, name: str) -> str:
        return self.tracking_uid("finding", name)

    # -- attributes highdicom does not copy --------------------------------------------------
    def copy_source_attributes(self, ds: Dataset, *, orientation: bool, body_part: bool = True) -> None:
        """Set what highdicom does not copy.

        Patient- and study-level attributes highdicom leaves out (:data:`PATIENT_STUDY_KEYWORDS`)
        are copied so the study stays consistent across instances (dcentvfy). Body Part
        Examined is the analysed region (``LSPINE`` / ``CSPINE``, standard defined terms), not
        the source's value, which is often a non-standard term ("LUMBAR SPINE") or missing;
        without it dciodvfy cannot tell that the body part is unpaired and requires Laterality
        (Type 2C). Patient Orientation (Type 2C for image objects without plane orientation) is
        copied, empty when the source has none.
        """
        for keyword in PATIENT_STUDY_KEYWORDS:
            if keyword in self.source and keyword not in ds and self.source[keyword].value not in (None, ""):
                ds[keyword] = copy.deepcopy(self.source[keyword])
        if body_part:  # General Series (not in SR documents)
            ds.BodyPartExamined = "LSPINE" if isinstance(self.result, LumbarResult) else "CSPINE"
        if orientation:
            ds.PatientOrientation = patient_orientation(self.source) or ""


def patient_orientation(source: Dataset) -> list[str] | None:
    """The source's Patient Orientation as two strings, or None when absent, empty or malformed."""
    value = source.get("PatientOrientation")
    if value is None:
        return None
    items = [str(v) for v in (value if isinstance(value, pydicom.multival.MultiValue | list) else [value])]
    if len(items) != 2 or not all(items):
        return None
    return items


def check_source(source: Dataset, result: AnyResult) -> None:
    """Refuse a source/result pair that cannot be encoded, saying which attribute is wrong.

    Raises
    ------
    EncodeError
        A required UID is missing; the source is multi-frame or not greyscale; its Rows/Columns
        differ from ``result.image_shape`` (for DX FOR PROCESSING analyses, the caller must pass
        a FOR PRESENTATION instance of the same size).
    """
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not source.get(keyword):
            raise EncodeError(f"source dataset has no {keyword}; results must reference the exact source")
    rows, cols = source.get("Rows"), source.get("Columns")
    if rows is None or cols is None:
        raise EncodeError("source dataset has no Rows/Columns (0028,0010/0011)")
    expected = tuple(int(v) for v in result.image_shape)
    if (int(rows), int(cols)) != expected:
        raise EncodeError(
            f"source image is {int(rows)}x{int(cols)} (Rows x Columns) but the result was computed on "
            f"{expected[0]}x{expected[1]}; pass the instance that was analysed (or a FOR PRESENTATION "
            "instance with the same pixel grid)"
        )
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise EncodeError(f"source has {frames} frames; cdss results reference single-frame radiographs")
    photometric = str(source.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise EncodeError(
            f"source Photometric Interpretation is {photometric or 'missing'!r}; "
            "expected MONOCHROME1 or MONOCHROME2 (greyscale radiograph)"
        )
    if isinstance(result, LumbarResult):
        for seg in result.vertebrae:
            if seg.mask.shape != expected:
                raise EncodeError(
                    f"mask of {seg.label.value} has shape {seg.mask.shape}, expected {expected} (result.image_shape)"
                )
            outline = np.asarray(seg.outline, dtype=float)
            if (
                outline.ndim != 2
                or outline.shape[1] != 2
                or len(outline) < 3
                or not np.isfinite(outline).all()
            ):
                raise EncodeError(
                    f"outline of {seg.label.value} must be >= 3 finite (column, row) points; got shape {outline.shape}"
                )
            corners = np.asarray(seg.corners, dtype=float)
            if corners.shape != (4, 2) or not np.isfinite(corners).all():
                raise EncodeError(f"corners of {seg.label.value} must be 4 finite (column, row) points")


def closed(points: np.ndarray) -> np.ndarray:
    """The polygon with its first point repeated at the end (POLYLINE regions must be closed)."""
    pts = np.asarray(points, dtype=float)
    if len(pts) and not np.allclose(pts[0], pts[-1]):
        pts = np.vstack([pts, pts[:1]])
    return pts


#: cdss puts (0, 0) at the *centre* of the top-left pixel (:mod:`cdss.analysis.types`); DICOM image
#: coordinates — SR SCOORD (PS3.3 C.18.6.1.2) and GSPS PIXEL units (PS3.3 C.10.5.1.2) — put
#: 0.0\0.0 at the top-left *corner* of that pixel, so a pixel centre (c, r) is (c + 0.5, r + 0.5).
PIXEL_CENTRE_OFFSET = 0.5


def to_image_coordinates(points: np.ndarray) -> np.ndarray:
    """cdss (column, row) pixel-centre coordinates → DICOM image coordinates (SCOORD, GSPS PIXEL)."""
    return np.asarray(points, dtype=float) + PIXEL_CENTRE_OFFSET


def from_image_coordinates(points: np.ndarray) -> np.ndarray:
    """DICOM image coordinates (SCOORD, GSPS PIXEL) → cdss (column, row) pixel-centre coordinates."""
    return np.asarray(points, dtype=float) - PIXEL_CENTRE_OFFSET
