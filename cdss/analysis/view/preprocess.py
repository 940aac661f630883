"""From a display image to the view classifier's input tensor.

The classifier sees the whole image, shrunk (area averaging) to fit an ``S × S`` square with
its aspect kept and centred on a zero background ("letterbox"), as three planes:

0. **equalised**: clip-limited histogram equalisation of the (slightly smoothed) image, in
   [-0.5, 0.5]. Equalisation largely undoes the modality's contrast curve, gamma or window
   (an increasing grey-value map leaves pixel ranks unchanged), so this plane looks much the
   same whatever the processing was; the clip keeps flat areas from being stretched;
1. **standardised**: the grey values minus their mean over the image, divided by their
   standard deviation, clipped to ±4 and halved (keeps the relative densities);
2. **mask**: 1 inside the image, 0 in the letterbox padding.

Input is :func:`cdss.analysis.pixels.display_image` output (float in [0, 1], bone bright:
MONOCHROME1 is already inverted there). Coordinates are not needed: the classifier only says
what the image shows.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DEFAULT_SIZE", "letterbox", "prepare"]

#: Default input side, pixels.
DEFAULT_SIZE = 128


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``img`` to fit ``size × size`` (aspect kept, centred).

    Returns
    -------
    (image, mask)
        float32 ``(size, size)`` arrays: the shrunk image on 0 and the 1/0 validity mask.
    """
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"expected a non-empty 2-D grey image, got shape {arr.shape}")
    h, w = arr.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(arr, (nw, nh), interpolation=interp)
    out = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.float32)
    r0, c0 = (size - nh) // 2, (size - nw) // 2
    out[r0 : r0 + nh, c0 : c0 + nw] = small
    mask[r0 : r0 + nh, c0 : c0 + nw] = 1.0
    return out, mask


def _equalise(values: np.ndarray, bins: int = 256, clip: float = 4.0) -> np.ndarray:
    """Clip-limited histogram equalisation of values in [0, 1] → [0, 1].

    Each histogram bin holds at most ``clip`` times the mean count (the excess is spread over
    all bins), so a large flat area — a collimation shutter, air — does not take most of the
    output range and its noise is not stretched into full-range speckle.
    """
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    limit = max(1.0, clip * values.size / bins)
    excess = np.clip(hist - limit, 0, None).sum()
    hist = np.minimum(hist, limit) + excess / bins
    cdf = np.concatenate([[0.0], np.cumsum(hist)])
    cdf /= max(cdf[-1], 1e-9)
    return np.interp(values, edges, cdf).astype(np.float32)


def _local_contrast(small: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Grey value minus its Gaussian neighbourhood mean, over the neighbourhood's deviation.

    Computed inside the mask only (normalised convolution), clipped to ±3 deviations and scaled
    to [-0.5, 0.5]. Removes what differs most between modalities' processing — the global tone
    curve, soft-tissue brightness, exposure ramps — and keeps edges and local structure.
    """

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigma)

    weight = np.maximum(blur(mask), 1e-3)
    mean = blur(small * mask) / weight
    dev = (small - mean) * mask
    var = blur(dev * dev) / weight
    out = np.clip(dev / np.sqrt(var + 1e-4), -3.0, 3.0) / 6.0
    return (out * mask).astype(np.float32)


def prepare(img: np.ndarray, size: int = DEFAULT_SIZE, planes: str = "eq-std-mask") -> np.ndarray:
    """The classifier input for one display image.

    Parameters
    ----------
    img
        Grey image, float in [0, 1], bone bright, shape ``(rows, columns)``.
    size
        Input side, pixels.
    planes
        ``eq-std-mask`` (module docstring) or ``eq-lcn-mask`` (plane 1 is the local contrast,
        :func:`_local_contrast`, instead of the globally standardised grey); the weights file
        records which one its network was trained on.

    Returns
    -------
    np.ndarray
        float32 ``(3, size, size)``: equalised, second and mask planes (module docstring).
    """
    small, mask = letterbox(img, size)
    inside = mask > 0
    values = small[inside]
    eq = np.zeros_like(small)
    eq[inside] = _equalise(cv2.GaussianBlur(small, (0, 0), 0.7)[inside]) - 0.5
    if planes == "eq-lcn-mask":
        second = _local_contrast(small, mask, size / 32)
    elif planes == "eq-std-mask":
        second = np.zeros_like(small)
        sd = float(values.std())
        second[inside] = np.clip((values - float(values.mean())) / max(sd, 1e-3), -4.0, 4.0) * 0.5
    else:
        raise ValueError(f"unknown input planes {planes!r} (eq-std-mask or eq-lcn-mask)")
    return np.stack([eq, second, mask]).astype(np.float32)
