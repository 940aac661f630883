"""How a department acquires and processes a radiograph: sizes, exposure, noise, processing.

:func:`sample_acquisition` draws the per-image acquisition parameters (detector size and pitch,
photometric interpretation, bit depth, rotation, zoom, noise level, SOP class, which spacing tags
are written) for a view and a variant. :func:`expose` turns a projected-attenuation map
(:mod:`cdss.synth.raster`) into stored pixel values the way a digital radiography chain does:
heel effect and inverse-square fall-off → scatter → collimation → quantum noise → detector blur →
logarithm → (For Presentation) multi-scale contrast processing and a tone curve → quantisation to
``bits_stored`` → MONOCHROME1 inversion when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import cv2
import numpy as np

from cdss.synth.cvops import cv_max, cv_min, cv_multiply
from cdss.synth.raster import LOWRES

__all__ = [
    "CR_IMAGE_STORAGE",
    "DX_FOR_PRESENTATION",
    "DX_FOR_PROCESSING",
    "Acquisition",
    "Exposure",
    "Variant",
    "draw_marker",
    "expose",
    "sample_acquisition",
]

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


class Variant(StrEnum):
    """Image-quality variants (``--variant``)."""

    STANDARD = "standard"
    HARD = "hard"  # MONOCHROME1 and/or ±(8..15)° rotation and/or doubled noise
    MONOCHROME1 = "monochrome1"
    ROTATED = "rotated"
    NOISY = "noisy"


@dataclass
class Acquisition:
    """Per-image acquisition and processing parameters.

    Attributes
    ----------
    rows, columns
        Image size in pixels.
    imager_spacing_mm
        Detector pixel pitch (ImagerPixelSpacing), mm.
    magnification
        Source-to-image / source-to-object distance ratio; PixelSpacing = pitch / magnification.
    scale
        Zoom of the anatomy relative to a nominal patient at the nominal magnification (1.0).
    rotation_deg
        In-plane rotation of the patient on the detector, degrees, clockwise on screen.
    noise_rel
        Relative standard deviation of the quantum noise at the median signal of the exposed
        field (1/sqrt(photons per pixel)); "doubled noise" doubles it.
    photometric
        ``MONOCHROME1`` or ``MONOCHROME2``.
    bits_stored
        12 … 16.
    sop_class_uid
        DX For Presentation, DX For Processing or CR.
    write_imager_spacing, write_pixel_spacing
        Which spacing attributes the file carries.
    write_patient_orientation
        Whether PatientOrientation is written (CR may omit it).
    """

    rows: int
    columns: int
    imager_spacing_mm: float
    magnification: float
    scale: float
    rotation_deg: float
    noise_rel: float
    photometric: str
    bits_stored: int
    sop_class_uid: str
    write_imager_spacing: bool = True
    write_pixel_spacing: bool = True
    write_patient_orientation: bool = True
    heel: float = 0.1
    heel_angle_rad: float = 0.0
    scatter: float = 0.4
    blur_px: float = 0.8
    detector_blur_px: float = 0.6
    contrast_boost: float = 1.6
    low_freq_compression: float = 0.5
    gamma: float = 1.0
    black_shutter: bool = False
    variant: str = Variant.STANDARD.value
    extras: dict = field(default_factory=dict)
    effects: list[str] = field(default_factory=list)

    @property
    def for_processing(self) -> bool:
        return self.sop_class_uid == DX_FOR_PROCESSING

    @property
    def is_cr(self) -> bool:
        return self.sop_class_uid == CR_IMAGE_STORAGE

    @property
    def patient_spacing_mm(self) -> float:
        """Pixel size at the patient (mm), i.e. the PixelSpacing value."""
        return self.imager_spacing_mm / self.magnification

    def recorded_spacing(self) -> list[float] | None:
        """The spacing a reader finds in the file: PixelSpacing, else ImagerPixelSpacing, else None."""
        if self.write_pixel_spacing:
            v = round(self.patient_spacing_mm, 6)
            return [v, v]
        if self.write_imager_spacing:
            v = round(self.imager_spacing_mm, 6)
            return [v, v]
        return None


def sample_acquisition(
    rng: np.random.Generator,
    variant: Variant,
    *,
    rows_range: tuple[int, int],
    aspect_range: tuple[float, float],
    rotation_sd_deg: float = 3.0,
    cr_fraction: float = 0.15,
    processing_fraction: float = 0.04,
    field_mm: tuple[float, float] | None = None,
) -> Acquisition:
    """Draw acquisition parameters for one image.

    Parameters
    ----------
    rng
        The image's random generator.
    variant
        Quality variant; see :class:`Variant`.
    rows_range
        Inclusive range of the image height in pixels.
    aspect_range
        Range of columns / rows.
    rotation_sd_deg
        Standard deviation of the patient rotation for standard images (clipped to ±15°).
    cr_fraction, processing_fraction
        Probability of a CR image and of a DX For Processing image.
    field_mm
        Range of the image height in mm at the detector; when given, the height in pixels
        follows from the pitch (clipped to 1400 … 2600) instead of ``rows_range``.
    """
    pitch = float(rng.choice([0.139, 0.143, 0.148, 0.15, 0.16, 0.168, 0.175, 0.1875, 0.2]))
    if field_mm is not None:  # the detector area read out follows the exam's field size
        rows = int(np.clip(round(rng.uniform(*field_mm) / pitch), 1400, 2600))
    else:
        rows = int(rng.integers(rows_range[0], rows_range[1] + 1))
    columns = int(np.clip(round(rows * rng.uniform(*aspect_range)), 1000, 2600))
    if rng.random() < 0.3:  # many detectors have odd sizes
        rows += int(rng.integers(0, 8))
        columns += int(rng.integers(0, 8))
    u = rng.random()
    sop = (
        CR_IMAGE_STORAGE
        if u < cr_fraction
        else (DX_FOR_PROCESSING if u < cr_fraction + processing_fraction else DX_FOR_PRESENTATION)
    )
    photometric = "MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2"
    bits = int(rng.choice([12, 12, 14, 14, 15, 16]))
    rotation = float(np.clip(rng.normal(0.0, rotation_sd_deg), -15.0, 15.0))
    noise = float(rng.uniform(0.02, 0.045))
    effects: list[str] = []
    if variant is Variant.MONOCHROME1:
        photometric = "MONOCHROME1"
        effects.append("monochrome1")
    elif variant is Variant.ROTATED:
        rotation = float(rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 15.0))
        effects.append("rotation")
    elif variant is Variant.NOISY:
        noise *= 2.0
        effects.append("doubled_noise")
    elif variant is Variant.HARD:
        picks = rng.random(3) < 0.6
        if not picks.any():
            picks[int(rng.integers(0, 3))] = True
        if picks[0]:
            photometric = "MONOCHROME1"
            effects.append("monochrome1")
        if picks[1]:
            rotation = float(rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 15.0))
            effects.append("rotation")
        if picks[2]:
            noise *= 2.0
            effects.append("doubled_noise")
    is_cr = sop == CR_IMAGE_STORAGE
    acq = Acquisition(
        rows=rows,
        columns=columns,
        imager_spacing_mm=pitch,
        magnification=float(rng.uniform(1.08, 1.22)),
        scale=float(np.clip(rng.normal(1.0, 0.07), 0.82, 1.2)),
        rotation_deg=rotation,
        noise_rel=noise,
        photometric=photometric,
        bits_stored=bits,
        sop_class_uid=sop,
        write_imager_spacing=(rng.random() < 0.5) if is_cr else True,
        write_pixel_spacing=bool(rng.random() < (0.3 if is_cr else 0.6)),
        write_patient_orientation=(rng.random() < 0.6) if is_cr else True,
        heel=float(rng.uniform(0.05, 0.2)),
        heel_angle_rad=float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)),
        scatter=float(rng.uniform(0.2, 0.7)),
        blur_px=float(rng.uniform(1.0, 2.2)),
        detector_blur_px=float(rng.uniform(0.6, 1.2)),
        contrast_boost=float(rng.uniform(1.0, 1.8)),
        low_freq_compression=float(rng.uniform(0.75, 0.92)),
        gamma=float(rng.uniform(0.85, 1.2)),
        black_shutter=bool(rng.random() < 0.35),
        variant=variant.value,
        extras={
            "lf_mm": float(rng.uniform(40, 80)),
            "mf_mm": float(rng.uniform(8, 16)),
            "mid_gain": float(rng.uniform(0.35, 0.7)),
            "edge_boost": float(rng.uniform(0.8, 1.6)),
        },
        effects=effects,
    )
    return acq


@dataclass
class Exposure:
    """Stored pixels and the display window that goes with them."""

    pixels: np.ndarray  # uint16, rows × columns
    window_center: float
    window_width: float
    noise_rel: float


def _lowres(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    return cv2.resize(
        img, ((w + LOWRES - 1) // LOWRES, (h + LOWRES - 1) // LOWRES), interpolation=cv2.INTER_AREA
    )


def _up(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def collimation_mask_lowres(lr: tuple[int, int], field_px: np.ndarray, penumbra_px: float) -> np.ndarray:
    """Transmission of the collimator on the low-resolution grid: 1 in the field, 0 outside."""
    m = np.zeros(lr, np.uint8)
    pts = np.round(np.asarray(field_px) / LOWRES * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, 4)
    mf: np.ndarray = m.astype(np.float32) / 255.0
    s = penumbra_px / LOWRES
    if s > 0.3:
        mf = cv2.GaussianBlur(mf, (0, 0), s)
    return mf


def expose(
    atten: np.ndarray,
    acq: Acquisition,
    rng: np.random.Generator,
    *,
    field_px: np.ndarray,
    lead: np.ndarray | None = None,
) -> Exposure:
    """Simulate the detector and the processing chain.

    Parameters
    ----------
    atten
        Projected attenuation (−ln transmission), float32, rows × columns.
    acq
        Acquisition parameters.
    rng
        Random generator (noise).
    field_px
        Collimated field polygon in image pixels (column, row).
    lead
        Optional extra attenuation of lead markers (same shape), added before exposure.

    Returns
    -------
    Exposure
        Stored values (uint16, within ``bits_stored``), window centre/width in stored units,
        and the realised relative noise.
    """
    rows, cols = atten.shape
    shape = (rows, cols)
    a = atten if lead is None else cv2.add(atten, lead.astype(np.float32))
    if acq.blur_px > 0.3:  # focal-spot unsharpness
        a = cv2.GaussianBlur(a, (0, 0), acq.blur_px)
    # heel effect (anode side darker), inverse-square fall-off and collimator: smooth fields,
    # computed at low resolution
    lr = ((rows + LOWRES - 1) // LOWRES, (cols + LOWRES - 1) // LOWRES)
    yy, xx = np.mgrid[0 : lr[0], 0 : lr[1]].astype(np.float32)
    yy = yy / lr[0] - 0.5
    xx = xx / lr[1] - 0.5
    along = yy * np.cos(acq.heel_angle_rad) + xx * np.sin(acq.heel_angle_rad)
    beam = ((1.0 - acq.heel * (along + 0.5)) * (1.0 - 0.12 * (xx**2 + yy**2))).astype(np.float32)
    coll_lr = collimation_mask_lowres(lr, field_px, penumbra_px=float(rng.uniform(3, 10)))
    trans = _up(beam * np.maximum(coll_lr, 0.002), shape)
    primary = cv2.multiply(cv2.exp(cv_multiply(a, -1.0)), trans)
    # scatter: a broad blur of the primary, mostly from inside the field
    small = _lowres(primary)
    sc = cv2.GaussianBlur(small, (0, 0), max(small.shape) / 12)
    signal = cv2.scaleAdd(_up(sc, shape), acq.scatter, primary)
    inside_lr = coll_lr > 0.5
    sub = signal[::4, ::4]
    inside_sub = _up(inside_lr.astype(np.float32), shape)[::4, ::4] > 0.5
    median = float(np.median(sub[inside_sub])) if inside_sub.any() else float(np.median(sub))
    photons = 1.0 / (acq.noise_rel**2 * max(median, 1e-12))  # photons per unit signal
    sigma = cv2.sqrt(cv_max(signal, 1e-12 * median) * (1.0 / photons))
    noisy = cv2.add(signal, cv2.multiply(rng.standard_normal(shape, dtype=np.float32), sigma))
    if acq.detector_blur_px > 0.3:
        noisy = cv2.GaussianBlur(noisy, (0, 0), acq.detector_blur_px)
    logimg: np.ndarray = cv2.log(cv_max(noisy, median * 1e-3))
    logimg *= -1.0  # high = attenuating (bone)
    log_sub = logimg[::4, ::4]
    body_sub = inside_sub & (log_sub > np.percentile(log_sub, 2) + 0.5)  # anatomy, not direct beam
    if body_sub.sum() < 100:
        body_sub = inside_sub if inside_sub.sum() >= 100 else np.ones_like(inside_sub)
    if acq.for_processing:
        lo, hi = (float(v) for v in np.percentile(log_sub, (0.01, 99.99)))
        disp: np.ndarray = cv_min(cv_max((logimg - lo) * (1.0 / max(hi - lo, 1e-6)), 0.0), 1.0)
    else:
        # multi-scale processing: strongly compress the large-scale range (trunk thickness),
        # keep the bone-scale detail, sharpen edges a little. With c = compression, m, b, e the
        # mid, detail and edge gains: (1-c)·lf + m·(mf-lf) + b·(fine-mf) + e·(log-fine)
        c = acq.low_freq_compression
        m = acq.extras.get("mid_gain", 0.5)
        b = acq.contrast_boost
        e = acq.extras.get("edge_boost", 1.4)
        small = _lowres(logimg)
        mm_lr = 1.0 / (acq.imager_spacing_mm * LOWRES)  # low-res pixels per mm at the detector
        lf = cv2.GaussianBlur(small, (0, 0), acq.extras.get("lf_mm", 50.0) * mm_lr)
        mf = cv2.GaussianBlur(small, (0, 0), acq.extras.get("mf_mm", 12.0) * mm_lr)
        low = _up(cv2.addWeighted(lf, 1.0 - c - m, mf, m - b, 0.0), shape)
        half = cv2.resize(logimg, ((cols + 1) // 2, (rows + 1) // 2), interpolation=cv2.INTER_AREA)
        fine = _up(cv2.GaussianBlur(half, (0, 0), max(0.5, 0.6 / acq.imager_spacing_mm)), shape)
        proc = cv2.add(low, cv2.addWeighted(fine, b - e, logimg, e, 0.0))
        lo, hi = (float(v) for v in np.percentile(proc[::4, ::4][body_sub], (0.5, 99.8)))
        norm = cv_min(cv_max((proc - lo) * (1.0 / max(hi - lo, 1e-6)), 1e-6), 1.0)
        disp = cast(np.ndarray, cv2.pow(norm, acq.gamma))  # float32, like ``norm``
        # outside the collimated field: unexposed plate (bright, a little scatter) or an
        # electronic shutter (black)
        w = _up(np.clip(coll_lr * 1.25 - 0.1, 0, 1).astype(np.float32), shape)
        outside = 0.0 if acq.black_shutter else float(rng.uniform(0.85, 1.0))
        disp -= outside
        disp *= w
        disp += outside
    maxv = (1 << acq.bits_stored) - 1
    lo_v = 0.04 * maxv if not acq.for_processing else 0.0
    span = 0.9 * maxv if not acq.for_processing else float(maxv)
    p_lo, p_hi = (lo_v + span * float(v) for v in np.percentile(disp[::4, ::4][body_sub], (1.0, 99.5)))
    wc, ww = (p_lo + p_hi) / 2, max(p_hi - p_lo, 2.0)
    pixels = np.empty(shape, np.uint16)
    np.copyto(pixels, cv_min(cv_max(disp * span + (lo_v + 0.5), 0.0), float(maxv)), casting="unsafe")
    if acq.photometric == "MONOCHROME1":
        pixels = (maxv - pixels).astype(np.uint16)
        wc = maxv - wc
    return Exposure(
        pixels=pixels, window_center=float(round(wc)), window_width=float(round(ww)), noise_rel=acq.noise_rel
    )


def draw_marker(
    shape: tuple[int, int],
    text: str,
    center_px: tuple[float, float],
    height_px: float,
    angle_deg: float,
    *,
    boxed: bool,
    value: float = 3.0,
) -> np.ndarray:
    """A lead side marker ("L", "R", …) as an attenuation map of ``shape`` (mostly zeros)."""
    rows, cols = shape
    scale = height_px / 22.0
    thick = max(2, round(height_px / 7))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thick)
    pad = int(height_px * 0.5)
    patch = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(patch, text, (pad, pad + th), cv2.FONT_HERSHEY_DUPLEX, scale, 255, thick, cv2.LINE_AA)
    if boxed:
        cv2.rectangle(
            patch,
            (pad // 3, pad // 3),
            (patch.shape[1] - pad // 3, patch.shape[0] - pad // 3),
            110,
            max(1, thick // 2),
        )
    ph, pw = patch.shape
    out = np.zeros((rows, cols), np.float32)
    half = int(np.ceil(np.hypot(ph, pw) / 2)) + 2  # the rotated patch fits in this box
    c0, r0 = max(int(center_px[0]) - half, 0), max(int(center_px[1]) - half, 0)
    c1, r1 = min(int(center_px[0]) + half, cols), min(int(center_px[1]) + half, rows)
    if c1 <= c0 or r1 <= r0:
        return out
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), -angle_deg, 1.0)
    m[0, 2] += center_px[0] - pw / 2 - c0
    m[1, 2] += center_px[1] - ph / 2 - r0
    roi = cv2.warpAffine(patch.astype(np.float32) / 255.0, m, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR)
    out[r0:r1, c0:c1] = roi * value
    return out
