"""Family B acquisition and detector chain (independent of family A's ``acquisition`` module).

Physics and processing, in order (:func:`expose`):

1. beam hardening — the effective attenuation grows sub-linearly, ``A / (1 + β·A)``;
2. focal-spot unsharpness on the transmitted fraction; anode heel and inverse-square fall-off;
3. collimator blades with a penumbra and a little leakage;
4. anti-scatter grid: the lamellae alias against the pixel pitch into a fine stripe pattern
   (when a grid is used, the scatter-to-primary ratio drops);
5. scatter as a thickness-dependent fraction of a two-scale blur of the primary;
6. detector: correlated quantum noise (white Poisson-like noise blurred by the scintillator PSF
   together with the signal), white electronic noise (dominant at low dose), per-column gain
   residue, dead lines (some images), stitching seams between two exposures (some images);
7. logarithm, then one of three *For Presentation* chains: ``equalize`` (box-filter dynamic
   range compression + unsharp mask), ``clahe`` (contrast-limited adaptive histogram
   equalisation blended with the log image) or ``film`` (a characteristic S-curve only) — each
   followed by a sigmoid/gamma tone curve; *For Processing* images keep the log signal;
8. quantisation to 8 … 16 bits stored, MONOCHROME1 inversion, display window or VOI LUT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np

from cdss.synth.cvops import cv_add, cv_max

__all__ = ["CR", "DX_PRES", "DX_PROC", "Acq", "Exposure", "draw_marker", "expose", "sample_acquisition"]

DX_PRES = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROC = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


@dataclass
class Acq:
    """Everything the detector chain and the header writer need to know about one exposure."""

    rows: int
    columns: int
    pitch_mm: float
    magnification: float
    sid_mm: float
    rotation_deg: float
    photometric: str
    bits_stored: int
    sop_class_uid: str
    noise_rel: float
    electronic_rel: float
    low_dose: bool
    processing: str
    params: dict[str, float]
    grid: dict[str, float] | None
    seam: dict[str, float] | None
    defects: list[dict[str, Any]]
    collimation: str
    shutter: str
    voi: str  # "window", "lut", "none"
    rescale: tuple[float, float]  # slope, intercept (modality = stored * slope + intercept)
    write_imager_spacing: bool
    write_pixel_spacing: bool
    pixel_spacing_calibrated: bool  # PixelSpacing = pitch / magnification (else = pitch)
    focal_px: float
    psf_px: float
    beta: float
    spr: float
    heel: float
    effects: list[str] = field(default_factory=list)

    @property
    def for_processing(self) -> bool:
        return self.sop_class_uid == DX_PROC

    @property
    def is_cr(self) -> bool:
        return self.sop_class_uid == CR

    @property
    def patient_spacing_mm(self) -> float:
        return self.pitch_mm / self.magnification

    @property
    def sod_mm(self) -> float:
        """Source to mid-plane distance (mm)."""
        return self.sid_mm / self.magnification

    def written_pixel_spacing(self) -> float | None:
        if not self.write_pixel_spacing:
            return None
        return self.patient_spacing_mm if self.pixel_spacing_calibrated else self.pitch_mm

    def recorded_spacing(self) -> list[float] | None:
        """What a reader finds: PixelSpacing, else ImagerPixelSpacing, else ``None``."""
        ps = self.written_pixel_spacing()
        if ps is not None:
            return [round(ps, 6)] * 2
        if self.write_imager_spacing:
            return [round(self.pitch_mm, 6)] * 2
        return None


def _pick(rng: np.random.Generator, options: list[Any], weights: list[float]) -> Any:
    w = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def sample_acquisition(
    rng: np.random.Generator,
    *,
    variant: str,
    field_mm: tuple[float, float],
    aspect: tuple[float, float],
    cr_fraction: float = 0.2,
    processing_fraction: float = 0.05,
    max_side: int | None = None,
    rotation_sd: float = 4.0,
) -> Acq:
    """Draw one exposure's parameters for a view (``field_mm``: detector height range in mm)."""
    hard = variant == "hard"
    effects: list[str] = []
    pitch = float(
        _pick(
            rng,
            [0.1, 0.125, 0.139, 0.143, 0.148, 0.154, 0.16, 0.175, 0.2, 0.25],
            [1, 2, 3, 4, 2, 2, 2, 1, 2, 1],
        )
    )
    rows = int(np.clip(round(rng.uniform(*field_mm) / pitch), 1200, 3000))
    columns = int(np.clip(round(rows * rng.uniform(*aspect)), 800, 3000))
    if rng.random() < 0.35:
        rows += int(rng.integers(1, 12))
        columns += int(rng.integers(1, 12))
    u = rng.random()
    cr_p = cr_fraction + (0.1 if hard else 0.0)
    sop = CR if u < cr_p else (DX_PROC if u < cr_p + processing_fraction else DX_PRES)
    mono1 = rng.random() < (0.5 if hard else 0.3)
    bits = int(_pick(rng, [8, 10, 12, 14, 15, 16], [1.0, 1.0, 3.5, 2.0, 1.0, 1.5]))
    rot = float(np.clip(rng.normal(0, rotation_sd), -12, 12))
    if hard and rng.random() < 0.7:
        rot = float(rng.choice([-1, 1]) * rng.uniform(6, 25))
        effects.append("rotation")
    if hard and rng.random() < 0.05:
        rot = float(rng.choice([-90.0, 90.0]) + rng.normal(0, 2))
        effects.append("rotation_90")
    low_dose = rng.random() < (0.5 if hard else 0.15)
    noise = float(rng.uniform(0.05, 0.11) if low_dose else rng.uniform(0.015, 0.04))
    if low_dose:
        effects.append("low_dose")
    if variant == "monochrome1":
        mono1 = True
    elif variant == "rotated":
        rot = float(rng.choice([-1, 1]) * rng.uniform(8, 25))
        effects.append("rotation")
    elif variant == "noisy":
        noise *= 2.2
        low_dose = True
        effects.append("low_dose")
    if mono1:
        effects.append("monochrome1")
    grid = None
    if rng.random() < (0.5 if hard else 0.25):
        grid = {
            "lines_per_mm": float(rng.uniform(3.6, 8.0)),
            "vertical": float(rng.random() < 0.5),
            "amplitude": float(rng.uniform(0.012, 0.05)),
            "phase": float(rng.uniform(0, 2 * np.pi)),
        }
        effects.append("grid_lines")
    seam = None
    if rng.random() < (0.2 if hard else 0.06):
        seam = {
            "position": float(rng.uniform(0.3, 0.7)),
            "gain": float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.12)),
            "width": float(rng.uniform(2, 14)),
            "noise": float(rng.uniform(0.8, 1.5)),
            "line": float(rng.uniform(-0.05, 0.05)),
        }
        effects.append("stitching_seam")
    defects: list[dict[str, Any]] = []
    if rng.random() < (0.15 if hard else 0.03):
        for _ in range(int(rng.integers(1, 4))):
            defects.append(
                {
                    "axis": "column" if rng.random() < 0.6 else "row",
                    "at": float(rng.random()),
                    "kind": str(rng.choice(["dead", "hot"])),
                }
            )
        effects.append("detector_defects")
    coll = (
        "heavy" if rng.random() < (0.7 if hard else 0.35) else ("open" if rng.random() < 0.15 else "normal")
    )
    if coll == "heavy":
        effects.append("heavy_collimation")
    is_cr = sop == CR
    processing = "raw" if sop == DX_PROC else str(_pick(rng, ["equalize", "clahe", "film"], [5, 3, 1.5]))
    voi = "lut" if rng.random() < 0.2 else "window"
    if sop == DX_PROC:
        voi = "none"  # VOI attributes are only allowed on For Presentation DX images
    if is_cr and rng.random() < 0.15:
        voi = "none"
    rescale = (1.0, 0.0)
    if is_cr and rng.random() < 0.4:
        rescale = (
            float(_pick(rng, [1.0, 0.5, 2.0], [3, 1, 1])),
            float(_pick(rng, [-1024.0, 0.0, 100.0], [2, 1, 1])),
        )
    acq = Acq(
        rows=rows,
        columns=columns,
        pitch_mm=pitch,
        magnification=float(rng.uniform(1.08, 1.32)),
        sid_mm=float(_pick(rng, [1000.0, 1100.0, 1150.0, 1200.0, 1500.0], [4, 2, 2, 1, 1])),
        rotation_deg=rot,
        photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
        bits_stored=bits,
        sop_class_uid=sop,
        noise_rel=noise,
        electronic_rel=float(rng.uniform(0.002, 0.006) * (3 if low_dose else 1)),
        low_dose=low_dose,
        processing=processing,
        params={
            "drc": float(rng.uniform(0.55, 0.9)),
            "drc_mm": float(rng.uniform(18, 60)),
            "usm": float(rng.uniform(0.3, 1.6)),
            "usm_mm": float(rng.uniform(0.8, 3.0)),
            "clahe_clip": float(rng.uniform(1.4, 3.5)),
            "clahe_tiles": float(rng.integers(4, 10)),
            "clahe_mix": float(rng.uniform(0.35, 0.85)),
            "contrast": float(rng.uniform(3.0, 7.0)),
            "gamma": float(rng.uniform(0.8, 1.25)),
            "white_point": float(rng.uniform(99.0, 99.9)),
        },
        grid=grid,
        seam=seam,
        defects=defects,
        collimation=coll,
        shutter=str(_pick(rng, ["black", "white", "none"], [4, 3, 2])),
        voi=voi,
        rescale=rescale,
        write_imager_spacing=bool(rng.random() < 0.5) if is_cr else True,
        write_pixel_spacing=bool(rng.random() < (0.3 if is_cr else 0.55)),
        pixel_spacing_calibrated=bool(rng.random() < 0.7),
        focal_px=float(rng.uniform(0.5, 1.4)),
        psf_px=float(rng.uniform(0.5, 1.3)),
        beta=float(rng.uniform(0.02, 0.07)),
        spr=float(rng.uniform(0.3, 0.9) if grid or not is_cr else rng.uniform(0.8, 2.0)),
        heel=float(rng.uniform(0.04, 0.18)),
        effects=effects,
    )
    if max_side and max(acq.rows, acq.columns) > max_side:
        f = max_side / max(acq.rows, acq.columns)
        acq.rows = max(32, round(acq.rows * f))
        acq.columns = max(32, round(acq.columns * f))
        acq.pitch_mm = round(acq.pitch_mm / f, 5)
        acq.focal_px *= max(f, 0.35)
        acq.psf_px *= max(f, 0.35)
        acq.noise_rel *= max(f, 0.25)  # larger pixels collect more photons
    return acq


