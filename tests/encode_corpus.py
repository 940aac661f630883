"""The corpus of source images + results the encoder tests (and bench) run over.

Each case covers one input kind of the results issue: MONOCHROME1, CR without Imager Pixel
Spacing / Patient Orientation, DX with and without a Frame of Reference, compressed sources
(JPEG 2000, JPEG-LS, RLE), sizes whose bit-packed SEG frames straddle bytes, no findings,
missing vertebrae, a level not measured (the analysis abstained), grades II and IV, AP lumbar,
cervical normal/abnormal, a FOR PROCESSING source, a result without any vertebra, and (when the generator is importable) a ``cdss.synth`` radiograph.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from cdss.analysis.types import CervicalResult, LumbarResult, Vertebra
from cdss.config import ResultSettings
from cdss.encode import EncodedObject, ResultKind, encode_results
from tests.result_factory import (
    cervical_result_from_gt,
    lumbar_result_from_gt,
    make_source,
    synthetic_cervical_gt,
    synthetic_lumbar_gt,
)

HAVE_SYNTH = importlib.util.find_spec("cdss.synth") is not None


@dataclass
class Case:
    name: str
    source: Dataset
    result: LumbarResult | CervicalResult
    objects: dict[ResultKind, EncodedObject] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)  # "source" and each kind

    def ds(self, kind: ResultKind) -> Dataset:
        return pydicom.dcmread(self.paths[kind.value])


def _lumbar(
    rows: int,
    cols: int,
    *,
    slips: dict[str, float] | None = None,
    anterior: str = "left",
    view: str = "lateral",
    spacing: float | None = 0.15,
    omit: tuple[Vertebra, ...] = (),
    not_measured: dict[str, str] | None = None,
    **source_kw: object,
) -> tuple[Dataset, LumbarResult]:
    gt = synthetic_lumbar_gt(rows, cols, slips=slips, anterior=anterior, view=view, pixel_spacing_mm=spacing)
    result = lumbar_result_from_gt(gt, omit=omit, not_measured=not_measured)
    return make_source(gt, **source_kw), result  # type: ignore[arg-type]


def _cervical(
    rows: int, cols: int, *, laterality: str, label: str, probability: float, **source_kw: object
) -> tuple[Dataset, CervicalResult]:
    gt = synthetic_cervical_gt(rows, cols, laterality=laterality, label=label)
    return make_source(gt, **source_kw), cervical_result_from_gt(gt, probability=probability)  # type: ignore[arg-type]


def _synth() -> tuple[Dataset, LumbarResult]:
    from cdss.synth import generate

    ds, truth = generate("lumbar_lateral", seed=3, index=1, max_side=900)
    return ds, lumbar_result_from_gt(truth)


def _synth_cervical() -> tuple[Dataset, CervicalResult]:
    from cdss.synth import generate

    ds, truth = generate("cervical_oblique", seed=1, index=2, max_side=700)
    return ds, cervical_result_from_gt(truth)


def _voi_lut(with_windows: bool) -> tuple[Dataset, LumbarResult]:
    """A VOI LUT Sequence whose LUT Data is US values (as read from an explicit-VR file); with
    ``with_windows`` also two windows with explanations (legal, and highdicom cannot copy it)."""
    ds, result = _lumbar(440, 360, slips={"L3-L4": 14.0}, window=with_windows)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", [int(v) * 16 for v in range(4096)])
    item.LUTExplanation = "LINEAR 12 BIT"
    ds.VOILUTSequence = [item]
    if with_windows:
        ds.WindowCenter, ds.WindowWidth = [2048, 1500], [4096, 1200]
        ds.WindowCenterWidthExplanation = ["FULL", "BONE"]
    return ds, result


def _umlaut() -> tuple[Dataset, LumbarResult]:
    ds, result = _lumbar(480, 400, slips={"L2-L3": 55.0}, anterior="right")
    ds.PatientName = "Müller^Jürgen"  # ISO_IR 100 (Latin-1) in the source
    return ds, result


BUILDERS: dict[str, Callable[[], tuple[Dataset, LumbarResult | CervicalResult]]] = {
    # DX, MONOCHROME2, no Frame of Reference, anterolisthesis I and retrolisthesis I.
    "dx_lateral_slips": lambda: _lumbar(600, 480, slips={"L4-L5": 18.0, "L5-S1": -9.0}),
    # DX MONOCHROME1 with a Frame of Reference, grade II, patient facing right.
    "dx_mono1_for": lambda: _lumbar(
        560, 448, slips={"L3-L4": 33.0}, anterior="right", photometric="MONOCHROME1", frame_of_reference=True
    ),
    # CR without Imager Pixel Spacing, Patient Orientation or window; odd size (517*389 % 8 != 0); no finding.
    "cr_bare_odd_no_findings": lambda: _lumbar(
        517,
        389,
        spacing=None,
        modality="CR",
        patient_orientation=None,
        imager_pixel_spacing=False,
        window=False,
    ),
    # Compressed sources (never decoded except for the SC), with missing vertebrae.
    "dx_j2k_missing_s1": lambda: _lumbar(
        501, 403, slips={"L4-L5": 12.0}, omit=(Vertebra.S1,), transfer_syntax=JPEG2000Lossless
    ),
    "dx_jpegls_missing_l1_l2": lambda: _lumbar(
        480, 400, omit=(Vertebra.L1, Vertebra.L2), transfer_syntax=JPEGLSLossless
    ),
    "dx_rle_retro_grade2": lambda: _lumbar(480, 384, slips={"L5-S1": -30.0}, transfer_syntax=RLELossless),
    # A grade II and a grade IV level, and a level the analysis abstained on (NOT_MEASURED).
    "dx_grades_2_4_not_measured": lambda: _lumbar(
        620,
        500,
        slips={"L3-L4": 38.0, "L4-L5": 80.0},
        not_measured={"L5-S1": "implausible corner fit"},
    ),
    # Non-ASCII patient name in the source (character set copied through).
    "dx_latin1_grade3": _umlaut,
    # VOI LUT Sequence only / windows and a VOI LUT together.
    "dx_voi_lut_only": lambda: _voi_lut(False),
    "dx_windows_and_voi_lut": lambda: _voi_lut(True),
    # AP lumbar: segmentation only.
    "dx_lumbar_ap": lambda: _lumbar(520, 440, view="ap", patient_orientation=("L", "F")),
    # DX FOR PROCESSING when no FOR PRESENTATION exists: referenced as given.
    "dx_for_processing": lambda: _lumbar(
        480, 400, slips={"L4-L5": 8.0}, presentation_intent="FOR PROCESSING", window=False
    ),
    # A lumbar result in which nothing was found: no SEG, SR/GSPS say so.
    "dx_no_vertebrae": lambda: _lumbar(400, 320, omit=tuple(Vertebra)),
    # Cervical obliques.
    "dx_cervical_right_abnormal": lambda: _cervical(
        560, 480, laterality="R", label="abnormal", probability=0.873, patient_orientation=("A", "F")
    ),
    "cr_mono1_cervical_left_normal": lambda: _cervical(
        503,
        421,
        laterality="L",
        label="normal",
        probability=0.214,
        modality="CR",
        photometric="MONOCHROME1",
        patient_orientation=None,
    ),
}
if HAVE_SYNTH:
    BUILDERS["synth_lumbar_lateral"] = _synth
    BUILDERS["synth_cervical_oblique"] = _synth_cervical


def build_case(name: str, out_dir: Path, settings: ResultSettings | None = None) -> Case:
    """Build, encode (with SC) and write one case under ``out_dir/name``."""
    source, result = BUILDERS[name]()
    case = Case(name, source, result)
    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    case.paths["source"] = d / "source.dcm"
    source.save_as(case.paths["source"], enforce_file_format=True)
    for obj in encode_results(source, result, settings or ResultSettings(), include_sc=True):
        case.objects[obj.kind] = obj
        path = d / f"{obj.kind.value}.dcm"
        path.write_bytes(obj.to_bytes())
        case.paths[obj.kind.value] = path
    return case


_SHARED: dict[str, dict[str, Case]] = {}


def shared_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every case built and encoded once per test session, shared by the test modules."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _SHARED:
        out = tmp_path_factory.mktemp("encode-corpus")
        _SHARED[key] = {name: build_case(name, out) for name in BUILDERS}
    return _SHARED[key]
