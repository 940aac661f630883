"""Training and evaluating the view classifier (``cdss train view``, ``cdss evaluate view``).

Data: directories of DICOM files with the synthetic ground-truth JSON beside each
(``cdss fixtures generate``, any family; the label comes from ``kind`` and, for cervical
obliques, ``cervical.laterality``), or site folders with a ``labels.csv`` (``file,label``; label
one of :class:`~cdss.analysis.view.labels.ViewLabel`). Every image is decoded once through
:func:`cdss.analysis.pixels.display_image` (the polarity the node sees), shrunk to
``cache_side`` pixels and cached as 8-bit under the run directory.

Training applies strong, randomised augmentation (:class:`ViewAugment`) so the network does not
learn one generator's look: rotation, zoom, crops, aspect changes, horizontal mirroring (which
swaps the cervical oblique sides, see :func:`~cdss.analysis.view.labels.mirror_label`),
small fields in large shuttered images, (rarely) quarter turns, collimation shutters, lead
markers, cut-out rectangles, window / gamma / contrast curves, CLAHE, unsharp masking, blur,
noise, grid stripes, an exposure ramp, JPEG compression and (rarely) inversion. Classes are sampled
balanced. AdamW with a warm-up and cosine learning-rate schedule; the checkpoint is written after
every epoch (``--resume`` continues it); the weights kept are those of the epoch with the lowest
validation loss (clean validation images plus a fixed augmented copy of them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import torch
from pydicom import dcmread
from pydicom.dataset import Dataset as DicomDataset
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.view.classifier import ViewClassifier, resolve_device
from cdss.analysis.view.labels import LABELS, ViewLabel, mirror_label
from cdss.analysis.view.network import ViewNet
from cdss.analysis.view.preprocess import prepare
from cdss.analysis.view.weights import ViewMeta, file_sha256, save_view_weights
from cdss.config import Analysis, RouteSettings
from cdss.route import route
from cdss.route.tags import tag_text

__all__ = [
    "ImageCache",
    "ViewAugment",
    "ViewSample",
    "ViewTrainConfig",
    "confusion_matrix",
    "evaluate_view",
    "find_samples",
    "label_from_truth",
    "routing_rates",
    "routing_study",
    "train_view",
]

Progress = Callable[[str, int, int, str], None]

_KIND_LABELS = {
    "lumbar_lateral": ViewLabel.LUMBAR_LATERAL,
    "lumbar_ap": ViewLabel.LUMBAR_AP,
    "other": ViewLabel.OTHER,
}


# ---------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ViewSample:
    """One labelled image.

    Attributes
    ----------
    path
        The DICOM file.
    label
        Its class.
    family
        Where it comes from (the synthetic ``generator``/``family`` field, or ``site``): results
        are reported per family.
    detail
        Finer description for reports (variant, body part).
    """

    path: Path
    label: ViewLabel
    family: str
    detail: str = ""


def label_from_truth(truth: dict[str, Any]) -> ViewLabel:
    """The view label of a synthetic ground-truth JSON (``kind`` + cervical laterality).

    Raises
    ------
    ValueError
        Unknown ``kind``, or a cervical oblique without ``cervical.laterality`` L/R.
    """
    kind = str(truth.get("kind", ""))
    if kind in _KIND_LABELS:
        return _KIND_LABELS[kind]
    if kind == "cervical_oblique":
        side = str((truth.get("cervical") or {}).get("laterality", "")).upper()
        if side == "L":
            return ViewLabel.CERVICAL_OBLIQUE_LEFT
        if side == "R":
            return ViewLabel.CERVICAL_OBLIQUE_RIGHT
        raise ValueError(f"cervical oblique without cervical.laterality L/R (got {side!r})")
    raise ValueError(f"unknown kind {kind!r} (expected lumbar_lateral, lumbar_ap, cervical_oblique or other)")


def _family(truth: dict[str, Any]) -> str:
    fam = truth.get("family")
    gen = str(truth.get("generator", "synthetic"))
    return f"{gen}/{fam}" if fam else gen


def _detail(truth: dict[str, Any]) -> str:
    parts = [str(truth.get("variant", ""))]
    other = truth.get("other") or {}
    part = truth.get("body_part") or (other.get("body_part") if isinstance(other, dict) else None)
    if part:
        parts.append(str(part))
    return "/".join(p for p in parts if p)


def find_samples(dirs: Iterable[Path]) -> list[ViewSample]:
    """Every labelled image under ``dirs`` (recursively), sorted by path.

    A directory holding ``labels.csv`` (columns ``file,label``, ``file`` relative to it) is read
    from that file; otherwise every ``*.dcm`` with a ``.json`` beside it is a sample.

    Raises
    ------
    FileNotFoundError
        A directory does not exist or holds no labelled images.
    ValueError
        A label cannot be read (the message names the file).
    """
    out: list[ViewSample] = []
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"view data directory {root} does not exist")
        found = 0
        for csv_path in sorted(root.rglob("labels.csv")):
            with csv_path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    try:
                        label = ViewLabel(str(row["label"]).strip())
                    except (KeyError, ValueError) as exc:
                        raise ValueError(
                            f"{csv_path}: row {row} needs file,label with label one of "
                            f"{[lab.value for lab in LABELS]}"
                        ) from exc
                    out.append(ViewSample(csv_path.parent / row["file"], label, "site", csv_path.parent.name))
                    found += 1
        for dcm in sorted(root.rglob("*.dcm")):
            js = dcm.with_suffix(".json")
            if not js.exists():
                continue
            truth = json.loads(js.read_text(encoding="utf-8"))
            try:
                label = label_from_truth(truth)
            except ValueError as exc:
                raise ValueError(f"{js}: {exc}") from exc
            out.append(ViewSample(dcm, label, _family(truth), _detail(truth)))
            found += 1
        if not found:
            raise FileNotFoundError(f"no labelled images (DICOM + JSON or labels.csv) under {root}")
    return sorted(out, key=lambda s: str(s.path))


def load_small(path: Path, side: int) -> np.ndarray:
    """The display image of a DICOM file shrunk (area averaging) so its longest side is ``side``, uint8."""
    img = display_image(dcmread(path))
    h, w = img.shape
    scale = side / max(h, w)
    if scale < 1:
        img = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return to_uint8(img)


class ImageCache:
    """8-bit display images of a sample list, kept in memory and saved as one ``.npz``."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    @staticmethod
    def key(samples: Sequence[ViewSample], side: int) -> str:
        h = hashlib.sha256(f"side={side}".encode())
        for s in samples:
            st = s.path.stat()
            h.update(f"{s.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    @classmethod
    def build(
        cls,
        samples: Sequence[ViewSample],
        cache_dir: Path,
        side: int,
        progress: Progress | None = None,
        name: str = "cache",
    ) -> ImageCache:
        """Load from ``cache_dir`` when the same files were cached before, else decode and save."""
        path = Path(cache_dir) / f"{name}-{cls.key(samples, side)}.npz"
        if path.exists():
            with np.load(path) as z:
                data, offsets, shapes = z["data"], z["offsets"], z["shapes"]
            images = [
                data[offsets[i] : offsets[i + 1]].reshape(tuple(shapes[i])) for i in range(len(samples))
            ]
            return cls(images)
        images = []
        for i, s in enumerate(samples):
            images.append(load_small(s.path, side))
            if progress is not None:
                progress(name, i + 1, len(samples), "")
        shapes = np.array([im.shape for im in images], np.int32).reshape(-1, 2)
        offsets = np.concatenate([[0], np.cumsum([im.size for im in images])]).astype(np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, data=np.concatenate([im.ravel() for im in images]), offsets=offsets, shapes=shapes)
        tmp.replace(path)
        return cls(images)


# ---------------------------------------------------------------------------------------- augmentation
@dataclass
class ViewAugment:
    """Randomised geometric and appearance changes (module docstring). ``strength`` 0 = none.

    The probabilities are per sample and independent; the values are on the display scale
    [0, 1] at the cache resolution (``cache_side`` ≈ 224 px).
    """

    strength: float = 1.0
    p_flip: float = 0.5
    p_invert: float = 0.08
    p_collimate: float = 0.45
    p_marker: float = 0.35
    p_clahe: float = 0.25
    p_unsharp: float = 0.25
    p_blur: float = 0.3
    p_noise: float = 0.45
    p_ramp: float = 0.3
    p_jpeg: float = 0.25
    p_zoom_out: float = 0.25
    p_quarter_turn: float = 0.04
    p_cutout: float = 0.2
    p_stripes: float = 0.12
    p_bend: float = 0.0
    max_rotation_deg: float = 25.0

    def __call__(
        self, img8: np.ndarray, label: ViewLabel, rng: np.random.Generator
    ) -> tuple[np.ndarray, ViewLabel]:
        img: np.ndarray = img8.astype(np.float32) / 255.0
        if self.strength <= 0:
            return img, label
        s = self.strength
        img = self._geometry(img, rng)
        if rng.random() < self.p_bend * s:
            img = self._bend(img, rng)
        if rng.random() < self.p_flip:
            img = img[:, ::-1].copy()
            label = mirror_label(label)
        if rng.random() < self.p_collimate * s:
            img = self._collimate(img, rng)
        if rng.random() < self.p_marker * s:
            img = self._marker(img, rng)
        if rng.random() < self.p_cutout * s:
            img = self._cutout(img, rng)
        img = self._tone(img, rng)
        if rng.random() < self.p_stripes * s:  # anti-scatter grid aliasing
            h, w = img.shape
            period = float(rng.uniform(2.5, 12.0))
            axis = np.arange(w if rng.random() < 0.5 else h, dtype=np.float32)
            wave = np.sin(2 * np.pi * axis / period) * float(rng.uniform(0.01, 0.05))
            img = np.clip(img + (wave[None, :] if wave.size == w else wave[:, None]), 0, 1)
        if rng.random() < self.p_clahe * s:
            clahe = cv2.createCLAHE(
                clipLimit=float(rng.uniform(1.2, 4.0)), tileGridSize=(int(rng.integers(3, 9)),) * 2
            )
            img = clahe.apply(to_uint8(img)).astype(np.float32) / 255.0
        if rng.random() < self.p_unsharp * s:
            sigma = float(rng.uniform(1.0, 8.0))
            amount = float(rng.uniform(0.3, 1.5))
            img = np.clip(img + amount * (img - cv2.GaussianBlur(img, (0, 0), sigma)), 0, 1)
        if rng.random() < self.p_blur * s:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.8)))
        if rng.random() < self.p_ramp * s:
            h, w = img.shape
            ang = rng.uniform(0, 2 * math.pi)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            ramp = (np.cos(ang) * (xx / w - 0.5) + np.sin(ang) * (yy / h - 0.5)) * rng.uniform(0.1, 0.4)
            img = np.clip(img + ramp, 0, 1)
        if rng.random() < self.p_noise * s:
            sigma = float(rng.uniform(0.005, 0.06))
            noise = rng.normal(0, sigma, img.shape).astype(np.float32)
            if rng.random() < 0.5:  # correlated (detector / processing) noise
                noise = cv2.GaussianBlur(noise, (0, 0), 1.0) * 2.0
            img = np.clip(img + noise, 0, 1)
        if rng.random() < self.p_jpeg * s:
            ok, enc = cv2.imencode(
                ".jpg", to_uint8(img), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))]
            )
            if ok:
                # decoding what was just encoded: never None
                img = cast(np.ndarray, cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)).astype(np.float32) / 255.0
        if rng.random() < self.p_invert * s:
            img = 1.0 - img
        return img.astype(np.float32), label

    # -- geometry: rotation, zoom, crop / pad, aspect
    def _geometry(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.strength
        if rng.random() < self.p_quarter_turn * s:  # displayed a quarter turn off
            img = np.ascontiguousarray(np.rot90(img, k=int(rng.choice([1, 3]))))
        h, w = img.shape
        if rng.random() < 0.7:
            ang = float(np.clip(rng.normal(0, 9), -self.max_rotation_deg, self.max_rotation_deg)) * s
        else:
            ang = float(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg)) * s
        aspect = float(np.exp(rng.normal(0, 0.08 * s)))
        if rng.random() < self.p_zoom_out * s:  # a small field in a large, shuttered image
            zoom = float(rng.uniform(0.45, 0.9))
            fh = fw = 1.0
        else:
            zoom = float(np.exp(rng.normal(0, 0.12 * s)))
            # output window: a crop (or an enlarged canvas) of the rotated image
            fh = float(np.clip(rng.uniform(0.7, 1.08) if rng.random() < 0.5 * s else 1.0, 0.5, 1.1))
            fw = float(np.clip(rng.uniform(0.7, 1.08) if rng.random() < 0.5 * s else 1.0, 0.5, 1.1))
        oh, ow = max(16, round(h * fh)), max(16, round(w * fw))
        cx = w / 2 + rng.uniform(-0.5, 0.5) * max(0.0, w - ow / zoom) * 0.8
        cy = h / 2 + rng.uniform(-0.5, 0.5) * max(0.0, h - oh / zoom) * 0.8
        m: np.ndarray = cv2.getRotationMatrix2D((cx, cy), ang, zoom)
        m[0, :] *= aspect
        m[0, 2] += ow / 2 - cx * aspect
        m[1, 2] += oh / 2 - cy
        border = float(rng.choice([0.0, float(rng.uniform(0.85, 1.0)), float(np.median(img))]))
        return cv2.warpAffine(
            img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
        )

    @staticmethod
    def _collimate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape
        x0, x1 = sorted(rng.uniform([0.0, 0.7], [0.3, 1.0]) * w)
        y0, y1 = sorted(rng.uniform([0.0, 0.7], [0.3, 1.0]) * h)
        rect = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        m = cv2.getRotationMatrix2D(
            (float(rect[:, 0].mean()), float(rect[:, 1].mean())), rng.normal(0, 4), 1.0
        )
        poly = (rect @ m[:, :2].T + m[:, 2]).astype(np.int32)
        mask: np.ndarray = np.zeros((h, w), np.float32)
        cv2.fillPoly(mask, [poly], 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), float(rng.uniform(0.5, 3.0)))
        shutter = float(rng.choice([rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.15), rng.uniform(0.3, 0.7)]))
        return img * mask + shutter * (1 - mask)

    @staticmethod
    def _bend(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shift every row sideways by a smooth wave: straightens or curves the spine (lordosis,
        scoliosis), so the class cannot be read from the column's curvature alone."""
        h, w = img.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        amp = float(rng.uniform(-0.1, 0.1)) * w
        freq = float(rng.uniform(0.4, 1.2))
        phase = float(rng.uniform(0, 2 * math.pi))
        shift = amp * np.sin(math.pi * freq * yy / h + phase)
        return cv2.remap(img, xx + shift, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    @staticmethod
    def _cutout(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """1–3 rectangles of one grey value (implants, labels, defects, overlapping objects)."""
        h, w = img.shape
        out = img.copy()
        for _ in range(int(rng.integers(1, 4))):
            bh, bw = int(rng.uniform(0.03, 0.2) * h), int(rng.uniform(0.03, 0.2) * w)
            r0, c0 = int(rng.uniform(0, h - bh)), int(rng.uniform(0, w - bw))
            out[r0 : r0 + bh, c0 : c0 + bw] = float(
                rng.choice([rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.6)])
            )
        return out

    @staticmethod
    def _marker(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape
        letter = str(rng.choice(["L", "R", "LT", "RT", "A", "P"]))
        scale = float(rng.uniform(0.3, 0.9)) * max(h, w) / 224
        x = int(rng.uniform(0.03, 0.85) * w)
        y = int(rng.uniform(0.1, 0.97) * h)
        value = float(rng.uniform(0.85, 1.0)) if rng.random() < 0.8 else float(rng.uniform(0.0, 0.1))
        ink = np.zeros((h, w), np.uint8)
        cv2.putText(ink, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(1, round(2 * scale)))
        if rng.random() < 0.3:
            cv2.rectangle(
                ink, (x - 3, y - int(22 * scale)), (x + int(22 * scale * len(letter)), y + 4), 255, 1
            )
        out = np.where(ink > 0, np.float32(value), img)
        return out

    def _tone(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.strength
        if rng.random() < 0.5 * s:  # a different window
            lo = float(np.percentile(img, rng.uniform(0, 12)))
            hi = float(np.percentile(img, rng.uniform(88, 100)))
            if hi > lo + 1e-3:
                img = np.clip((img - lo) / (hi - lo), 0, 1)
        if rng.random() < 0.6 * s:  # gamma
            img = np.power(np.clip(img, 0, 1), float(np.exp(rng.normal(0, 0.4))))
        if rng.random() < 0.3 * s:  # sigmoid contrast curve
            k = float(rng.uniform(3, 10))
            c = float(rng.uniform(0.3, 0.7))
            lo, hi = 1 / (1 + math.exp(k * c)), 1 / (1 + math.exp(-k * (1 - c)))
            img = (1 / (1 + np.exp(-k * (img - c))) - lo) / (hi - lo)
        if rng.random() < 0.3 * s:  # gain / offset
            img = np.clip(img * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15), 0, 1)
        return img.astype(np.float32)


class ViewDataset(Dataset):
    """Samples of an :class:`ImageCache` as classifier inputs (augmented when ``augment`` is set).

    Randomness is a function of (``seed``, ``epoch``, index): reproducible with any number of
    loader workers, different every epoch.
    """

    def __init__(
        self,
        cache: ImageCache,
        labels: Sequence[ViewLabel],
        indices: Sequence[int],
        imgsz: int,
        augment: ViewAugment | None,
        seed: int,
        planes: str = "eq-std-mask",
    ) -> None:
        self.cache = cache
        self.labels = list(labels)
        self.indices = list(indices)
        self.imgsz = imgsz
        self.augment = augment
        self.seed = seed
        self.planes = planes
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        idx = self.indices[i]
        label = self.labels[idx]
        img8 = self.cache.images[idx]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i, idx])
            img, label = self.augment(img8, label, rng)
        else:
            img = img8.astype(np.float32) / 255.0
        return torch.from_numpy(prepare(img, self.imgsz, self.planes)), LABELS.index(label)


# ---------------------------------------------------------------------------------------- training
@dataclass
class ViewTrainConfig:
    """``cdss train view`` options (see the CLI help for each)."""

    data: list[Path]
    out: Path = Path("var/train/view")
    val_data: list[Path] = field(default_factory=list)
    val_fraction: float = 0.15
    epochs: int = 14
    imgsz: int = 128
    width: int = 24
    planes: str = "eq-std-mask"
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.05
    augment_strength: float = 1.0
    bend: float = 0.0
    cache_side: int = 224
    device: str = "auto"
    workers: int = 1
    threads: int = 0
    seed: int = 0
    resume: bool = False
    time_hours: float | None = None
    name: str = "cdss-view"
    version: str = "0.0.0"
    training_data: str = "synthetic radiographs (cdss.synth)"


@dataclass
class TrainOutcome:
    weights: Path
    sha256: str
    best_epoch: int
    history: list[dict[str, Any]]
    validation: dict[str, Any]


def _lr_at(cfg: ViewTrainConfig, frac: float) -> float:
    if frac < cfg.warmup_fraction:
        return cfg.lr * max(frac / max(cfg.warmup_fraction, 1e-9), 0.02)
    t = (frac - cfg.warmup_fraction) / max(1e-9, 1 - cfg.warmup_fraction)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _balanced_epoch(labels: Sequence[ViewLabel], indices: Sequence[int], rng: random.Random) -> list[int]:
    """``len(indices)`` positions into ``indices``, each class drawn equally often."""
    by_class: dict[ViewLabel, list[int]] = {}
    for pos, idx in enumerate(indices):
        by_class.setdefault(labels[idx], []).append(pos)
    classes = sorted(by_class, key=lambda c: c.value)
    n = len(indices)
    out: list[int] = []
    for k, c in enumerate(classes):
        want = n // len(classes) + (1 if k < n % len(classes) else 0)
        pool = by_class[c]
        rng.shuffle(pool)
        out += [pool[j % len(pool)] for j in range(want)]
    rng.shuffle(out)
    return out


def _evaluate_loader(net: nn.Module, loader: DataLoader, device: str) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    probs, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            probs.append(torch.softmax(net(x.to(device)).float(), dim=1).cpu().numpy())
            labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1))))


