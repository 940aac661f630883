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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

__all__ = ["SEED000_OPERATIONS", "VARIETY_OPERATIONS", "SeedAugment", "VarietyAugment"]


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
