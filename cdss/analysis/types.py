"""Result dataclasses shared by the analyses (producers) and the encoders (consumers).

Coordinate convention used everywhere in cdss: image points are ``(column, row)`` pairs in
**source-image pixel units** (the pixel grid of the analysed DICOM image, origin at the centre
of the top-left pixel, columns to the right, rows downwards), as float64 arrays of shape
``(N, 2)``. Masks are boolean arrays of shape ``(Rows, Columns)`` on the same grid. Percentages
are plain numbers (12.5 means 12.5 %). Probabilities are in [0, 1].
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

__all__ = [
    "CervicalResult",
    "Laterality",
    "LevelMeasurement",
    "LevelStatus",
    "LumbarResult",
    "LumbarView",
    "MeyerdingGrade",
    "ModelInfo",
    "Normality",
    "SlipDirection",
    "Vertebra",
    "VertebraSegment",
]

#: Namespace for deterministic UUIDs derived from model digests (Device UIDs are 2.25.<uuid-int>).
_DEVICE_NAMESPACE = uuid.UUID("5b0d3c1e-7a3c-4c55-9d8e-2f4e5b1c0a77")


class Vertebra(StrEnum):
    """Vertebrae segmented on lumbar radiographs (the six classes of seed 000, in class-id order)."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"
    S1 = "S1"

    @property
    def class_id(self) -> int:
        """YOLO class index (0 = L1 ... 5 = S1)."""
        return list(Vertebra).index(self)

    @classmethod
    def from_class_id(cls, class_id: int) -> Vertebra:
        return list(cls)[class_id]


#: Adjacent levels measured for spondylolisthesis, superior vertebra first.
LUMBAR_LEVELS: tuple[tuple[Vertebra, Vertebra], ...] = (
    (Vertebra.L1, Vertebra.L2),
    (Vertebra.L2, Vertebra.L3),
    (Vertebra.L3, Vertebra.L4),
    (Vertebra.L4, Vertebra.L5),
    (Vertebra.L5, Vertebra.S1),
)


class SlipDirection(StrEnum):
    """Direction of the superior vertebra relative to the inferior one."""

    ANTERIOR = "anterolisthesis"
    POSTERIOR = "retrolisthesis"
    NONE = "none"


class MeyerdingGrade(StrEnum):
    """Meyerding grade of a slip (seed 000, section H); ``NONE`` below the listhesis threshold."""

    NONE = "none"
    I = "I"  # noqa: E741 - the grade's name
    II = "II"
    III = "III"
    IV = "IV"
    V = "V"


class LevelStatus(StrEnum):
    """Whether a level carries a measurement.

    ``MISSING``: a vertebra of the pair was not found (never guessed). ``NOT_MEASURED``: both
    vertebrae were found but the level failed a plausibility or confidence check (chain order,
    size/spacing ratios, corner fit, confidence); it carries the reason and never a grade.
    """

    MEASURED = "measured"
    MISSING = "missing"
    NOT_MEASURED = "not_measured"


class LumbarView(StrEnum):
    LATERAL = "lateral"
    AP = "ap"


class Laterality(StrEnum):
    """Side of a cervical oblique view (the side of the foramina shown)."""

    LEFT = "L"
    RIGHT = "R"


