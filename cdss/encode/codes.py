"""Coded concepts written into the result objects.

Two kinds of codes are used, and every code is listed in ``docs/results.md``:

* **Verified** standard codes, always taken from pydicom's code dictionaries (generated from
  DICOM PS3.16), never typed in by hand: SNOMED CT vertebrae, disc levels, spine regions,
  normality, laterality; DCM concepts; UCUM units.
* **SCT 274152003 "Spondylolisthesis"**, the one standard code not in pydicom's dictionaries
  (PS3.16 does not list it): written out here, see :data:`SPONDYLOLISTHESIS`.
* **Private** codes of the cdss coding scheme :data:`SCHEME_DESIGNATOR` (``99CDSS``; private
  schemes must start with ``99``) for concepts that have no standard code we could verify
  (Meyerding grade, slip percentage, slip direction, foraminal stenosis, ...). The scheme is
  declared in the Coding Scheme Identification Sequence (0008,0110) of the objects that use it
  (the SR; :func:`coding_scheme_declaration`). Each private code value maps to exactly one
  meaning, and that pair never changes; new concepts get new values, replaced ones are listed in
  :data:`RETIRED_PRIVATE_CODES` and never reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cdss.analysis.types import Laterality, MeyerdingGrade, Normality, SlipDirection, Vertebra

__all__ = [
    "DISC_LEVEL",
    "LATERALITY",
    "MEYERDING",
    "NORMALITY",
    "PRIVATE",
    "PRIVATE_CODES",
    "RETIRED_PRIVATE_CODES",
    "SCHEME_DESIGNATOR",
    "SCHEME_UID",
    "SLIP_DIRECTION",
    "VERTEBRA",
    "coding_scheme_declaration",
    "private",
]

#: Designator of the cdss private coding scheme.
SCHEME_DESIGNATOR = "99CDSS"
SCHEME_NAME = "cdss private codes for spine radiograph results"
SCHEME_VERSION = "1"
SCHEME_RESPONSIBLE = "cdss open-source project"
#: UID of the private coding scheme (generated once by pydicom from a fixed entropy source, so stable).
SCHEME_UID = generate_uid(entropy_srcs=["cdss|", f"{SCHEME_DESIGNATOR}|", SCHEME_VERSION])

#: Code value -> code meaning of every private code (the pairs never change; add, never edit).
PRIVATE_CODES: Mapping[str, str] = MappingProxyType(
    {
        "SPONDYLOLISTHESIS": "Spondylolisthesis",
        "SLIP-PCT": "Slip percentage",
        "SLIP-DIR": "Slip direction",
        "LISTHESIS-THRESHOLD": "Listhesis reporting threshold",
        "MEY": "Meyerding grade",
        "MEY-NONE": "No listhesis at or above the reporting threshold",
        "MEY-I": "Meyerding grade I",
        "MEY-II": "Meyerding grade II",
        "MEY-III": "Meyerding grade III",
        "MEY-IV": "Meyerding grade IV",
        "MEY-V": "Meyerding grade V",
        "LISTHESIS-ASSESSMENT": "Spondylolisthesis assessment",
        "LISTHESIS-PRESENT": "Spondylolisthesis at or above the reporting threshold",
        "LISTHESIS-ABSENT": "No spondylolisthesis at or above the reporting threshold",
        "NOT-ASSESSED-VIEW": "Not assessed on this view",
        "MEAS-STATUS": "Measurement status",
        "NOT-MEASURED-MISSING": "Not measured: a vertebra of the level was not detected",
        "VERT-NOT-DETECTED": "Vertebra not detected",
        "DETECTION-CONFIDENCE": "Detection confidence",
        "FORAMINAL-STENOSIS": "Cervical neural foraminal stenosis",
        "NOT-MEASURED-CHECK": "Not measured: level failed a plausibility or confidence check",
    }
)

#: Private codes no longer written because a standard code replaced them (kept so that their
#: values are never reused): SPONDYLOLISTHESIS -> SCT 274152003; DETECTION-CONFIDENCE -> DCM
#: 111012 "Certainty of Finding"; LISTHESIS-THRESHOLD -> DCM 122411 "Threshold Value";
#: LISTHESIS-PRESENT / -ABSENT / NOT-ASSESSED-VIEW -> SCT Present / Absent / Undetermined (CID 240).
RETIRED_PRIVATE_CODES: frozenset[str] = frozenset(
    {
        "SPONDYLOLISTHESIS",
        "DETECTION-CONFIDENCE",
        "LISTHESIS-THRESHOLD",
        "LISTHESIS-PRESENT",
        "LISTHESIS-ABSENT",
        "NOT-ASSESSED-VIEW",
    }
)


def private(value: str) -> hd.sr.CodedConcept:
    """The private code ``value`` of the cdss scheme (its meaning comes from :data:`PRIVATE_CODES`)."""
    if value in RETIRED_PRIVATE_CODES:
        raise KeyError(f"{value!r} is a retired cdss private code (a standard code replaced it)")
    try:
        meaning = PRIVATE_CODES[value]
    except KeyError:
        raise KeyError(f"{value!r} is not a cdss private code; known: {sorted(PRIVATE_CODES)}") from None
    return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME_DESIGNATOR, meaning=meaning)


class _Private:
    """Attribute access to the private codes: ``PRIVATE.SLIP_PCT`` is ``private("SLIP-PCT")``."""

    def __getattr__(self, name: str) -> hd.sr.CodedConcept:
        return private(name.replace("_", "-"))


PRIVATE = _Private()


def coding_scheme_declaration() -> CodingSchemeIdentificationItem:
    """Declaration of the private scheme for the Coding Scheme Identification Sequence (0008,0110)."""
    # No Coding Scheme UID: the scheme is not registered (highdicom writes UIDs only for registered
    # schemes, and dciodvfy flags unknown ones); SCHEME_UID is kept for documentation.
    return CodingSchemeIdentificationItem(
        designator=SCHEME_DESIGNATOR,
        name=SCHEME_NAME,
        version=SCHEME_VERSION,
        responsible_organization=SCHEME_RESPONSIBLE,
    )


def _c(code: object) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept.from_code(code)  # type: ignore[arg-type]


#: Segmented property type / finding of each vertebra. S1 uses SCT "Sacrum" (54735007): the
#: first-sacral-vertebra code 65985001 is not in pydicom / PS3.16 and could not be verified; the
#: segment label still says "S1" and the segment description says it is the S1 body only.
VERTEBRA: Mapping[Vertebra, hd.sr.CodedConcept] = MappingProxyType(
    {
        Vertebra.L1: _c(codes.SCT.L1Vertebra),
        Vertebra.L2: _c(codes.SCT.L2Vertebra),
        Vertebra.L3: _c(codes.SCT.L3Vertebra),
        Vertebra.L4: _c(codes.SCT.L4Vertebra),
        Vertebra.L5: _c(codes.SCT.L5Vertebra),
        Vertebra.S1: _c(codes.SCT.Sacrum),
    }
)

#: Finding site of a level: SCT "Level of Lx/Ly intervertebral disc" (CID 1003 members).
DISC_LEVEL: Mapping[tuple[Vertebra, Vertebra], hd.sr.CodedConcept] = MappingProxyType(
    {
        (Vertebra.L1, Vertebra.L2): _c(codes.SCT.LevelOfL1L2IntervertebralDisc),
        (Vertebra.L2, Vertebra.L3): _c(codes.SCT.LevelOfL2L3IntervertebralDisc),
        (Vertebra.L3, Vertebra.L4): _c(codes.SCT.LevelOfL3L4IntervertebralDisc),
        (Vertebra.L4, Vertebra.L5): _c(codes.SCT.LevelOfL4L5IntervertebralDisc),
        (Vertebra.L5, Vertebra.S1): _c(codes.SCT.LevelOfL5S1IntervertebralDisc),
    }
)

MEYERDING: Mapping[MeyerdingGrade, hd.sr.CodedConcept] = MappingProxyType(
    {
        MeyerdingGrade.NONE: private("MEY-NONE"),
        MeyerdingGrade.I: private("MEY-I"),
        MeyerdingGrade.II: private("MEY-II"),
        MeyerdingGrade.III: private("MEY-III"),
        MeyerdingGrade.IV: private("MEY-IV"),
        MeyerdingGrade.V: private("MEY-V"),
    }
)

#: Direction of a slip: SCT Anterior / Posterior (verified).
SLIP_DIRECTION: Mapping[SlipDirection, hd.sr.CodedConcept] = MappingProxyType(
    {SlipDirection.ANTERIOR: _c(codes.SCT.Anterior), SlipDirection.POSTERIOR: _c(codes.SCT.Posterior)}
)

LATERALITY: Mapping[Laterality, hd.sr.CodedConcept] = MappingProxyType(
    {Laterality.LEFT: _c(codes.SCT.Left), Laterality.RIGHT: _c(codes.SCT.Right)}
)

NORMALITY: Mapping[Normality, hd.sr.CodedConcept] = MappingProxyType(
    {Normality.NORMAL: _c(codes.SCT.Normal), Normality.ABNORMAL: _c(codes.SCT.Abnormal)}
)

#: SCT 274152003 "Spondylolisthesis" (disorder). Not in PS3.16 or pydicom, so it cannot be taken
#: from a dictionary here; no SNOMED CT release is reachable offline either. The concept id and
#: its meaning agree across independent public code lists (several unrelated spine / terminology
#: projects) and the SNOMED CT hierarchy it belongs to (disorder of the vertebral column); no
#: standard code for anterolisthesis or retrolisthesis could be verified, so the direction stays
#: a separate qualitative evaluation (SCT Anterior / Posterior).
SPONDYLOLISTHESIS = hd.sr.CodedConcept(
    value="274152003", scheme_designator="SCT", meaning="Spondylolisthesis"
)

#: Presence of the finding in the summary (CID 240 "Present-Absent": SCT Present, Absent, Undetermined).
PRESENT = _c(codes.SCT.Present)
ABSENT = _c(codes.SCT.Absent)
UNDETERMINED = _c(codes.SCT.Undetermined)

# Verified standard codes used by the encoders (all from pydicom's dictionaries).
LUMBAR_SPINE = _c(codes.SCT.LumbarSpine)
CERVICAL_SPINE = _c(codes.SCT.CervicalSpine)
ANATOMICAL_STRUCTURE = _c(codes.SCT.AnatomicalStructure)
FINDING = _c(codes.DCM.Finding)
NORMALITY_CONCEPT = _c(codes.DCM.Normality)
PROBABILITY = _c(codes.DCM.Probability)
#: Confidence of a vertebra detection and of a level measurement, UCUM ``1`` in [0, 1]
#: (DCM 111012, "the likelihood that the finding is correct"; CID 6048).
CERTAINTY_OF_FINDING = _c(codes.DCM.CertaintyOfFinding)
#: Free-text qualitative evaluation (TID 1501 row 12) carrying the human-readable finding line.
COMMENT = _c(codes.DCM.Comment)
VERTEBRA_GENERIC = _c(codes.SCT.Vertebra)
THRESHOLD_VALUE = _c(codes.DCM.ThresholdValue)
PERCENT = _c(codes.UCUM.Percent)
NO_UNITS = _c(codes.UCUM.NoUnits)
AI_FAMILY = _c(codes.cid7162.ArtificialIntelligence)
DEVICE_OBSERVER = _c(codes.DCM.Device)
PROCESSING_EQUIPMENT = _c(codes.DCM.ProcessingEquipment)
IMAGING_MEASUREMENT_REPORT = _c(codes.DCM.ImagingMeasurementReport)
#: Procedure reported when the source carries no Procedure Code Sequence (CID 100 member).
XR_UNSPECIFIED = _c(codes.LN.XRUnspecifiedBodyRegion)
