"""PNG previews of synthetic images with their ground truth drawn on top (``cdss fixtures render``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom

from cdss.analysis.imaging import resize_longest
from cdss.analysis.pixels import display_image, to_uint8

__all__ = ["draw_truth", "render_png"]

_CORNER_COLOURS = [(0, 0, 255), (0, 200, 255), (0, 255, 0), (255, 128, 0)]  # BGR: SA, SP, IP, IA
_GRADE_COLOURS = {
    "none": (200, 200, 200),
    "I": (0, 255, 255),
    "II": (0, 200, 255),
    "III": (0, 128, 255),
    "IV": (0, 0, 255),
    "V": (255, 0, 255),
}


def _p(pt: Any, k: float) -> tuple[int, int]:
    return round(float(pt[0]) * k), round(float(pt[1]) * k)


def draw_truth(img_bgr: np.ndarray, truth: dict[str, Any], k: float) -> np.ndarray:
    """Draw vertebra outlines and corners, level grades, cervical ROI and foramina on ``img_bgr``.

    ``k`` is the factor from source pixels to ``img_bgr`` pixels.
    """
    out = img_bgr
    lw = max(1, round(2 * max(out.shape) / 1000))
    for name, v in truth.get("vertebrae", {}).items():
        outline = np.array([_p(p, k) for p in v.get("outline", [])], np.int32)
        if len(outline):
            cv2.polylines(out, [outline.reshape(-1, 1, 2)], True, (255, 255, 0), lw, cv2.LINE_AA)
        corners = v.get("corners", [])
        for i, c in enumerate(corners):
            cv2.circle(out, _p(c, k), lw + 2, _CORNER_COLOURS[i % 4], -1, cv2.LINE_AA)
        if corners:
            cc = np.mean(np.array(corners, float), axis=0)
            cv2.putText(
                out, name, _p(cc, k), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * lw, (0, 255, 255), lw, cv2.LINE_AA
            )
    for extra in truth.get("structures", {}).values():
        for shape in extra if isinstance(extra, list) else [extra]:
            pts = np.array([_p(p, k) for p in shape], np.int32)
            if len(pts) > 2:
                cv2.polylines(
                    out, [pts.reshape(-1, 1, 2)], True, (180, 120, 255), max(1, lw - 1), cv2.LINE_AA
                )
    y = 20 * lw
    for lv in truth.get("levels", []):
        text = f"{lv['level']}: {lv['slip_percent']:+.1f}% {lv['grade']}"
        cv2.putText(
            out,
            text,
            (10, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * lw,
            _GRADE_COLOURS.get(lv["grade"], (255, 255, 255)),
            lw,
            cv2.LINE_AA,
        )
        y += 18 * lw
    cerv = truth.get("cervical")
    if cerv:
        c0, r0, c1, r1 = cerv["roi"]
        cv2.rectangle(out, _p((c0, r0), k), _p((c1, r1), k), (0, 255, 0), lw, cv2.LINE_AA)
        for f in cerv.get("foramina", []):
            if "outline" in f:
                pts = np.array([_p(p, k) for p in f["outline"]], np.int32)
                colour = (0, 0, 255) if f.get("narrowing", 0) >= cerv.get("threshold", 1.0) else (0, 255, 0)
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], True, colour, lw, cv2.LINE_AA)
        text = f"{cerv['laterality']} {cerv['label']}"
        cv2.putText(out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * lw, (0, 255, 0), lw, cv2.LINE_AA)
    return out


def render_png(dicom_path: Path, out_png: Path, *, overlay: bool, max_size: int = 1024) -> Path:
    """Render ``dicom_path`` (display polarity, its own window) as PNG, optionally with its GT.

    The ground truth is read from the ``.json`` beside the DICOM file.
    """
    ds = pydicom.dcmread(dicom_path)
    img = to_uint8(display_image(ds))
    k = min(1.0, max_size / max(img.shape))
    img = resize_longest(img, max_size)
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if overlay:
        js = dicom_path.with_suffix(".json")
        if not js.exists():
            raise FileNotFoundError(f"no ground truth {js} beside {dicom_path}")
        draw_truth(bgr, json.loads(js.read_text()), k)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), bgr)
    return out_png
