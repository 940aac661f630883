"""The cervical foraminal stenosis analysis of one oblique view (seed 004).

Pipeline for one image (coordinates ``(column, row)`` in source pixels):

1. :func:`cdss.analysis.pixels.display_image` (bone bright; MONOCHROME1 inverted) → 8 bit;
2. ROI detection (:class:`~cdss.analysis.cervical.roi.RoiDetector`, YOLO11n, two classes that
   also give the side of the view);
3. the laterality: the caller's (from DICOM tags) when given, else the detector's class;
4. ROI + margin cut out and resized to the square input ``imgsz`` × ``imgsz`` (``stretch``, as
   seed 004; or padded to a square first, ``pad``) (:func:`~cdss.analysis.cervical.preprocess.crop_roi`);
5. histogram equalisation over the crop's valid pixels
   (:func:`~cdss.analysis.cervical.preprocess.equalize`);
6. flip normalisation: left views are mirrored into right-view orientation
   (:func:`~cdss.analysis.cervical.preprocess.to_canonical`);
7. frozen Spatial Transformer → ResNet50 → sigmoid probability of stenosis;
8. ``abnormal`` when probability ≥ operating point (stored with the weights, overridable by
   ``models.cervical_operating_point``).
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset

from cdss.analysis.cervical.bundle import BundleError, BundleMeta, file_sha256, load_bundle
from cdss.analysis.cervical.network import SpatialTransformer, StenosisNet, build_classifier, theta_angle
from cdss.analysis.cervical.preprocess import crop_roi, equalize, to_canonical
from cdss.analysis.cervical.roi import LOW_CONFIDENCE, RoiDetection, RoiDetector
from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.types import CervicalResult, Laterality, ModelInfo, Normality

__all__ = [
    "MANIFEST",
    "SHIPPED_WEIGHTS",
    "CervicalAnalysisError",
    "CervicalAnalyzer",
    "Prepared",
    "resolve_device",
    "shipped_manifest",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "cervical"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "cdss-cervical.pt"
MANIFEST = WEIGHTS_DIR / "manifest.json"

#: Below this detector-side confidence a disagreement with the header's laterality is not noted.
_SIDE_NOTE_CONFIDENCE = 0.8


class CervicalAnalysisError(ValueError):
    """The image cannot be analysed (no cervical spine found, side unknown); the message says why."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda:0`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:0``."""
    if device in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def shipped_manifest() -> dict[str, Any]:
    """The manifest of the shipped weights (name, version, sha256, recipe, measured figures)."""
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@dataclass
class Prepared:
    """One view ready for the classifier."""

    tensor: np.ndarray  # float32 (imgsz, imgsz) in [0, 1], canonical orientation
    aspect: float  # crop window height / width in source pixels
    laterality: Laterality
    roi: tuple[float, float, float, float]
    image_shape: tuple[int, int]
    notes: list[str]