class Normality(StrEnum):
    NORMAL = "normal"
    ABNORMAL = "abnormal"


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a trained model, written into every result object.

    Attributes
    ----------
    name
        Model name, e.g. ``"cdss-lumbar-seg"``.
    version
        Model version string, e.g. ``"1.0.0"``.
    weights_sha256
        Hex SHA-256 of the weights file that was loaded.
    architecture
        Architecture, e.g. ``"YOLO11n-seg"`` or ``"STN+ResNet50"``.
    training_data
        One line on what it was trained on (e.g. ``"synthetic radiographs (cdss.synth)"``).
    """

    name: str
    version: str
    weights_sha256: str
    architecture: str
    training_data: str = "synthetic radiographs (cdss.synth)"

    @property
    def device_uid(self) -> str:
        """A DICOM UID (2.25 form) derived from the weights digest: changes whenever the weights do."""
        digest = hashlib.sha256(f"{self.name}:{self.weights_sha256}".encode()).hexdigest()
        return f"2.25.{uuid.uuid5(_DEVICE_NAMESPACE, digest).int}"

    @property
    def short_digest(self) -> str:
        return self.weights_sha256[:12]


@dataclass
class VertebraSegment:
    """One segmented vertebra.

    Attributes
    ----------
    label
        Which vertebra.
    mask
        Boolean mask, shape ``(Rows, Columns)`` of the source image.
    outline
        Closed polygon of the mask boundary, ``(N, 2)`` float (column, row) pixels.
    corners
        ``(4, 2)`` float (column, row) pixels in the order superior-anterior, superior-posterior,
        inferior-posterior, inferior-anterior for lateral views; for AP views superior-left,
        superior-right, inferior-right, inferior-left (image left/right). For S1 on a lateral
        view only the two superior corners are anatomically meaningful; the inferior two are
        the bounding points of the segmented part.
    confidence
        Detection confidence in [0, 1].
    """

    label: Vertebra
    mask: np.ndarray
    outline: np.ndarray
    corners: np.ndarray
    confidence: float


@dataclass
class LevelMeasurement:
    """Spondylolisthesis measurement at one level (superior over inferior vertebra).

    ``slip_percent`` = displacement of the superior vertebra's posterior-inferior corner from
    the inferior vertebra's posterior-superior corner, measured along the inferior vertebra's
    superior endplate, divided by that endplate's width, times 100 (seed 000, section H).
    Positive values are anterior (anterolisthesis), negative posterior (retrolisthesis).
    """

    upper: Vertebra
    lower: Vertebra
    status: LevelStatus
    slip_percent: float | None = None
    direction: SlipDirection = SlipDirection.NONE
    grade: MeyerdingGrade = MeyerdingGrade.NONE
    displacement_px: float | None = None
    endplate_width_px: float | None = None
    reason: str = ""
    #: Confidence in this level's measurement, in [0, 1] (``None`` when not measured): the
    #: weaker of the two vertebrae's evidence (detection, chain and corner-fit checks).
    confidence: float | None = None

    @property
    def name(self) -> str:
        """Level name such as ``"L4-L5"``."""
        return f"{self.upper.value}-{self.lower.value}"


@dataclass
class LumbarResult:
    """Output of the lumbar analysis of one image."""

    view: LumbarView
    image_shape: tuple[int, int]  # (rows, columns)
    vertebrae: list[VertebraSegment]
    levels: list[LevelMeasurement]
    model: ModelInfo
    listhesis_threshold_percent: float
    anterior_direction: str = ""  # "left" or "right" in image columns; how it was determined in `notes`
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[Vertebra]:
        found = {v.label for v in self.vertebrae}
        return [v for v in Vertebra if v not in found]

    @property
    def has_findings(self) -> bool:
        return any(lv.grade is not MeyerdingGrade.NONE for lv in self.levels)


@dataclass
class CervicalResult:
    """Output of the cervical foraminal stenosis analysis of one oblique view.

    Attributes
    ----------
    laterality
        Side of the oblique view.
    probability
        Model probability of foraminal stenosis (abnormal), in [0, 1].
    label
        ``ABNORMAL`` when ``probability >= operating_point``.
    operating_point
        Threshold used.
    roi
        ``(col0, row0, col1, row1)`` of the cervical-spine ROI crop on the source image, pixels.
    """

    laterality: Laterality
    probability: float
    label: Normality
    operating_point: float
    roi: tuple[float, float, float, float]
    model: ModelInfo
    image_shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        return self.label is Normality.ABNORMAL