@dataclass
class Exposure:
    """Stored pixels and their display attributes."""

    pixels: np.ndarray  # uint8 or uint16
    window: tuple[float, float] | None  # centre, width in modality units
    voi_lut: tuple[list[int], np.ndarray] | None  # LUT descriptor, data
    body_mask_fraction: float


def _lowres(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape
    return cv2.resize(img, ((w + f - 1) // f, (h + f - 1) // f), interpolation=cv2.INTER_AREA)


def _up(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def field_mask(shape: tuple[int, int], field_px: np.ndarray, penumbra_px: float, f: int = 4) -> np.ndarray:
    """Collimator transmission on a grid ``f`` times coarser than ``shape``."""
    lr = ((shape[0] + f - 1) // f, (shape[1] + f - 1) // f)
    m = np.zeros(lr, np.uint8)
    pts = np.round(np.asarray(field_px) / f * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, 4)
    mf: np.ndarray = m.astype(np.float32) / 255.0
    if penumbra_px / f > 0.3:
        mf = cv2.GaussianBlur(mf, (0, 0), penumbra_px / f)
    return mf


def expose(
    att: np.ndarray,
    acq: Acq,
    rng: np.random.Generator,
    *,
    field_px: np.ndarray,
    roi_px: np.ndarray | None = None,
) -> Exposure:
    """Turn projected attenuation (−ln transmission) into stored pixel values (see module doc).

    ``roi_px`` (a polygon, pixels) is the anatomy the exposure recognition ranges on (the
    vertebral bodies with a margin); without it the thicker half of the exposed body is used.
    """
    rows: int
    cols: int
    rows, cols = att.shape
    shape = (rows, cols)
    f = 4
    att = cv_max(att, 0.0)
    a = cv2.divide(att, cv_add(att * acq.beta, 1.0))  # beam hardening (sub-linear)
    trans = cv2.exp(-a)
    if acq.focal_px > 0.3:
        trans = cv2.GaussianBlur(trans, (0, 0), acq.focal_px)
    lr = ((rows + f - 1) // f, (cols + f - 1) // f)
    yy, xx = np.mgrid[0 : lr[0], 0 : lr[1]].astype(np.float32)
    yy = yy / lr[0] - 0.5
    xx = xx / lr[1] - 0.5
    beam = (1.0 - acq.heel * (yy + 0.5)) * (1.0 - 0.08 * (xx * xx + yy * yy))
    coll = field_mask(shape, field_px, rng.uniform(2, 9), f)
    i0 = _up((beam * np.maximum(coll, 0.004)).astype(np.float32), shape)
    primary = cv2.multiply(trans, i0)
    if acq.grid:
        g = acq.grid
        fs = 1.0 / acq.pitch_mm
        alias = abs(g["lines_per_mm"] - round(g["lines_per_mm"] / fs) * fs) / fs  # cycles per pixel
        alias = float(np.clip(alias, 0.06, 0.49))
        n = cols if g["vertical"] else rows
        prof = 1.0 - g["amplitude"] * (0.5 + 0.5 * np.cos(2 * np.pi * alias * np.arange(n) + g["phase"]))
        prof = prof.astype(np.float32)
        primary *= prof[None, :] if g["vertical"] else prof[:, None]
    small = _lowres(primary, f)
    k = max(lr) / 40
    scatter = 0.6 * cv2.GaussianBlur(small, (0, 0), k) + 0.4 * cv2.GaussianBlur(small, (0, 0), 4 * k)
    spr = acq.spr * (0.35 if acq.grid else 1.0)
    signal = cv2.scaleAdd(_up(scatter.astype(np.float32), shape), spr, primary)
    inside = coll > 0.5
    sub = cv2.resize(signal, (lr[1], lr[0]), interpolation=cv2.INTER_AREA)
    med = float(np.median(sub[inside])) if inside.sum() > 50 else float(np.median(sub))
    # correlated quantum noise: white noise with variance ∝ signal, blurred with the PSF
    white = rng.standard_normal(shape, dtype=np.float32)
    if acq.psf_px > 0.3:
        white = cast(np.ndarray, cv2.GaussianBlur(white, (0, 0), acq.psf_px))  # float32, like ``white``
        white *= 1.0 / max(float(white.std()), 1e-6)
        signal = cv2.GaussianBlur(signal, (0, 0), acq.psf_px)
    sigma = cv2.sqrt(cv_max(signal, med * 1e-4) * (acq.noise_rel**2 * med))
    noisy: np.ndarray = cv2.add(signal, cv2.multiply(white, sigma))
    e_sigma = acq.electronic_rel * med
    noisy += rng.standard_normal(shape, dtype=np.float32) * np.float32(e_sigma)
    # per-column gain residue (flat-field correction is never perfect)
    colgain = 1.0 + rng.normal(0, 0.0025 if not acq.low_dose else 0.005, cols).astype(np.float32)
    noisy *= colgain[None, :]
    if acq.seam:
        s = acq.seam
        r0 = int(s["position"] * rows)
        ramp = np.clip((np.arange(rows, dtype=np.float32) - r0) / max(s["width"], 1.0) + 0.5, 0, 1)
        gain = 1.0 + s["gain"] * ramp
        noisy *= gain[:, None]
        band = slice(max(r0 - 1, 0), min(r0 + 2, rows))
        noisy[band] *= 1.0 + s["line"]
        lower = slice(r0, rows)
        noisy[lower] += rng.standard_normal((rows - r0, cols), dtype=np.float32) * np.float32(
            (s["noise"] - 1.0) * acq.noise_rel * med * 0.5
        )
    for d in acq.defects:
        if d["axis"] == "column":
            col = int(d["at"] * (cols - 1))
            noisy[:, col] = med * (0.02 if d["kind"] == "dead" else 3.0)
        else:
            r = int(d["at"] * (rows - 1))
            noisy[r, :] = med * (0.02 if d["kind"] == "dead" else 3.0)
    logimg: np.ndarray = cv2.log(cv_max(noisy, med * 2e-4) * (1.0 / med))
    logimg *= -1.0  # bone high
    in_full = _up(inside.astype(np.float32), shape) > 0.5
    lsub = logimg[::4, ::4]
    isub = in_full[::4, ::4]
    body = isub & (lsub > np.percentile(lsub[isub] if isub.any() else lsub, 3) + 0.4)
    if body.sum() < 200:
        body = isub if isub.sum() >= 200 else np.ones_like(isub)
    # the processing ranges on the anatomy of interest: the thicker part of the body (thin skin
    # edges burn out, as they do on real lateral spines)
    core = body & (lsub >= np.percentile(lsub[body], 25))
    if roi_px is not None:
        rm = np.zeros(lsub.shape, np.uint8)
        cv2.fillPoly(rm, [np.round(np.asarray(roi_px) / 4).astype(np.int32).reshape(-1, 1, 2)], 1)
        roi = rm.astype(bool) & isub
        if roi.sum() >= 100:
            core = roi
    p = acq.params
    px_mm = 1.0 / acq.pitch_mm
    if acq.for_processing:
        lo, hi = (float(v) for v in np.percentile(lsub[isub] if isub.sum() > 100 else lsub, (0.05, 99.95)))
        disp = np.clip((logimg - lo) / max(hi - lo, 1e-6), 0, 1)
    else:
        lo = float(
            np.percentile(lsub[core], 0.5)
            if roi_px is not None
            else np.percentile(lsub[body], 8.0 if acq.processing == "film" else 1.0)
        )
        hi = float(np.percentile(lsub[core], p["white_point"]))
        norm = (logimg - lo) * (1.0 / max(hi - lo, 1e-6))
        if acq.processing == "equalize":
            small = _lowres(norm, f)
            ksz = max(3, int(p["drc_mm"] * px_mm / f) | 1)
            base = _up(cv2.blur(cv2.blur(small, (ksz, ksz)), (ksz, ksz)), shape)
            fine = cv2.GaussianBlur(norm, (0, 0), max(0.6, p["usm_mm"] * px_mm))
            proc = norm - p["drc"] * base + p["usm"] * (norm - fine)
        elif acq.processing == "clahe":
            u16 = (np.clip(norm, -0.2, 1.2) * (65535 / 1.4) + 65535 * 0.2 / 1.4).astype(np.uint16)
            tiles = int(p["clahe_tiles"])
            cl = cv2.createCLAHE(clipLimit=p["clahe_clip"], tileGridSize=(tiles, tiles)).apply(u16)
            proc = p["clahe_mix"] * (cl.astype(np.float32) / 65535.0) + (1 - p["clahe_mix"]) * norm
        else:  # film
            fine = cv2.GaussianBlur(norm, (0, 0), max(0.6, 1.2 * px_mm))
            proc = norm + 0.4 * (norm - fine)
        psub = proc[::4, ::4][core]
        lo = float(np.percentile(psub if roi_px is not None else proc[::4, ::4][body], 1.0))
        hi = float(np.percentile(psub, 99.7))
        x = (proc - lo) / max(hi - lo, 1e-6)
        c = p["contrast"]
        y = 1.0 / (1.0 + np.exp(-c * (x - 0.5)))
        y0, y1 = 1.0 / (1.0 + np.exp(c * 0.5)), 1.0 / (1.0 + np.exp(-c * 0.5))
        disp = np.clip((y - y0) / (y1 - y0), 0, 1) ** p["gamma"]
        w = _up(np.clip(coll * 1.3 - 0.15, 0, 1).astype(np.float32), shape)
        if acq.shutter != "none":
            outside = 0.0 if acq.shutter == "black" else 1.0
            disp = disp * w + outside * (1 - w)
    maxv = (1 << acq.bits_stored) - 1
    lo_v = 0.0 if acq.for_processing else float(rng.uniform(0.0, 0.06)) * maxv
    span = maxv - lo_v - (0 if acq.for_processing else float(rng.uniform(0.0, 0.05)) * maxv)
    stored = disp * span + lo_v
    dsub = stored[::4, ::4][core]
    wlo, whi = (float(v) for v in np.percentile(dsub, (0.8, 99.6)))
    pixels = np.clip(np.rint(stored), 0, maxv)
    if acq.photometric == "MONOCHROME1":
        pixels = maxv - pixels
        wlo, whi = maxv - whi, maxv - wlo
    dtype = np.uint8 if acq.bits_stored <= 8 else np.uint16
    pixels = pixels.astype(dtype)
    slope, intercept = acq.rescale
    window = None
    lut = None
    if acq.voi == "window":
        window = ((wlo + whi) / 2 * slope + intercept, max(whi - wlo, 2.0) * abs(slope))
    elif acq.voi == "lut":
        n = maxv + 1
        xs = np.arange(n, dtype=np.float64)
        ctr, wid = (wlo + whi) / 2, max(whi - wlo, 2.0)
        curve = 1.0 / (1.0 + np.exp(-4.0 * (xs - ctr) / wid))
        lut_bits = 12 if (rng.random() < 0.5 and acq.sop_class_uid != CR) else 16
        data = np.rint(curve * ((1 << lut_bits) - 1)).astype(np.uint16)
        # LUT entries are indexed by modality values; descriptor: entries, first value mapped, bits
        first = round(intercept) if slope == 1.0 else 0
        if slope != 1.0:
            lut = None
            window = ((wlo + whi) / 2 * slope + intercept, max(whi - wlo, 2.0) * abs(slope))
        else:
            lut = ([n if n < 65536 else 0, first, lut_bits], data)
    return Exposure(pixels=pixels, window=window, voi_lut=lut, body_mask_fraction=float(body.mean()))


def draw_marker(
    shape: tuple[int, int],
    text: str,
    centre: tuple[float, float],
    height_px: float,
    angle_deg: float,
    value: float,
) -> np.ndarray:
    """A lead marker (letters, optional underline) as an attenuation map of ``shape``."""
    rows, cols = shape
    font = cv2.FONT_HERSHEY_TRIPLEX if len(text) == 1 else cv2.FONT_HERSHEY_SIMPLEX
    scale = height_px / 24.0
    thick = max(2, round(height_px / 8))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = int(height_px * 0.4) + 2
    patch8 = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(patch8, text, (pad, pad + th), font, scale, 255, thick, cv2.LINE_AA)
    patch = patch8.astype(np.float32) / 255.0
    ph, pw = patch.shape
    out = np.zeros((rows, cols), np.float32)
    half = int(np.hypot(ph, pw) / 2) + 2
    c0, r0 = max(int(centre[0]) - half, 0), max(int(centre[1]) - half, 0)
    c1, r1 = min(int(centre[0]) + half, cols), min(int(centre[1]) + half, rows)
    if c1 <= c0 or r1 <= r0:
        return out
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), -angle_deg, 1.0)
    m[0, 2] += centre[0] - pw / 2 - c0
    m[1, 2] += centre[1] - ph / 2 - r0
    out[r0:r1, c0:c1] = cv2.warpAffine(patch, m, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR) * value
    return out