def _display(ds_or_image: Dataset | np.ndarray) -> np.ndarray:
    if isinstance(ds_or_image, Dataset):
        return to_uint8(display_image(ds_or_image))
    arr = np.asarray(ds_or_image)
    if arr.ndim != 2:
        raise CervicalAnalysisError(f"expected a 2-D grey image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    return to_uint8(np.clip(arr.astype(np.float32), 0.0, 1.0))


class CervicalAnalyzer:
    """Cervical foraminal stenosis classifier for oblique views (thread-safe after :meth:`load`).

    Use :meth:`load`. Attributes ``info`` (:class:`ModelInfo`), ``meta``
    (:class:`~cdss.analysis.cervical.bundle.BundleMeta`), ``operating_point`` and ``device``.
    """

    def __init__(
        self,
        net: StenosisNet,
        detector: RoiDetector | None,
        meta: BundleMeta,
        info: ModelInfo,
        device: str,
        operating_point: float,
    ) -> None:
        self.net = net
        self.detector = detector
        self.meta = meta
        self.info = info
        self.device = device
        self.operating_point = operating_point
        #: A caution from the shipped manifest's evaluation, written into every result's notes.
        self.caution: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, weights: Path | None = None, device: str = "auto", *, operating_point: float | None = None
    ) -> CervicalAnalyzer:
        """Load the shipped model (``weights=None``) or a bundle written by ``cdss train cervical``.

        Parameters
        ----------
        weights
            ``None`` for the shipped synthetic-data model, or a cervical ``.pt`` bundle.
        device
            ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        operating_point
            Probability threshold for "abnormal"; ``None`` = the one stored with the weights
            (settings ``models.cervical_operating_point``).

        Raises
        ------
        BundleError
            The weights file is missing or is not a cervical bundle.
        """
        path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
        if weights is None and not path.exists():
            raise BundleError(
                f"the shipped cervical weights {path} are missing from this installation; "
                "reinstall cdss or set models.cervical_weights"
            )
        blob = load_bundle(path)
        meta = BundleMeta.from_dict(blob["meta"])
        resolved = resolve_device(device)
        stn = None
        if blob.get("stn") is not None and meta.stn_loc_size > 0:
            stn = SpatialTransformer(meta.stn_loc_size)
            stn.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in blob["stn"].items()}
            )
        classifier = build_classifier(meta.backbone, meta.pool)
        classifier.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in blob["classifier"].items()}
        )
        net = StenosisNet(stn, classifier).to(resolved).eval()
        detector = None
        if blob.get("roi_detector"):
            # Ultralytics loads from a path: the detector bytes go to a private temporary file
            with tempfile.TemporaryDirectory(prefix="cdss-cervical-roi-") as tmp:
                roi_path = Path(tmp) / "roi.pt"
                roi_path.write_bytes(blob["roi_detector"])
                detector = RoiDetector(roi_path, resolved, meta.roi_imgsz, meta.roi_input_side)
        sha = file_sha256(path)
        if weights is None:
            man = shipped_manifest()
            info = ModelInfo(
                name=man.get("name", meta.name),
                version=man.get("version", meta.version),
                weights_sha256=sha,
                architecture=meta.architecture,
                training_data=meta.training_data,
            )
        else:
            info = ModelInfo(
                name=meta.name,
                version=meta.version or sha[:12],
                weights_sha256=sha,
                architecture=meta.architecture,
                training_data=meta.training_data,
            )
        op = float(operating_point) if operating_point is not None else float(meta.operating_point)
        if not 0.0 <= op <= 1.0:
            raise ValueError(f"operating point {op} outside [0, 1]")
        analyzer = cls(net, detector, meta, info, resolved, op)
        if weights is None:
            verdict = (man.get("evaluation") or {}).get("verdict")
            analyzer.caution = f"model caution: {verdict}" if verdict else None
        return analyzer

    def warm_up(self) -> None:
        """One dummy pass so the first real image does not pay for lazy initialisation."""
        dummy = np.zeros((512, 400), dtype=np.uint8)
        dummy[100:400, 150:250] = 200
        if self.detector is not None:
            self.detector.detect_batch([dummy])
        x = torch.zeros((1, 1, self.meta.imgsz, self.meta.imgsz), device=self.device)
        with torch.inference_mode():
            self.net(x)

    # ------------------------------------------------------------------ preprocessing
    def prepare(
        self,
        image_u8: np.ndarray,
        laterality: Laterality | None,
        detection: RoiDetection | None,
        roi: tuple[float, float, float, float] | None = None,
    ) -> Prepared:
        """Crop, equalise and flip-normalise one display image.

        Parameters
        ----------
        image_u8
            Display image, uint8 ``(rows, columns)``.
        laterality
            Side from the header, or ``None`` to use the detector's.
        detection
            The detector's output for this image (``None`` if there is no detector or nothing
            was found).
        roi
            An explicit ROI (source pixels) that overrides the detection (evaluation with
            ground-truth boxes, sites without a detector).
        """
        notes: list[str] = []
        if roi is None:
            if detection is None:
                raise CervicalAnalysisError(
                    "cervical spine not found on the image (the ROI detector found no box); "
                    "is this a cervical oblique view?"
                )
            roi = detection.box
            notes.append(f"ROI detected (confidence {detection.confidence:.2f})")
            if detection.confidence < LOW_CONFIDENCE:
                notes.append("low ROI confidence: check that the outlined region is the cervical spine")
        if laterality is None:
            if detection is None:
                raise CervicalAnalysisError("laterality unknown: not in the header and no ROI detection")
            laterality = detection.laterality
            notes.append(
                f"laterality {laterality.value} inferred by the ROI detector "
                f"(side confidence {detection.side_confidence:.2f})"
            )
        elif (
            detection is not None
            and detection.laterality is not laterality
            and detection.side_confidence >= _SIDE_NOTE_CONFIDENCE
        ):
            notes.append(
                f"header laterality {laterality.value} used; the ROI detector saw a "
                f"{detection.laterality.value} view (side confidence {detection.side_confidence:.2f})"
            )
        crop, valid, window = crop_roi(image_u8, roi, self.meta.margin, self.meta.imgsz, self.meta.crop)
        eq = to_canonical(equalize(crop, valid), laterality)
        return Prepared(
            tensor=eq.astype(np.float32) / 255.0,
            aspect=window.aspect,
            laterality=Laterality(laterality),
            roi=tuple(float(v) for v in roi),  # type: ignore[arg-type]
            image_shape=(int(image_u8.shape[0]), int(image_u8.shape[1])),
            notes=notes,
        )

    # ------------------------------------------------------------------ inference
    def predict_tensors(
        self, tensors: list[np.ndarray], aspects: list[float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and STN rotation (degrees, source pixels) for prepared crops."""
        if not tensors:
            return np.zeros(0), np.zeros(0)
        x = torch.from_numpy(np.stack(tensors)[:, None]).to(self.device)
        with self._lock, torch.inference_mode():
            aligned, theta = self.net.align(x)
            logits = self.net.classifier((aligned - 0.5) / 0.29).squeeze(-1)
            probs = torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)
            asp = torch.tensor(aspects if aspects is not None else [1.0] * len(tensors))
            angles = theta_angle(theta.float().cpu(), asp).numpy().astype(np.float64)
        return probs, angles

    def analyse(
        self, ds_or_image: Dataset | np.ndarray, laterality: Laterality | None = None
    ) -> CervicalResult:
        """Analyse one oblique view.

        Parameters
        ----------
        ds_or_image
            The DICOM dataset, or a display image (bone bright; uint8, or float in [0, 1]).
        laterality
            Side of the view from the header; ``None`` = inferred by the ROI detector.

        Raises
        ------
        CervicalAnalysisError
            No cervical spine found, or the side cannot be determined.
        """
        return self.analyse_batch([(ds_or_image, laterality)])[0]

    def analyse_batch(
        self,
        items: list[tuple[Dataset | np.ndarray, Laterality | None]],
        *,
        rois: list[tuple[float, float, float, float] | None] | None = None,
    ) -> list[CervicalResult]:
        """Analyse several views with one detector call and one classifier forward pass.

        Parameters
        ----------
        items
            ``(dataset or display image, laterality or None)`` pairs.
        rois
            Optional explicit ROIs per item (``None`` entries use the detector).
        """
        images = [_display(ds) for ds, _ in items]
        rois = rois if rois is not None else [None] * len(items)
        need = [i for i, r in enumerate(rois) if r is None or items[i][1] is None]
        detections: list[RoiDetection | None] = [None] * len(items)
        if need and self.detector is not None:
            found = self.detector.detect_batch([images[i] for i in need])
            for i, d in zip(need, found, strict=True):
                detections[i] = d
        prepared = [
            self.prepare(img, None if lat is None else Laterality(lat), det, roi)
            for img, (_, lat), det, roi in zip(images, items, detections, rois, strict=True)
        ]
        probs, angles = self.predict_tensors([p.tensor for p in prepared], [p.aspect for p in prepared])
        results = []
        for p, prob, angle in zip(prepared, probs, angles, strict=True):
            notes = [*p.notes]
            if self.net.stn is not None and math.isfinite(float(angle)):
                notes.append(f"STN alignment {float(angle):+.1f} degrees")
            if self.caution:
                notes.append(self.caution)
            results.append(
                CervicalResult(
                    laterality=p.laterality,
                    probability=float(prob),
                    label=Normality.ABNORMAL if prob >= self.operating_point else Normality.NORMAL,
                    operating_point=self.operating_point,
                    roi=p.roi,
                    model=self.info,
                    image_shape=p.image_shape,
                    notes=notes,
                )
            )
        return results
