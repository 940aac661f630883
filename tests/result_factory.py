"""Build results and source images from ground truth, for tests, benchmarks and demos.

Nothing here runs a model. Two uses:

* :func:`lumbar_result_from_gt` / :func:`cervical_result_from_gt` turn a ground-truth JSON (the
  ``cdss.synth`` format in ``docs/dev/interfaces.md``) into the result dataclasses the analyses
  return, so encoders, the pipeline and the API can be tested before (and independently of) the
  trained models. Masks are rasterised from the GT outlines with OpenCV; slip % and grades are
  recomputed with :mod:`cdss.analysis.geometry` (the one definition).
* :func:`synthetic_lumbar_gt`, :func:`synthetic_cervical_gt` and :func:`make_source` make small
  pydicom DX/CR images with matching ground truth when no ``cdss.synth`` sample is at hand
  (MONOCHROME1, CR without Imager Pixel Spacing / Patient Orientation, DX without a Frame of
  Reference, compressed transfer syntaxes, odd sizes).

Coordinates are ``(column, row)`` source pixels, as everywhere in cdss.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    generate_uid,
)

from cdss.analysis.geometry import meyerding_grade, slip
from cdss.analysis.types import (
    LUMBAR_LEVELS,
    CervicalResult,
    Laterality,
    LevelMeasurement,
    LevelStatus,
    LumbarResult,
    LumbarView,
    ModelInfo,
    Normality,
    Vertebra,
    VertebraSegment,
)

__all__ = [
    "cervical_result_from_gt",
    "load_gt",
    "lumbar_result_from_gt",
    "make_source",
    "rasterise",
    "synthetic_cervical_gt",
    "synthetic_lumbar_gt",
    "test_model",
]


def test_model(name: str = "cdss-lumbar-seg", architecture: str = "YOLO11n-seg") -> ModelInfo:
    """A :class:`ModelInfo` for results built from ground truth (no real weights)."""
    digest = hashlib.sha256(f"ground truth stand-in for {name}".encode()).hexdigest()
    return ModelInfo(
        name=name,
        version="0.0.0+gt",
        weights_sha256=digest,
        architecture=architecture,
        training_data="none: result built from ground truth (tests.result_factory)",
    )


test_model.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# ---------------------------------------------------------------------------------------------
# Ground truth -> result dataclasses


def load_gt(path: Path | str) -> dict[str, Any]:
    """Read a ground-truth JSON file (``<name>.json`` beside ``<name>.dcm``)."""
    return dict(json.loads(Path(path).read_text()))


def rasterise(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a closed polygon given in (column, row) pixel coordinates.

    Pixel centres are at integer coordinates; OpenCV's sub-pixel ``shift`` keeps 1/16 pixel precision.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    pts = np.round(np.asarray(polygon, dtype=float) * 16.0).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def lumbar_result_from_gt(
    gt: Mapping[str, Any] | Path | str,
    *,
    model: ModelInfo | None = None,
    threshold_percent: float = 5.0,
    omit: Iterable[Vertebra | str] = (),
    confidence: float = 0.99,
    not_measured: Mapping[str, str] | None = None,
) -> LumbarResult:
    """The :class:`LumbarResult` a perfect model would return for this ground truth.

    Parameters
    ----------
    gt
        Ground-truth mapping or path to its JSON (``kind`` ``lumbar_lateral`` or ``lumbar_ap``).
    model
        Model identity written into the result (default :func:`test_model`).
    threshold_percent
        Smallest slip magnitude (percent) reported as a listhesis.
    omit
        Vertebrae to leave out, as if the model had not found them (their levels become
        ``MISSING`` with the reason).
    confidence
        Detection confidence given to every vertebra; a measured level's confidence is the lower
        of its two vertebrae's.
    not_measured
        Level name -> reason for levels to report as ``NOT_MEASURED`` (both vertebrae found, the
        level failed a check), as the analysis does when it abstains: no slip, no grade, a low
        confidence (half the vertebrae's).
    """
    if not isinstance(gt, Mapping):
        gt = load_gt(gt)
    kind = str(gt.get("kind", "lumbar_lateral"))
    if kind not in ("lumbar_lateral", "lumbar_ap"):
        raise ValueError(f"ground truth kind {kind!r} is not lumbar_lateral or lumbar_ap")
    view = LumbarView.LATERAL if kind == "lumbar_lateral" else LumbarView.AP
    shape = (int(gt["image"]["rows"]), int(gt["image"]["columns"]))
    skipped = {Vertebra(v) for v in omit}
    segments: list[VertebraSegment] = []
    for label in Vertebra:
        entry = gt.get("vertebrae", {}).get(label.value)
        if entry is None or label in skipped:
            continue
        outline = np.asarray(entry["outline"], dtype=float)
        segments.append(
            VertebraSegment(
                label=label,
                mask=rasterise(outline, shape),
                outline=outline,
                corners=np.asarray(entry["corners"], dtype=float),
                confidence=confidence,
            )
        )
    levels: list[LevelMeasurement] = []
    if view is LumbarView.LATERAL:
        found = {s.label: s for s in segments}
        for upper, lower in LUMBAR_LEVELS:
            if upper not in found or lower not in found:
                absent = [v.value for v in (upper, lower) if v not in found]
                levels.append(
                    LevelMeasurement(
                        upper=upper,
                        lower=lower,
                        status=LevelStatus.MISSING,
                        reason=f"{' and '.join(absent)} not detected",
                    )
                )
                continue
            level_confidence = min(found[upper].confidence, found[lower].confidence)
            name = f"{upper.value}-{lower.value}"
            if name in (not_measured or {}):
                levels.append(
                    LevelMeasurement(
                        upper=upper,
                        lower=lower,
                        status=LevelStatus.NOT_MEASURED,
                        reason=str((not_measured or {})[name]),
                        confidence=level_confidence / 2.0,
                    )
                )
                continue
            percent, displacement, width = slip(found[upper].corners, found[lower].corners)
            grade, direction = meyerding_grade(percent, threshold_percent)
            levels.append(
                LevelMeasurement(
                    upper=upper,
                    lower=lower,
                    status=LevelStatus.MEASURED,
                    slip_percent=percent,
                    direction=direction,
                    grade=grade,
                    displacement_px=displacement,
                    endplate_width_px=width,
                    confidence=level_confidence,
                )
            )
    return LumbarResult(
        view=view,
        image_shape=shape,
        vertebrae=segments,
        levels=levels,
        model=model or test_model(),
        listhesis_threshold_percent=threshold_percent,
        anterior_direction=str(gt.get("anterior") or ""),
        notes=["built from ground truth"],
    )


def cervical_result_from_gt(
    gt: Mapping[str, Any] | Path | str,
    *,
    probability: float | None = None,
    operating_point: float = 0.5,
    model: ModelInfo | None = None,
) -> CervicalResult:
    """The :class:`CervicalResult` for a cervical oblique ground truth.

    ``probability`` defaults to 0.9 for an abnormal and 0.1 for a normal ground-truth label; the
    label of the result follows ``probability >= operating_point`` as the analysis does.
    """
    if not isinstance(gt, Mapping):
        gt = load_gt(gt)
    cerv = gt["cervical"]
    if probability is None:
        probability = 0.9 if cerv["label"] == "abnormal" else 0.1
    label = Normality.ABNORMAL if probability >= operating_point else Normality.NORMAL
    c0, r0, c1, r1 = (float(v) for v in cerv["roi"])
    return CervicalResult(
        laterality=Laterality(cerv["laterality"]),
        probability=float(probability),
        label=label,
        operating_point=operating_point,
        roi=(c0, r0, c1, r1),
        model=model or test_model("cdss-cervical-stenosis", "STN+ResNet50"),
        image_shape=(int(gt["image"]["rows"]), int(gt["image"]["columns"])),
        notes=["built from ground truth"],
    )


# ---------------------------------------------------------------------------------------------
# Synthetic ground truth (a stand-in for cdss.synth)


def _rotate(points: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - centre) @ rot.T + centre


def _outline_from_corners(corners: np.ndarray, waist: float, per_edge: int = 12) -> np.ndarray:
    """A vertebra-like closed outline through the four corners, sides pinched by ``waist`` pixels."""
    pts = []
    centre = corners.mean(axis=0)
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        for t in np.linspace(0.0, 1.0, per_edge, endpoint=False):
            p = a + (b - a) * t
            if i in (1, 3):  # the posterior and anterior walls are concave
                towards = centre - p
                towards /= max(np.hypot(*towards), 1e-9)
                p = p + towards * waist * np.sin(np.pi * t)
            pts.append(p)
    return np.asarray(pts, dtype=float)


def synthetic_lumbar_gt(
    rows: int,
    columns: int,
    *,
    slips: Mapping[str, float] | None = None,
    anterior: str = "left",
    view: str = "lateral",
    tilt_deg: float = 4.0,
    pixel_spacing_mm: float | None = 0.15,
    photometric: str = "MONOCHROME2",
) -> dict[str, Any]:
    """Ground truth of six stacked vertebrae (L1–S1) in the ``cdss.synth`` JSON layout.

    Parameters
    ----------
    rows, columns
        Image size.
    slips
        Intended slip percent per level name (``{"L4-L5": 18.0}``; positive = anterior). The
        GT ``levels`` are recomputed from the corners with :func:`cdss.analysis.geometry.slip`,
        so they are exact for the drawn geometry.
    anterior
        Image side the patient faces on a lateral view (``"left"`` or ``"right"``).
    view
        ``"lateral"`` or ``"ap"`` (AP: no slips, corners left/right).
    tilt_deg
        In-plane rotation of the whole column, degrees.
    """
    slips = dict(slips or {})
    sign = -1.0 if anterior == "left" else 1.0  # image-column direction of "anterior"
    span = rows * 0.82
    step = span / 6.0
    height = step * 0.72
    width = min(height * 1.45, columns * 0.28)
    centre_col = columns * 0.5
    widths = {v: width * (1.12 if v is Vertebra.S1 else 1.0) for v in Vertebra}
    # Build from the sacrum upwards: place each posterior wall so that the level realises its slip
    # (the slip is measured along, and relative to, the inferior vertebra's superior endplate).
    posterior_wall: dict[Vertebra, float] = {Vertebra.S1: 0.0}
    order = list(Vertebra)
    for upper, lower in reversed(LUMBAR_LEVELS):
        percent = slips.get(f"{upper.value}-{lower.value}", 0.0) if view == "lateral" else 0.0
        posterior_wall[upper] = posterior_wall[lower] + sign * percent / 100.0 * widths[lower]
    offsets = {v: posterior_wall[v] + sign * widths[v] / 2.0 for v in Vertebra}
    shift = -float(np.mean(list(offsets.values())))
    centre_all = np.array([centre_col, rows * 0.09 + span / 2.0])
    vertebrae: dict[str, Any] = {}
    for i, label in enumerate(order):
        cy = rows * 0.09 + step * (i + 0.5)
        cx = centre_col + offsets[label] + shift
        w = widths[label]
        h = height
        left, right = cx - w / 2.0, cx + w / 2.0
        top, bottom = cy - h / 2.0, cy + h / 2.0
        if view == "lateral":
            ant, post = (left, right) if anterior == "left" else (right, left)
            corners = np.array([[ant, top], [post, top], [post, bottom], [ant, bottom]], dtype=float)
        else:
            corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=float)
        corners = _rotate(corners, centre_all, tilt_deg)
        outline = _outline_from_corners(corners, waist=w * 0.06)
        vertebrae[label.value] = {"corners": corners.tolist(), "outline": outline.tolist()}
    levels = []
    if view == "lateral":
        for upper, lower in LUMBAR_LEVELS:
            percent, _, _ = slip(
                np.asarray(vertebrae[upper.value]["corners"]), np.asarray(vertebrae[lower.value]["corners"])
            )
            grade, direction = meyerding_grade(percent, 5.0)
            levels.append(
                {
                    "level": f"{upper.value}-{lower.value}",
                    "upper": upper.value,
                    "lower": lower.value,
                    "slip_percent": percent,
                    "direction": direction.value,
                    "grade": grade.value,
                }
            )
    return {
        "generator": "tests.result_factory",
        "generator_version": 1,
        "kind": "lumbar_lateral" if view == "lateral" else "lumbar_ap",
        "image": {
            "rows": rows,
            "columns": columns,
            "photometric": photometric,
            "bits_stored": 12,
            "pixel_spacing_mm": None if pixel_spacing_mm is None else [pixel_spacing_mm] * 2,
            "rotation_deg": tilt_deg,
        },
        "anterior": anterior if view == "lateral" else None,
        "vertebrae": vertebrae,
        "levels": levels,
    }


def synthetic_cervical_gt(
    rows: int, columns: int, *, laterality: str = "R", label: str = "abnormal"
) -> dict[str, Any]:
    """Ground truth of a cervical oblique view: seven vertebral bodies and the classifier ROI."""
    step = rows * 0.8 / 7.0
    w, h = columns * 0.18, step * 0.65
    cx = columns * 0.5
    vertebrae = {}
    for i in range(7):
        cy = rows * 0.1 + step * (i + 0.5)
        corners = np.array(
            [
                [cx - w / 2, cy - h / 2],
                [cx + w / 2, cy - h / 2],
                [cx + w / 2, cy + h / 2],
                [cx - w / 2, cy + h / 2],
            ]
        )
        vertebrae[f"C{i + 1}"] = {"corners": corners.tolist(), "outline": corners.tolist()}
    roi = [cx - w * 1.4, rows * 0.1, cx + w * 1.4, rows * 0.9]
    return {
        "generator": "tests.result_factory",
        "generator_version": 1,
        "kind": "cervical_oblique",
        "image": {"rows": rows, "columns": columns, "photometric": "MONOCHROME2", "bits_stored": 12},
        "cervical_vertebrae": vertebrae,
        "cervical": {"laterality": laterality, "label": label, "roi": roi, "foramina": []},
    }


def _draw_image(gt: Mapping[str, Any], seed: int) -> np.ndarray:
    """A display-polarity [0, 1] picture of the GT (soft-tissue gradient, bright vertebrae, noise)."""
    rows, cols = int(gt["image"]["rows"]), int(gt["image"]["columns"])
    rng = np.random.default_rng(seed)
    xx = np.arange(cols, dtype=np.float32)[None, :]
    img = np.repeat(0.15 + 0.15 * np.exp(-(((xx - cols / 2) / (cols * 0.35)) ** 2)), rows, axis=0)
    bodies = list(gt.get("vertebrae", {}).values()) + list(gt.get("cervical_vertebrae", {}).values())
    for entry in bodies:
        mask = rasterise(np.asarray(entry["outline"], dtype=float), (rows, cols))
        img[mask] += 0.45
    img += rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def make_source(
    gt: Mapping[str, Any],
    *,
    modality: str = "DX",
    photometric: str | None = None,
    frame_of_reference: bool = False,
    imager_pixel_spacing: bool = True,
    patient_orientation: Sequence[str] | None = ("P", "F"),
    transfer_syntax: str = ExplicitVRLittleEndian,
    presentation_intent: str = "FOR PRESENTATION",
    window: bool = True,
    seed: int = 0,
    study_instance_uid: str | None = None,
) -> Dataset:
    """A DX or CR image of the ground truth, as a pydicom dataset (with file meta).

    Parameters
    ----------
    gt
        Ground truth from :func:`synthetic_lumbar_gt` / :func:`synthetic_cervical_gt` (or cdss.synth).
    modality
        ``"DX"`` (Digital X-Ray Image Storage - For Presentation/Processing) or ``"CR"``.
    photometric
        ``MONOCHROME1`` or ``MONOCHROME2`` (default: the GT's).
    frame_of_reference
        Add a Frame of Reference UID (DX allows one; most DX have none).
    imager_pixel_spacing
        Write Imager Pixel Spacing (0018,1164) when the GT has a spacing.
    patient_orientation
        Patient Orientation (0020,0020), or None to leave it out (CR allows that).
    transfer_syntax
        Transfer syntax UID; compressed syntaxes are encoded with pydicom's installed encoders.
    presentation_intent
        DX only: ``FOR PRESENTATION`` or ``FOR PROCESSING``.
    window
        Write Window Center/Width (VOI LUT).
    """
    rows, cols = int(gt["image"]["rows"]), int(gt["image"]["columns"])
    photometric = photometric or str(gt["image"].get("photometric", "MONOCHROME2"))
    bits = int(gt["image"].get("bits_stored", 12))
    display = _draw_image(gt, seed)
    stored = display if photometric == "MONOCHROME2" else 1.0 - display
    pixels = np.round(stored * (2**bits - 1)).astype(np.uint16)

    kind = str(gt.get("kind", "lumbar_lateral"))
    body_part = "CSPINE" if kind.startswith("cervical") else "LSPINE"
    if kind == "lumbar_lateral":
        view = "LL" if gt.get("anterior") == "right" else "RL"
    elif kind == "lumbar_ap":
        view = "AP"
    else:
        view = "LAO" if gt.get("cervical", {}).get("laterality") == "R" else "RAO"

    ds = Dataset()
    if modality == "DX":
        sop_class = (
            DigitalXRayImageStorageForPresentation
            if presentation_intent == "FOR PRESENTATION"
            else DigitalXRayImageStorageForProcessing
        )
    elif modality == "CR":
        sop_class = ComputedRadiographyImageStorage
    else:
        raise ValueError(f"modality must be DX or CR, not {modality!r}")
    now = dt.datetime(2026, 1, 15, 10, 30, 0)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Synthetic^Spine"
    ds.PatientID = "SYN-0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "cdss synthetic"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.Laterality = ""
    ds.ImageLaterality = "U"
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if modality == "DX" else ["ORIGINAL", "PRIMARY", ""]
    if modality == "DX":
        ds.PresentationIntentType = presentation_intent
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.BurnedInAnnotation = "NO"
        ds.DetectorType = "SCINTILLATOR"
        ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
        ds.LossyImageCompression = "00"
    spacing = gt["image"].get("pixel_spacing_mm")
    if imager_pixel_spacing and spacing:
        ds.ImagerPixelSpacing = [float(spacing[0]), float(spacing[1])]
    if frame_of_reference:
        ds.FrameOfReferenceUID = generate_uid()
        ds.PositionReferenceIndicator = ""
    if window:
        ds.WindowCenter = 2 ** (bits - 1)
        ds.WindowWidth = 2**bits
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    if UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(UID(transfer_syntax), pixels)
    return ds
