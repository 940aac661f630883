"""Seed 000's photometric augmentations (section G) as an online Ultralytics transform.

Seed 000 made offline augmented copies of every image. cdss applies the same six operations
*online*: each training sample, with probability ``p``, gets one of them chosen uniformly, after
Ultralytics' geometric augmentation (rotation ±15°, scale, translation, horizontal flip) and
before the tensors are formatted. Online application keeps epochs short (the 2-core CPU budget)
while every epoch sees a fresh mix. The operations on the 8-bit image ``I``:

============================  ===============================================================
histogram equalisation        ``cv2.equalizeHist``
Gaussian blur                 5 × 5 kernel (``cv2.GaussianBlur``, σ from the kernel size)
contrast / brightness         ``I' = clip(1.2 · I + 1.5)`` — OpenCV's ``convertScaleAbs`` with
                              contrast (gain) 1.2 and brightness (bias) 1.5, the usual reading
                              of the paper's "contrast factor 1.2, brightness factor 1.5"
negative                      ``I' = 255 − I``
Gaussian noise                ``I' = clip(I + N(0, 20²))`` (8-bit scale)
gamma (power law)             ``I' = 255 · (I / 255) ^ 0.5``
============================  ===============================================================

:class:`VarietyAugment` adds, independently and with its own probability, one *randomised*
appearance change that the seed's fixed operations do not cover, so the model does not learn
one generator's (or one vendor's) look: a random gamma (0.6–1.7), contrast-limited adaptive
histogram equalisation (CLAHE, clip 1.5–4), unsharp masking (the edge enhancement of most DR
processing; radius 2–12 px, amount 0.4–1.6), a random Gaussian blur (σ 0.5–2 px), random
Gaussian noise (σ 3–14 grey levels), random contrast/brightness (gain 0.7–1.3, bias ±25), or a
smooth low-frequency intensity ramp (uneven exposure, heel effect).

:class:`StyleAugment` is the strong style randomisation the cross-family recipe uses (issue 9:
"training data that does not teach one generator's look"): with probability ``p`` a sample
gets a *chain* of one to three operations drawn from :data:`STYLE_OPERATIONS` — everything in
the variety set plus a random monotone tone curve (4–6 knots), sigmoid contrast, window
clipping (a narrow VOI window), signal-dependent (quantum-like) noise, JPEG re-encoding at
quality 15–70, loss of resolution (down- and up-sampling by 0.3–0.8), anti-scatter grid lines,
a stitching seam (an intensity step with a thin line), burned-in text and markers near the
borders, and, rarely, inversion — so no single tone curve, sharpness, noise texture or
processing look identifies "a radiograph" for the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

__all__ = [
    "SEED000_OPERATIONS",
    "STYLE_OPERATIONS",
    "VARIETY_OPERATIONS",
    "SeedAugment",
    "StyleAugment",
    "VarietyAugment",
]


def _equalise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if img.ndim == 2:
        return cv2.equalizeHist(img)
    grey = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(img, (5, 5), 0)


def _contrast_brightness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=1.2, beta=1.5)


def _negative(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - img


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, 20.0, img.shape[:2]).astype(np.float32)
    if img.ndim == 3:
        noise = noise[..., None]
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


_GAMMA_LUT = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** 0.5), 0, 255).astype(np.uint8)


def _gamma(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.LUT(img, _GAMMA_LUT)


#: name → operation(uint8 image, rng) → uint8 image (same shape).
SEED000_OPERATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "histogram_equalisation": _equalise,
    "gaussian_blur_5x5": _blur,
    "contrast_1.2_brightness_1.5": _contrast_brightness,
    "negative": _negative,
    "gaussian_noise_sigma20": _noise,
    "gamma_0.5": _gamma,
}


class SeedAugment:
    """Ultralytics-style transform: ``labels['img']`` gets one seed-000 operation with probability ``p``.

    Parameters
    ----------
    p
        Probability that a sample is augmented at all.
    seed
        Seed of the transform's own random generator (each dataloader worker reseeds it from
        NumPy's global state on first use so workers do not repeat each other).
    """

    def __init__(self, p: float = 0.4, seed: int | None = None) -> None:
        self.p = p
        self._seed = seed
        self._rng: np.random.Generator | None = None
        self.names = list(SEED000_OPERATIONS)

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(
                self._seed if self._seed is not None else np.random.randint(2**31)
            )
        return self._rng

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        if rng.random() >= self.p:
            return labels
        name = self.names[int(rng.integers(len(self.names)))]
        labels["img"] = np.ascontiguousarray(SEED000_OPERATIONS[name](labels["img"], rng))
        return labels


# --------------------------------------------------------------------------- variety (cdss)
def _grey_apply(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if img.ndim == 2:
        return fn(img)
    return cv2.cvtColor(fn(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), cv2.COLOR_GRAY2BGR)


def _random_gamma(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def _clahe(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    tiles = int(rng.integers(4, 12))
    clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(1.5, 4.0)), tileGridSize=(tiles, tiles))
    return _grey_apply(img, clahe.apply)


def _unsharp(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = float(rng.uniform(2.0, 12.0))
    amount = float(rng.uniform(0.4, 1.6))
    f = img.astype(np.float32)
    blurred = cv2.GaussianBlur(f, (0, 0), sigma)
    return np.clip(f + amount * (f - blurred), 0, 255).astype(np.uint8)


def _random_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.0)))


def _random_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, float(rng.uniform(3.0, 14.0)), img.shape[:2]).astype(np.float32)
    if img.ndim == 3:
        noise = noise[..., None]
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _random_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=float(rng.uniform(0.7, 1.3)), beta=float(rng.uniform(-25, 25)))


def _intensity_ramp(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = img.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    ramp = (np.cos(angle) * xx / max(cols, 1) + np.sin(angle) * yy / max(rows, 1)).astype(np.float32)
    ramp = (ramp - ramp.mean()) * float(rng.uniform(0.2, 0.6))
    gain = 1.0 + ramp
    if img.ndim == 3:
        gain = gain[..., None]
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


#: name → randomised operation(uint8 image, rng) → uint8 image (same shape).
VARIETY_OPERATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "random_gamma": _random_gamma,
    "clahe": _clahe,
    "unsharp_mask": _unsharp,
    "random_blur": _random_blur,
    "random_noise": _random_noise,
    "random_contrast": _random_contrast,
    "intensity_ramp": _intensity_ramp,
}


class VarietyAugment(SeedAugment):
    """Like :class:`SeedAugment`, with the randomised :data:`VARIETY_OPERATIONS`."""

    def __init__(self, p: float = 0.3, seed: int | None = None) -> None:
        super().__init__(p, seed)
        self.names = list(VARIETY_OPERATIONS)

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        if rng.random() >= self.p:
            return labels
        name = self.names[int(rng.integers(len(self.names)))]
        labels["img"] = np.ascontiguousarray(VARIETY_OPERATIONS[name](labels["img"], rng))
        return labels


# --------------------------------------------------------------------------- style (cross-family)
def _lut(img: np.ndarray, curve: np.ndarray) -> np.ndarray:
    lut = np.clip(np.rint(255.0 * curve), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def _tone_curve(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    knots = int(rng.integers(4, 7))
    xs = np.concatenate([[0.0], np.sort(rng.uniform(0.05, 0.95, knots - 2)), [1.0]])
    ys = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 1.0, knots - 2)), [1.0]])
    ys = 0.5 * ys + 0.5 * xs  # keep it monotone and not too wild
    return _lut(img, np.interp(np.arange(256) / 255.0, xs, ys))


def _sigmoid_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, mid = float(rng.uniform(3.0, 10.0)), float(rng.uniform(0.3, 0.7))
    x = np.arange(256) / 255.0
    y = 1.0 / (1.0 + np.exp(-gain * (x - mid)))
    y = (y - y.min()) / (y.max() - y.min())
    return _lut(img, y)


def _window(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = float(rng.uniform(0.0, 0.25)), float(rng.uniform(0.7, 1.0))
    return _lut(img, np.clip((np.arange(256) / 255.0 - lo) / (hi - lo), 0.0, 1.0))


def _quantum_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = img.astype(np.float32) / 255.0
    sigma = float(rng.uniform(0.02, 0.08))
    grey = f if f.ndim == 2 else f[..., 0]
    noise = (
        rng.normal(0.0, 1.0, grey.shape).astype(np.float32) * sigma * np.sqrt(np.clip(1.0 - grey, 0.05, 1.0))
    )
    if rng.random() < 0.5:  # correlated (detector blur) noise
        noise = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(0.6, 1.5))) * 1.8
    if f.ndim == 3:
        noise = noise[..., None]
    return np.clip((f + noise) * 255.0, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 71))])
    if not ok:
        return img
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out if out is not None and out.shape == img.shape else img


def _resolution(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = img.shape[:2]
    f = float(rng.uniform(0.3, 0.8))
    small = cv2.resize(img, (max(8, round(cols * f)), max(8, round(rows * f))), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_NEAREST if rng.random() < 0.2 else cv2.INTER_LINEAR
    return cv2.resize(small, (cols, rows), interpolation=interp)


def _grid_lines(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = img.shape[:2]
    period = float(rng.uniform(2.2, 7.0))
    amp = float(rng.uniform(2.0, 9.0))
    axis = int(rng.integers(2))
    coord = np.arange(cols if axis == 0 else rows, dtype=np.float32)
    wave = amp * np.sin(2 * np.pi * coord / period + rng.uniform(0, 2 * np.pi))
    pattern = wave[None, :] if axis == 0 else wave[:, None]
    pattern = np.broadcast_to(pattern, (rows, cols))
    if img.ndim == 3:
        pattern = pattern[..., None]
    return np.clip(img.astype(np.float32) + pattern, 0, 255).astype(np.uint8)


def _seam(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = img.shape[0]
    r = int(rng.integers(int(0.2 * rows), int(0.8 * rows)))
    f = img.astype(np.float32)
    f[r:] = f[r:] * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-15, 15))
    width = int(rng.integers(1, 4))
    f[r : r + width] = float(rng.choice([0.0, 255.0])) * 0.5 + f[r : r + width] * 0.5
    return np.clip(f, 0, 255).astype(np.uint8)


def _burned_text(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    rows, cols = img.shape[:2]
    value = (255, 255, 255) if rng.random() < 0.8 else (0, 0, 0)
    for _ in range(int(rng.integers(1, 4))):
        text = str(rng.choice(["L", "R", "LAT", "STANDING", "AP", "12", "DX", "x0.8"]))
        scale = float(rng.uniform(0.4, 1.4)) * max(rows, cols) / 640
        x = int(rng.choice([rng.uniform(0.01, 0.12), rng.uniform(0.75, 0.9)]) * cols)
        y = int(rng.choice([rng.uniform(0.05, 0.15), rng.uniform(0.85, 0.97)]) * rows)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, value, max(1, round(2 * scale)))
    return out


def _invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - img


#: name → style operation(uint8 image, rng) → uint8 image (same shape); see :class:`StyleAugment`.
STYLE_OPERATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    **VARIETY_OPERATIONS,
    "histogram_equalisation": _equalise,
    "tone_curve": _tone_curve,
    "sigmoid_contrast": _sigmoid_contrast,
    "window": _window,
    "quantum_noise": _quantum_noise,
    "jpeg": _jpeg,
    "resolution": _resolution,
    "grid_lines": _grid_lines,
    "seam": _seam,
    "burned_text": _burned_text,
    "invert": _invert,
}
#: Relative weight of each style operation (inversion is rare: real inputs arrive bone bright).
STYLE_WEIGHTS: dict[str, float] = {name: 1.0 for name in STYLE_OPERATIONS} | {"invert": 0.15}


class StyleAugment(SeedAugment):
    """With probability ``p``, a chain of 1–3 :data:`STYLE_OPERATIONS` (weighted by :data:`STYLE_WEIGHTS`)."""

    def __init__(self, p: float = 0.8, seed: int | None = None) -> None:
        super().__init__(p, seed)
        self.names = list(STYLE_OPERATIONS)
        w = np.array([STYLE_WEIGHTS[n] for n in self.names], dtype=float)
        self._weights = w / w.sum()

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        if rng.random() >= self.p:
            return labels
        img = labels["img"]
        for idx in rng.choice(len(self.names), size=int(rng.integers(1, 4)), replace=False, p=self._weights):
            img = STYLE_OPERATIONS[self.names[int(idx)]](img, rng)
        labels["img"] = np.ascontiguousarray(img)
        return labels
