"""Training data of the cervical analysis: discovery, a crop cache and per-sample augmentation.

Two inputs are accepted by :func:`discover`:

* **cdss synthetic**: every ``<name>.json`` with ``kind == "cervical_oblique"`` (any depth) and
  ``<name>.dcm`` beside it; label, side, ROI, acquisition rotation and vertebra corners come from
  the ground truth's ``cervical`` block.
* **site folder**: a CSV (``labels.csv``, or the one ``.csv`` in the folder) with the header
  ``file,laterality,label[,x0,y0,x1,y1]``: ``file`` relative to the CSV (DICOM, PNG or JPEG),
  ``laterality`` ``L``/``R``, ``label`` ``normal``/``abnormal`` (or ``0``/``1``) and optionally the
  cervical-spine box in source pixels. Rows without a box get one from the ROI detector (the one
  trained in this run, else the shipped one).

The cache (:class:`CropCache`) holds, per image, a square window around the ROI that is 30 %
larger than the network's window, stored at ~1.3 × ``imgsz`` pixels in uint8 display polarity
(before equalisation), with a mask of the pixels that lie inside the source image. Training
samples are cut from it by :func:`make_sample` (ROI jitter, rotation, noise, blur, gamma), then
equalised and flip-normalised exactly like inference
(:mod:`cdss.analysis.cervical.preprocess`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom

from cdss.analysis.cervical.preprocess import CANONICAL, crop_roi, equalize, square_window, to_canonical
from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.types import Laterality

__all__ = [
    "CACHE_EXTENSION",
    "CervicalDataError",
    "CropCache",
    "Sample",
    "SampleAugment",
    "build_cache",
    "cache_size",
    "discover",
    "load_display_u8",
    "make_sample",
    "spine_slope_deg",
    "split_indices",
]

#: The cache window is this much larger (relative side) than the network's window.
CACHE_EXTENSION = 0.3
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class CervicalDataError(ValueError):
    """The training data cannot be read; the message names the file and what was expected."""


@dataclass
class Sample:
    """One labelled oblique view.

    Attributes
    ----------
    image
        DICOM or image file.
    laterality
        Side of the view.
    label
        1 = abnormal (foraminal stenosis), 0 = normal.
    roi
        Cervical-spine box ``(col0, row0, col1, row1)`` in source pixels, or ``None``.
    slope_deg
        Clockwise-on-screen angle of the C2–C7 axis from vertical (ground truth), or ``None``.
    variant
        Synthetic variant (``standard``, ``hard``, …) or ``site``.
    key
        Stable identifier (file stem).
    """

    image: Path
    laterality: Laterality
    label: int
    roi: tuple[float, float, float, float] | None
    slope_deg: float | None
    variant: str
    key: str


def spine_slope_deg(vertebrae: dict[str, dict]) -> float | None:
    """Clockwise-on-screen tilt (degrees) of the line through the vertebral body centres.

    The centres ``(column, row)`` are fitted as ``column = a · row + b``; a vertical axis rotated
    clockwise by ``θ`` (rows pointing down) has ``a = −tan θ``, so ``θ = −atan(a)``.
    """
    centres = [np.mean(np.asarray(v["corners"], float), axis=0) for v in vertebrae.values() if "corners" in v]
    if len(centres) < 3:
        return None
    c = np.asarray(centres)
    a, _ = np.polyfit(c[:, 1], c[:, 0], 1)
    return float(-math.degrees(math.atan(a)))


def _box(values: list[Any]) -> tuple[float, float, float, float]:
    """``(col0, row0, col1, row1)`` as floats from four JSON / CSV values."""
    c0, r0, c1, r1 = (float(v) for v in values)
    return (c0, r0, c1, r1)


def _synthetic(data: Path) -> list[Sample]:
    samples = []
    for js in sorted(data.rglob("*.json")):
        try:
            truth = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(truth, dict) or truth.get("kind") != "cervical_oblique" or "cervical" not in truth:
            continue
        dcm = js.with_suffix(".dcm")
        if not dcm.exists():
            raise CervicalDataError(f"{js}: ground truth without its DICOM file {dcm.name}")
        cerv = truth["cervical"]
        slope = spine_slope_deg(cerv.get("vertebrae", {})) if cerv.get("vertebrae") else None
        if slope is None and truth.get("image", {}).get("rotation_deg") is not None:
            slope = float(truth["image"]["rotation_deg"])
        samples.append(
            Sample(
                image=dcm,
                laterality=Laterality(cerv["laterality"]),
                label=1 if cerv["label"] == "abnormal" else 0,
                roi=_box(cerv["roi"]),
                slope_deg=slope,
                variant=str(truth.get("variant", "standard")),
                key=js.stem,
            )
        )
    return samples


def _csv_path(data: Path) -> Path | None:
    if (data / "labels.csv").is_file():
        return data / "labels.csv"
    csvs = sorted(data.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def _site(csv_path: Path) -> list[Sample]:
    base = csv_path.parent
    samples = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"file", "laterality", "label"}
        if not reader.fieldnames or not need <= {f.strip() for f in reader.fieldnames}:
            raise CervicalDataError(
                f"{csv_path}: header must start with file,laterality,label[,x0,y0,x1,y1]; got {reader.fieldnames}"
            )
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            path = base / row["file"]
            if not path.is_file():
                raise CervicalDataError(f"{csv_path}:{n}: file {row['file']!r} not found under {base}")
            lat = row["laterality"].upper()[:1]
            if lat not in ("L", "R"):
                raise CervicalDataError(
                    f"{csv_path}:{n}: laterality must be L or R, got {row['laterality']!r}"
                )
            lab = row["label"].lower()
            if lab in ("abnormal", "1", "stenosis"):
                label = 1
            elif lab in ("normal", "0"):
                label = 0
            else:
                raise CervicalDataError(
                    f"{csv_path}:{n}: label must be normal/abnormal or 0/1, got {row['label']!r}"
                )
            roi = None
            if all(row.get(k) for k in ("x0", "y0", "x1", "y1")):
                try:
                    roi = _box([row[k] for k in ("x0", "y0", "x1", "y1")])
                except ValueError as exc:
                    raise CervicalDataError(f"{csv_path}:{n}: box values must be numbers ({exc})") from exc
            samples.append(Sample(path, Laterality(lat), label, roi, None, "site", path.stem))
    return samples


def discover(data: Path) -> list[Sample]:
    """All labelled cervical oblique views under ``data`` (synthetic ground truth or a site CSV).

    Raises
    ------
    CervicalDataError
        Nothing usable found, or a malformed CSV row.
    """
    data = Path(data)
    if not data.is_dir():
        raise CervicalDataError(f"training data directory {data} does not exist")
    csv_path = _csv_path(data)
    samples = _site(csv_path) if csv_path is not None else _synthetic(data)
    if not samples:
        raise CervicalDataError(
            f"no cervical oblique views found in {data}: expected cdss synthetic DICOM + JSON "
            "(`cdss fixtures generate --kind cervical_oblique`) or a labels.csv with "
            "file,laterality,label[,x0,y0,x1,y1]"
        )
    return samples


def load_display_u8(path: Path) -> np.ndarray:
    """Display image (bone bright) of a DICOM or an image file as uint8 ``(rows, columns)``."""
    path = Path(path)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CervicalDataError(f"cannot read image {path}")
        return img
    return to_uint8(display_image(pydicom.dcmread(path)))


def split_indices(samples: list[Sample], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (label × side) random split into training and validation indices."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    groups: dict[tuple[int, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.label, s.laterality.value), []).append(i)
    for key in sorted(groups):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        n_val = round(len(idx) * val_fraction)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.array(sorted(train), dtype=int), np.array(sorted(val), dtype=int)


@dataclass
class CropCache:
    """Per-image windows around the ROI (see module docstring).

    Attributes
    ----------
    images
        uint8 ``(N, C, C)`` display-polarity windows.
    inside
        bool ``(N, C, C)``: pixel lies inside the source image.
    rois
        float ``(N, 4)`` ROI in cache-window pixels.
    labels, lateralities, slopes
        ``(N,)``; ``slopes`` NaN when unknown.
    keys, variants
        Per-sample strings.
    """

    images: np.ndarray
    inside: np.ndarray
    rois: np.ndarray
    labels: np.ndarray
    lateralities: np.ndarray  # "L" / "R"
    slopes: np.ndarray
    keys: list[str]
    variants: list[str]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "images.npy", self.images)
        np.save(directory / "inside.npy", np.packbits(self.inside, axis=-1))
        np.savez(
            directory / "meta.npz",
            rois=self.rois,
            labels=self.labels,
            lateralities=self.lateralities,
            slopes=self.slopes,
            width=np.array(self.images.shape[-1]),
        )
        (directory / "keys.json").write_text(json.dumps({"keys": self.keys, "variants": self.variants}))

    @classmethod
    def load(cls, directory: Path) -> CropCache:
        meta = np.load(directory / "meta.npz")
        width = int(meta["width"])
        names = json.loads((directory / "keys.json").read_text())
        inside = np.unpackbits(np.load(directory / "inside.npy"), axis=-1, count=width).astype(bool)
        return cls(
            images=np.load(directory / "images.npy"),
            inside=inside,
            rois=meta["rois"],
            labels=meta["labels"],
            lateralities=meta["lateralities"],
            slopes=meta["slopes"],
            keys=list(names["keys"]),
            variants=list(names["variants"]),
        )

    def __len__(self) -> int:
        return len(self.labels)


#: Cache resolution factor for ``stretch`` crops: the ROI is ~2.5× taller than wide and its width
#: is stretched to the full input size, so the cache must resolve the width at ``imgsz`` pixels.
STRETCH_CACHE_SCALE = 2.6


def cache_size(imgsz: int, crop: str = "pad") -> int:
    """Side (pixels) of the cached windows for a network input of ``imgsz`` and a crop mode."""
    return round(imgsz * (1.0 + CACHE_EXTENSION) * (STRETCH_CACHE_SCALE if crop == "stretch" else 1.0))


def cache_window(
    roi: tuple[float, float, float, float], margin: float, size: int
) -> tuple[int, int, int, int]:
    """``(col0, row0, side, size)`` of the cache window for ``roi`` (stored at ``size`` pixels)."""
    col0, row0, side = square_window(roi, margin)
    big = round(side * (1.0 + CACHE_EXTENSION))
    c = col0 + (side - 1) / 2.0
    r = row0 + (side - 1) / 2.0
    return round(c - (big - 1) / 2.0), round(r - (big - 1) / 2.0), big, size


def _extract(image: np.ndarray, col0: int, row0: int, side: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = image.shape
    canvas = np.zeros((side, side), np.uint8)
    mask = np.zeros((side, side), np.uint8)
    c0, r0 = max(0, col0), max(0, row0)
    c1, r1 = min(cols, col0 + side), min(rows, row0 + side)
    if c1 > c0 and r1 > r0:
        canvas[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = image[r0:r1, c0:c1]
        mask[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = 255
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interp), cv2.resize(
        mask, (size, size), interpolation=interp
    ) >= 250


def build_cache(
    samples: list[Sample],
    imgsz: int,
    margin: float,
    *,
    crop: str = "pad",
    roi_finder: Callable[[np.ndarray], tuple[float, float, float, float] | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CropCache:
    """Read every image once and keep a window around its ROI (see :class:`CropCache`).

    Parameters
    ----------
    roi_finder
        Called with the display image for samples without a ROI; returning ``None`` (or no
        finder) uses the whole image.
    """
    size = cache_size(imgsz, crop)
    n = len(samples)
    images = np.zeros((n, size, size), np.uint8)
    inside = np.zeros((n, size, size), bool)
    rois = np.zeros((n, 4), np.float64)
    for i, s in enumerate(samples):
        img = load_display_u8(s.image)
        roi = s.roi
        if roi is None and roi_finder is not None:
            roi = roi_finder(img)
        if roi is None:
            roi = (0.0, 0.0, float(img.shape[1] - 1), float(img.shape[0] - 1))
        col0, row0, side, size_ = cache_window(roi, margin, size)
        images[i], inside[i] = _extract(img, col0, row0, side, size_)
        k = size_ / side
        r = np.asarray(roi, float).reshape(2, 2)
        rois[i] = (((r + 0.5) - [col0, row0]) * k - 0.5).reshape(4)
        if progress:
            progress(i + 1, n)
    return CropCache(
        images=images,
        inside=inside,
        rois=rois,
        labels=np.array([s.label for s in samples], np.int64),
        lateralities=np.array([s.laterality.value for s in samples]),
        slopes=np.array([np.nan if s.slope_deg is None else s.slope_deg for s in samples], np.float64),
        keys=[s.key for s in samples],
        variants=[s.variant for s in samples],
    )


@dataclass(frozen=True)
class SampleAugment:
    """Random, label-preserving changes for one training sample (all off = validation).

    Attributes
    ----------
    rotate_deg
        Maximum extra in-plane rotation (uniform ±); applied with probability ``rotate_p``.
    shift, scale
        ROI jitter: centre shift as a fraction of the box size (normal σ) and per-axis box
        scale range (uniform 1 ± ``scale``), simulating detector boxes.
    noise_p, noise_max
        Probability and maximum σ (grey levels, before equalisation) of added Gaussian noise.
    blur_p, gamma_p
        Probabilities of a light Gaussian blur and of a gamma change (0.7–1.4).
    """

    rotate_deg: float = 0.0
    rotate_p: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    noise_p: float = 0.0
    noise_max: float = 0.0
    blur_p: float = 0.0
    gamma_p: float = 0.0

    @classmethod
    def training(cls) -> SampleAugment:
        return cls(
            rotate_deg=15.0,
            rotate_p=0.5,
            shift=0.03,
            scale=0.08,
            noise_p=0.3,
            noise_max=6.0,
            blur_p=0.1,
            gamma_p=0.3,
        )

    @classmethod
    def stn(cls) -> SampleAugment:
        return cls(rotate_deg=20.0, rotate_p=1.0, shift=0.03, scale=0.08, noise_p=0.3, noise_max=8.0)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def make_sample(
    cache: CropCache,
    i: int,
    imgsz: int,
    margin: float,
    aug: SampleAugment,
    rng: np.random.Generator,
    crop: str = "pad",
) -> tuple[np.ndarray, float, float]:
    """One network input, its spine angle and its window aspect.

    Returns
    -------
    image, angle, aspect
        float32 ``(imgsz, imgsz)`` in [0, 1] — cropped (``crop`` mode), equalised,
        flip-normalised —, the clockwise-on-screen tilt of the spine in source pixels
        (degrees; NaN when unknown; mirrored for left views) and the crop window's height /
        width in source pixels (for :func:`~cdss.analysis.cervical.network.rotation_theta`).
    """
    img = cache.images[i]
    inside = cache.inside[i].astype(np.uint8) * 255
    roi = cache.rois[i].copy()
    extra = 0.0
    if aug.rotate_p > 0 and rng.random() < aug.rotate_p:
        extra = float(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
        ctr = ((roi[0] + roi[2]) / 2.0, (roi[1] + roi[3]) / 2.0)
        m = cv2.getRotationMatrix2D(ctr, -extra, 1.0)  # OpenCV: positive = counter-clockwise
        size = img.shape[::-1]
        img = cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR, borderValue=0)
        inside = cv2.warpAffine(inside, m, size, flags=cv2.INTER_NEAREST, borderValue=0)
        corners = np.array([[roi[0], roi[1]], [roi[2], roi[1]], [roi[2], roi[3]], [roi[0], roi[3]]])
        moved = corners @ m[:, :2].T + m[:, 2]
        roi = np.array([*moved.min(axis=0), *moved.max(axis=0)])
    if aug.shift > 0 or aug.scale > 0:
        w, h = roi[2] - roi[0], roi[3] - roi[1]
        cx = (roi[0] + roi[2]) / 2.0 + rng.normal(0, aug.shift) * w
        cy = (roi[1] + roi[3]) / 2.0 + rng.normal(0, aug.shift) * h
        w *= rng.uniform(1 - aug.scale, 1 + aug.scale)
        h *= rng.uniform(1 - aug.scale, 1 + aug.scale)
        roi = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    box = tuple(float(v) for v in roi)
    patch, valid, window = crop_roi(img, box, margin, imgsz, crop)  # type: ignore[arg-type]
    in_crop, _, _ = crop_roi(inside, box, margin, imgsz, crop)  # type: ignore[arg-type]
    valid &= in_crop >= 250
    crop_img = patch
    if aug.noise_p > 0 and rng.random() < aug.noise_p:
        sigma = rng.uniform(1.0, aug.noise_max)
        crop_img = np.clip(crop_img + rng.normal(0, sigma, crop_img.shape), 0, 255).astype(np.uint8)
    if aug.blur_p > 0 and rng.random() < aug.blur_p:
        crop_img = cv2.GaussianBlur(crop_img, (0, 0), rng.uniform(0.5, 1.2))
    if aug.gamma_p > 0 and rng.random() < aug.gamma_p:
        g = rng.uniform(0.7, 1.4)
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g, 0, 255).astype(np.uint8)
        crop_img = lut[crop_img]
    crop_img[~valid] = 0
    eq = equalize(crop_img, valid)
    lat = Laterality(str(cache.lateralities[i]))
    out = to_canonical(eq, lat).astype(np.float32) / 255.0
    angle = float(cache.slopes[i]) + extra
    if lat is not CANONICAL:  # mirrored: clockwise becomes counter-clockwise
        angle = -angle
    return out, angle, window.aspect