def _per_class_accuracy(labels: np.ndarray, preds: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, lab in enumerate(LABELS):
        sel = labels == k
        out[lab.value] = float((preds[sel] == k).mean()) if sel.any() else None
    return out


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_view(cfg: ViewTrainConfig, progress: Progress | None = None) -> TrainOutcome:
    """Train the view classifier; write ``<out>/cdss-view.pt`` (best epoch) and ``<out>/last.ckpt``.

    Returns
    -------
    TrainOutcome
        Path and SHA-256 of the best weights, its epoch, the per-epoch history and the
        validation figures of the best epoch.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    train_samples = find_samples(cfg.data)
    if cfg.val_data:
        val_samples = find_samples(cfg.val_data)
    else:
        rng = random.Random(cfg.seed)
        order = list(range(len(train_samples)))
        rng.shuffle(order)
        n_val = max(1, round(len(order) * cfg.val_fraction))
        val_set = set(order[:n_val])
        val_samples = [s for i, s in enumerate(train_samples) if i in val_set]
        train_samples = [s for i, s in enumerate(train_samples) if i not in val_set]
    train_cache = ImageCache.build(train_samples, out / "cache", cfg.cache_side, progress, "train-cache")
    val_cache = ImageCache.build(val_samples, out / "cache", cfg.cache_side, progress, "val-cache")
    train_labels = [s.label for s in train_samples]
    val_labels = [s.label for s in val_samples]

    augment = ViewAugment(strength=cfg.augment_strength, p_bend=cfg.bend)
    train_ds = ViewDataset(
        train_cache, train_labels, range(len(train_samples)), cfg.imgsz, augment, cfg.seed, cfg.planes
    )
    val_clean = ViewDataset(
        val_cache, val_labels, range(len(val_samples)), cfg.imgsz, None, cfg.seed, cfg.planes
    )
    val_aug = ViewDataset(
        val_cache, val_labels, range(len(val_samples)), cfg.imgsz, augment, cfg.seed + 7919, cfg.planes
    )
    loader_kw: dict[str, Any] = {"num_workers": cfg.workers, "persistent_workers": False}
    val_loaders = [
        DataLoader(val_clean, batch_size=cfg.batch * 2, shuffle=False, **loader_kw),
        DataLoader(val_aug, batch_size=cfg.batch * 2, shuffle=False, **loader_kw),
    ]

    net = ViewNet(num_classes=len(LABELS), width=cfg.width).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ckpt_path = out / "last.ckpt"
    weights_path = out / "cdss-view.pt"
    best: dict[str, Any]
    start_epoch, history, best = 0, [], {"val_loss": float("inf"), "epoch": -1}
    elapsed_before = 0.0
    if cfg.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint {ckpt_path} (start without --resume)")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        elapsed_before = float(ck.get("elapsed_s", 0.0))
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch)
    total_steps = steps_per_epoch * cfg.epochs
    started = time.monotonic()
    budget_s = cfg.time_hours * 3600 if cfg.time_hours else None
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    recipe["data"] = [str(p) for p in cfg.data]
    recipe["val_data"] = [str(p) for p in cfg.val_data]
    recipe["train_images"] = len(train_samples)
    recipe["val_images"] = len(val_samples)
    recipe["train_classes"] = {lab.value: train_labels.count(lab) for lab in LABELS}
    recipe["train_families"] = sorted({s.family for s in train_samples})

    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        train_ds.epoch = epoch
        order = _balanced_epoch(train_labels, train_ds.indices, random.Random(cfg.seed * 1000 + epoch))
        loader = DataLoader(
            torch.utils.data.Subset(train_ds, order),
            batch_size=cfg.batch,
            shuffle=False,
            drop_last=True,
            **loader_kw,
        )
        run_loss, seen = 0.0, 0
        for step, (x, y) in enumerate(loader):
            frac = (epoch * steps_per_epoch + step) / max(1, total_steps)
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, frac)
            logits = net(x.to(device))
            loss = loss_fn(logits, y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            run_loss += float(loss.detach()) * len(y)
            seen += len(y)
            if progress is not None:
                progress(
                    "train",
                    step + 1,
                    len(loader),
                    f"epoch {epoch + 1}/{cfg.epochs} loss {run_loss / seen:.3f}",
                )
        record: dict[str, Any] = {"epoch": epoch, "train_loss": run_loss / max(1, seen)}
        for name, vl in zip(("clean", "aug"), val_loaders, strict=True):
            probs, labels = _evaluate_loader(net, vl, device)
            preds = probs.argmax(1)
            record[f"val_{name}_loss"] = _nll(probs, labels)
            record[f"val_{name}_accuracy"] = float((preds == labels).mean())
            record[f"val_{name}_per_class"] = _per_class_accuracy(labels, preds)
        record["val_loss"] = 0.5 * (record["val_clean_loss"] + record["val_aug_loss"])
        record["elapsed_s"] = elapsed_before + time.monotonic() - started
        history.append(record)
        if record["val_loss"] < best["val_loss"]:
            best = {"val_loss": record["val_loss"], "epoch": epoch, "record": record}
            meta = ViewMeta(
                name=cfg.name,
                version=cfg.version,
                imgsz=cfg.imgsz,
                width=cfg.width,
                planes=cfg.planes,
                training_data=cfg.training_data,
                training={"recipe": recipe, "best_epoch": epoch, "validation": record},
            )
            save_view_weights(weights_path, meta, net.state_dict())
        _save_atomic(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "elapsed_s": record["elapsed_s"],
            },
            ckpt_path,
        )
        (out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        if progress is not None:
            progress(
                "epoch",
                epoch + 1,
                cfg.epochs,
                f"val acc {record['val_clean_accuracy']:.3f} / aug {record['val_aug_accuracy']:.3f}, "
                f"val loss {record['val_loss']:.3f}",
            )
        if budget_s is not None and time.monotonic() - started + elapsed_before > budget_s:
            break
    if best["epoch"] < 0:
        raise RuntimeError("training ran no epoch (is --epochs below the resumed checkpoint's epoch?)")
    return TrainOutcome(weights_path, file_sha256(weights_path), int(best["epoch"]), history, best["record"])


# ---------------------------------------------------------------------------------------- evaluation
def confusion_matrix(labels: Sequence[str], preds: Sequence[str]) -> list[list[int]]:
    """Rows = true class, columns = predicted class, in :data:`LABELS` order."""
    idx = {lab.value: k for k, lab in enumerate(LABELS)}
    m = [[0] * len(LABELS) for _ in LABELS]
    for t, p in zip(labels, preds, strict=True):
        m[idx[t]][idx[p]] += 1
    return m


def routing_rates(
    rows: Sequence[dict[str, Any]], decide_threshold: float, veto_threshold: float
) -> dict[str, Any]:
    """What routing would do with these predictions at the given thresholds.

    * ``decided``: share of images the classifier would route on its own (top probability ≥
      ``decide_threshold``) and how often that is the right analysis;
    * ``veto``: share of spine images (lumbar / cervical truth) that a veto (p(other) ≥
      ``veto_threshold``) would wrongly stop, and share of ``other`` images it stops.
    """
    n = len(rows)
    confident = [r for r in rows if r["probability"] >= decide_threshold]
    right = [r for r in confident if _analysis_of(r["pred"]) == _analysis_of(r["label"])]
    spine = [r for r in rows if r["label"] != ViewLabel.OTHER.value]
    other = [r for r in rows if r["label"] == ViewLabel.OTHER.value]
    return {
        "decide_threshold": decide_threshold,
        "veto_threshold": veto_threshold,
        "images": n,
        "decided_share": len(confident) / n if n else None,
        "decided_correct_analysis": len(right) / len(confident) if confident else None,
        "spine_vetoed_share": (
            sum(r["probabilities"]["other"] >= veto_threshold for r in spine) / len(spine) if spine else None
        ),
        "other_vetoed_share": (
            sum(r["probabilities"]["other"] >= veto_threshold for r in other) / len(other) if other else None
        ),
    }


def _analysis_of(label: str) -> str:
    if label.startswith("cervical_oblique"):
        return "cervical_oblique"
    return "not_applicable" if label == "other" else label


def evaluate_view(
    weights: Path | None,
    dirs: Sequence[Path],
    *,
    device: str = "cpu",
    decide_threshold: float = 0.65,
    veto_threshold: float = 0.8,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Classify every labelled image under each of ``dirs`` through the node's own path.

    Each DICOM is read, turned into its display image and classified one at a time, exactly as
    routing does. Per directory (= held-out set): accuracy, per-class accuracy, confusion matrix
    (rows true, columns predicted, :data:`LABELS` order), side accuracy of the cervical obliques,
    the routing rates of :func:`routing_rates`, and the milliseconds per image of
    :meth:`ViewClassifier.classify` (display image given) and of reading + display + classify.
    """
    clf = ViewClassifier.load(weights, device)
    clf.warm_up()
    report: dict[str, Any] = {
        "model": {
            "name": clf.info.name,
            "version": clf.info.version,
            "weights_sha256": clf.info.weights_sha256,
        },
        "device": clf.device,
        "torch_threads": torch.get_num_threads(),
        "labels": [lab.value for lab in LABELS],
        "sets": {},
    }
    for d in dirs:
        samples = find_samples([d])
        rows: list[dict[str, Any]] = []
        classify_ms, total_ms = [], []
        for i, s in enumerate(samples):
            t0 = time.perf_counter()
            img = display_image(dcmread(s.path))
            t1 = time.perf_counter()
            pred = clf.classify(img)
            t2 = time.perf_counter()
            classify_ms.append((t2 - t1) * 1000)
            total_ms.append((t2 - t0) * 1000)
            rows.append(
                {
                    "file": s.path.name,
                    "label": s.label.value,
                    "pred": pred.label.value,
                    "probability": pred.probability,
                    "probabilities": pred.probabilities,
                    "family": s.family,
                    "detail": s.detail,
                }
            )
            if progress is not None:
                progress(f"evaluate {Path(d).name}", i + 1, len(samples), "")
        labels = [r["label"] for r in rows]
        preds = [r["pred"] for r in rows]
        per_class = {}
        for lab in LABELS:
            sel = [r for r in rows if r["label"] == lab.value]
            per_class[lab.value] = (
                {"n": len(sel), "accuracy": sum(r["pred"] == lab.value for r in sel) / len(sel)}
                if sel
                else None
            )
        cerv = [r for r in rows if r["label"].startswith("cervical")]
        errors = [
            {k: r[k] for k in ("file", "label", "pred", "probability", "detail")}
            for r in rows
            if r["pred"] != r["label"]
        ]
        report["sets"][str(d)] = {
            "images": len(rows),
            "families": sorted({r["family"] for r in rows}),
            "accuracy": sum(a == b for a, b in zip(labels, preds, strict=True)) / len(rows),
            "analysis_accuracy": sum(
                _analysis_of(a) == _analysis_of(b) for a, b in zip(labels, preds, strict=True)
            )
            / len(rows),
            "per_class": per_class,
            "confusion": confusion_matrix(labels, preds),
            "cervical_side_accuracy": (
                sum(r["pred"] == r["label"] for r in cerv if r["pred"].startswith("cervical"))
                / max(1, sum(r["pred"].startswith("cervical") for r in cerv))
                if cerv
                else None
            ),
            "routing": routing_rates(rows, decide_threshold, veto_threshold),
            "ms_per_image_classify": {
                "median": float(np.median(classify_ms)),
                "p95": float(np.percentile(classify_ms, 95)),
            },
            "ms_per_image_read_display_classify": {
                "median": float(np.median(total_ms)),
                "p95": float(np.percentile(total_ms, 95)),
            },
            "errors": errors[:50],
            "rows": rows,
        }
    return report


# ---------------------------------------------------------------------------------------- routing study
#: Header edits of the routing study (what real modalities get wrong).
SCENARIOS = ("as_sent", "no_view_tags", "labelled_lspine")


def _scenario(ds: DicomDataset, scenario: str) -> DicomDataset:
    if scenario == "no_view_tags":  # ViewPosition, PatientOrientation, view codes and words gone
        for keyword in ("ViewPosition", "PatientOrientation", "ViewCodeSequence"):
            if keyword in ds:
                delattr(ds, keyword)
        region = tag_text(ds, "BodyPartExamined")
        for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription"):
            if keyword in ds:
                setattr(ds, keyword, region or "")
    elif scenario == "labelled_lspine":  # a wrong protocol: header says lumbar spine AP
        ds.BodyPartExamined = "LSPINE"
        ds.ViewPosition = "AP"
        ds.SeriesDescription = "LSPINE AP"
        ds.ProtocolName = "LSPINE AP"
    return ds


def _expected(label: ViewLabel) -> Analysis:
    return {
        ViewLabel.LUMBAR_LATERAL: Analysis.LUMBAR_LATERAL,
        ViewLabel.LUMBAR_AP: Analysis.LUMBAR_AP,
        ViewLabel.CERVICAL_OBLIQUE_LEFT: Analysis.CERVICAL_OBLIQUE,
        ViewLabel.CERVICAL_OBLIQUE_RIGHT: Analysis.CERVICAL_OBLIQUE,
        ViewLabel.OTHER: Analysis.NOT_APPLICABLE,
    }[label]


def routing_study(
    weights: Path | None,
    dirs: Sequence[Path],
    settings: RouteSettings,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Route every labelled image under ``dirs`` as sent and with its header damaged.

    Scenarios (:data:`SCENARIOS`): ``as_sent``; ``no_view_tags`` (ViewPosition,
    PatientOrientation, view codes removed and the descriptions reduced to the body part);
    ``labelled_lspine`` (only for ``other`` images: the header says LSPINE AP). Each image is
    routed by the tags alone and with the classifier (``settings`` thresholds).

    Returns
    -------
    dict
        Per directory and scenario: images, share routed to the right analysis (tags alone /
        with the classifier), count per deciding rule, and the wrong decisions.
    """
    clf = ViewClassifier.load(weights, device)
    out: dict[str, Any] = {
        "model": {
            "name": clf.info.name,
            "version": clf.info.version,
            "weights_sha256": clf.info.weights_sha256,
        },
        "thresholds": {
            "decide": settings.classifier_min_probability,
            "veto": settings.classifier_veto_probability,
        },
        "sets": {},
    }
    tags_only = settings.model_copy(update={"view_classifier": False})
    for d in dirs:
        samples = find_samples([d])
        per: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(samples):
            for scenario in SCENARIOS:
                if scenario == "labelled_lspine" and s.label is not ViewLabel.OTHER:
                    continue
                ds = _scenario(dcmread(s.path), scenario)
                want = _expected(s.label)
                plain = route(ds, tags_only, "MODALITY")
                full = route(ds, settings, "MODALITY", clf)
                key = f"{scenario}/{s.label.value}"
                rec = per.setdefault(
                    key, {"images": 0, "right_tags_only": 0, "right": 0, "rules": {}, "wrong": []}
                )
                rec["images"] += 1
                rec["right_tags_only"] += plain.analysis is want
                rec["right"] += full.analysis is want
                rec["rules"][full.rule.value] = rec["rules"].get(full.rule.value, 0) + 1
                if full.analysis is not want and len(rec["wrong"]) < 20:
                    rec["wrong"].append(
                        {"file": s.path.name, "analysis": full.analysis.value, "reason": full.reason}
                    )
            if progress is not None:
                progress(f"route {Path(d).name}", i + 1, len(samples), "")
        for rec in per.values():
            rec["right_share_tags_only"] = rec["right_tags_only"] / rec["images"]
            rec["right_share"] = rec["right"] / rec["images"]
        out["sets"][str(d)] = dict(sorted(per.items()))
    return out
