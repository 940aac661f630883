"""Cervical-spine ROI detection on oblique views (seed 004 section 3.1; YOLO11n instead of YOLOv5).

One Ultralytics detection model with two classes, :data:`ROI_CLASSES`:
``0 = cervical_left_oblique`` and ``1 = cervical_right_oblique``. The box is the cervical spine
(the crop the classifier sees); the class tells the side of the view, which the analysis uses
when the DICOM header does not. Left/right flip augmentation is switched off when training it
(a mirrored left view looks like a right view).

The image is downscaled (aspect kept, INTER_AREA) so its longest side is ``input_side`` — the
size the training images were stored at — and Ultralytics letterboxes it to ``imgsz``.
Boxes are mapped back to source pixels (``(column, row)``, pixel-centre convention).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cdss.analysis._ultralytics import UltralyticsSetupError, ultralytics
from cdss.analysis.imaging import resize_longest
from cdss.analysis.types import Laterality

__all__ = [
    "LOW_CONFIDENCE",
    "ROI_CLASSES",
    "RoiDetection",
    "RoiDetector",
    "build_roi_model",
    "load_roi_model",
]

#: Detector class names in class-id order.
ROI_CLASSES: tuple[str, str] = ("cervical_left_oblique", "cervical_right_oblique")
_CLASS_LATERALITY = {0: Laterality.LEFT, 1: Laterality.RIGHT}


#: Lowest detector confidence kept. The single best box is used, however weak, because a cervical
#: oblique routed here shows a cervical spine; the analyzer writes a note when it is below
#: :data:`LOW_CONFIDENCE` so that the reader checks the ROI drawn in the GSPS.
_MIN_CONFIDENCE = 0.01
#: Confidence below which the result carries a "low ROI confidence" note.
LOW_CONFIDENCE = 0.25


@dataclass(frozen=True)
class RoiDetection:
    """The detected cervical spine.

    Attributes
    ----------
    box
        ``(col0, row0, col1, row1)`` source pixels.
    laterality
        Side of the view according to the detector's class.
    confidence
        Detector confidence in [0, 1].
    side_confidence
        Share of the two classes' best scores that went to the chosen side (0.5 = undecided).
    """

    box: tuple[float, float, float, float]
    laterality: Laterality
    confidence: float
    side_confidence: float


def build_roi_model(architecture_yaml: str = "yolo11n.yaml") -> Any:
    """A fresh YOLO detection model from a bundled Ultralytics YAML (no download)."""
    ul = ultralytics()
    return ul.YOLO(architecture_yaml, task="detect")


def load_roi_model(weights: Path) -> Any:
    """A YOLO detection model from an existing local ``.pt`` (never a hub name, never a download)."""
    path = Path(weights)
    if path.suffix != ".pt" or not path.is_file():
        raise UltralyticsSetupError(f"ROI detector weights {path} do not exist or are not a .pt file")
    return ultralytics().YOLO(str(path.resolve()), task="detect")


class RoiDetector:
    """Thread-safe wrapper around an Ultralytics detection model.

    Parameters
    ----------
    weights
        Local ``.pt`` trained on :data:`ROI_CLASSES`.
    device
        Torch device string (``cpu``, ``cuda:0``).
    imgsz
        Ultralytics inference size.
    input_side
        Longest side of the image given to Ultralytics (the training images' size).
    """

    def __init__(self, weights: Path, device: str, imgsz: int, input_side: int) -> None:
        path = Path(weights)
        self.model = load_roi_model(path)
        names = tuple(str(v) for _, v in sorted(dict(self.model.names).items()))
        if names != ROI_CLASSES:
            raise UltralyticsSetupError(
                f"{path}: detector classes {names} are not {ROI_CLASSES} (train with `cdss train cervical`)"
            )
        self.model.to(device)
        self.device = device
        self.imgsz = imgsz
        self.input_side = input_side
        self._lock = threading.Lock()

    def detect_batch(self, images: list[np.ndarray]) -> list[RoiDetection | None]:
        """Detect the cervical spine on display images (uint8 ``(rows, columns)``, bone bright)."""
        smalls = [resize_longest(img, self.input_side) for img in images]
        inputs = [cv2.cvtColor(s, cv2.COLOR_GRAY2BGR) for s in smalls]
        with self._lock:
            preds = list(
                self.model.predict(
                    inputs,
                    imgsz=self.imgsz,
                    conf=_MIN_CONFIDENCE,
                    device=self.device,
                    half=self.device.startswith("cuda"),
                    verbose=False,
                    batch=max(1, len(inputs)),
                )
            )
        out: list[RoiDetection | None] = []
        for img, small, pred in zip(images, smalls, preds, strict=True):
            out.append(self._best(pred, img.shape, small.shape))
        return out

    @staticmethod
    def _best(pred: Any, shape: tuple[int, ...], small_shape: tuple[int, ...]) -> RoiDetection | None:
        boxes = getattr(pred, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return None
        conf = boxes.conf.cpu().numpy().astype(float)
        cls = boxes.cls.cpu().numpy().astype(int)
        xyxy = boxes.xyxy.cpu().numpy().astype(float)
        i = int(np.argmax(conf))
        best_per_class = {c: float(conf[cls == c].max()) for c in (0, 1) if np.any(cls == c)}
        own = best_per_class.get(int(cls[i]), float(conf[i]))
        other = best_per_class.get(1 - int(cls[i]), 0.0)
        sx = shape[1] / small_shape[1]
        sy = shape[0] / small_shape[0]
        # Ultralytics boxes are in edge coordinates (origin at the top-left pixel's corner) of the
        # small image: scale the edges, then shift to the pixel-centre convention
        c0, r0, c1, r1 = xyxy[i]
        box = (c0 * sx - 0.5, r0 * sy - 0.5, c1 * sx - 0.5, r1 * sy - 0.5)
        box = (
            float(np.clip(box[0], 0, shape[1] - 1)),
            float(np.clip(box[1], 0, shape[0] - 1)),
            float(np.clip(box[2], 0, shape[1] - 1)),
            float(np.clip(box[3], 0, shape[0] - 1)),
        )
        return RoiDetection(box, _CLASS_LATERALITY[int(cls[i])], float(conf[i]), own / (own + other))
