"""The view classifier: which of five views an X-ray shows, from its pixels.

>>> clf = ViewClassifier.load(None, "auto")          # shipped weights, CUDA when present
>>> pred = clf.classify(display_image(ds))            # ViewPrediction(label, probabilities)
>>> pred.label, pred.probability

Used by :mod:`cdss.route` when an image's tags are missing or contradict each other, and as a
veto on images whose tags say "spine" but which show something else (docs/operations.md,
"Which images are analysed"). The model card is docs/models/view.md.

Every image is classified together with its mirror image and the two answers are averaged (the
mirror's left and right obliques swapped back), so the answer is exactly mirror-consistent.
Left / right cervical obliques are mirror images of each other: the classifier says which side
the image *looks* like (a mirrored left oblique is reported as right). Routing uses the side
named by the header when there is one; otherwise the cervical analysis' ROI detector decides it
(it is trained for that); the classifier's side is kept as evidence.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdss.analysis.types import ModelInfo
from cdss.analysis.view.labels import LABELS, ViewPrediction, mirror_label
from cdss.analysis.view.network import ViewNet
from cdss.analysis.view.preprocess import prepare
from cdss.analysis.view.weights import ViewMeta, file_sha256, load_view_weights

__all__ = ["MANIFEST", "SHIPPED_WEIGHTS", "ViewClassifier", "resolve_device", "shipped_manifest"]

_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "view"
#: The shipped weights and their manifest (package data).
SHIPPED_WEIGHTS = _WEIGHTS_DIR / "cdss-view.pt"
MANIFEST = _WEIGHTS_DIR / "manifest.json"


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda:0`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:0``."""
    if device in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def shipped_manifest() -> dict[str, Any]:
    """The manifest of the shipped weights (name, version, sha256, training data, metrics)."""
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


class ViewClassifier:
    """Five-class view classifier (thread-safe after :meth:`load`).

    Attributes
    ----------
    info
        :class:`ModelInfo` (name, version, weights SHA-256).
    meta
        :class:`~cdss.analysis.view.weights.ViewMeta` stored with the weights.
    device
        Torch device string.
    """

    def __init__(self, net: ViewNet, meta: ViewMeta, info: ModelInfo, device: str) -> None:
        self.net = net
        self.meta = meta
        self.info = info
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def load(cls, weights: Path | None = None, device: str = "auto") -> ViewClassifier:
        """Load the shipped model (``weights=None``) or a file written by ``cdss train view``.

        Parameters
        ----------
        weights
            Path of a ``cdss-view`` weights file; ``None`` = the shipped one.
        device
            ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

        Raises
        ------
        cdss.analysis.view.weights.ViewWeightsError
            The file is missing or not view-classifier weights.
        """
        path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
        meta, state = load_view_weights(path)
        net = ViewNet(num_classes=len(LABELS), width=meta.width)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        dev = resolve_device(device)
        net.to(dev).eval()
        info = ModelInfo(
            name=meta.name,
            version=meta.version,
            weights_sha256=file_sha256(path),
            architecture=meta.architecture,
            training_data=meta.training_data,
        )
        return cls(net, meta, info, dev)

    @property
    def imgsz(self) -> int:
        return int(self.meta.imgsz)

    def warm_up(self) -> None:
        """One dummy inference (allocates buffers, picks kernels)."""
        self.classify(np.zeros((self.imgsz, self.imgsz), np.float32))

    def classify(self, display_image: np.ndarray) -> ViewPrediction:
        """Classify one image.

        Parameters
        ----------
        display_image
            :func:`cdss.analysis.pixels.display_image` output: float32 in [0, 1], bone bright,
            shape ``(rows, columns)`` (any size; a uint8 image is scaled by 1/255).
        """
        return self.classify_batch([display_image])[0]

    def classify_batch(self, images: list[np.ndarray]) -> list[ViewPrediction]:
        """Classify several images in one forward pass (same contract as :meth:`classify`)."""
        if not images:
            return []
        planes = np.stack([prepare(_as_float(img), self.imgsz, self.meta.planes) for img in images])
        # the image and its mirror in one pass; the mirror's oblique sides are swapped back
        batch = torch.from_numpy(np.concatenate([planes, planes[:, :, :, ::-1]])).to(self.device)
        with self._lock, torch.inference_mode():
            probs = torch.softmax(self.net(batch).float(), dim=1).cpu().numpy()
        n = len(images)
        probs = 0.5 * (probs[:n] + probs[n:][:, _MIRROR])
        return [_prediction(p) for p in probs]


#: Output index of each label's mirror image (left and right obliques swap).
_MIRROR = [LABELS.index(mirror_label(lab)) for lab in LABELS]


def _as_float(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32, copy=False)


def _prediction(probs: np.ndarray) -> ViewPrediction:
    best = int(np.argmax(probs))
    return ViewPrediction(
        label=LABELS[best],
        probabilities={lab.value: round(float(p), 6) for lab, p in zip(LABELS, probs, strict=True)},
    )
