"""The overlay of a result: outlines, measurement constructions and text, in source pixels.

One description, three consumers: the GSPS encoder writes it as graphic and text objects, the
Secondary Capture and ``cdss render`` draw it with OpenCV (:mod:`cdss.render`), and
:func:`overlay_from_gsps` reads it back from a GSPS file. So what a viewer shows from the GSPS,
what the SC burns in and what the SR states are built from the same numbers.

Coordinates are ``(column, row)`` source pixels (see :mod:`cdss.analysis.types`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.geometry import (
    CORNER_INFERIOR_ANTERIOR,
    CORNER_INFERIOR_POSTERIOR,
    CORNER_SUPERIOR_ANTERIOR,
    CORNER_SUPERIOR_POSTERIOR,
)
from cdss.analysis.types import (
    CervicalResult,
    Laterality,
    LevelMeasurement,
    LevelStatus,
    LumbarResult,
    LumbarView,
    MeyerdingGrade,
    Normality,
    Vertebra,
    VertebraSegment,
)
from cdss.encode.common import PIXEL_CENTRE_OFFSET, from_image_coordinates

__all__ = [
    "LAYERS",
    "Graphic",
    "LayerStyle",
    "Overlay",
    "TextLabel",
    "build_overlay",
    "format_percent",
    "level_text",
    "overlay_from_gsps",
    "roi_polygon",
    "rounded_probability",
    "rounded_slip",
    "slip_points",
    "summary_lines",
    "text_height",
]


@dataclass(frozen=True)
class LayerStyle:
    """A GSPS graphic layer (colour is per layer in GSPS)."""

    name: str
    order: int
    description: str
    rgb: tuple[int, int, int]


LAYERS: dict[str, LayerStyle] = {
    s.name: s
    for s in (
        LayerStyle("AI_VERTEBRAE", 1, "AI vertebra outlines and labels", (0, 200, 255)),
        LayerStyle("AI_MEASURE", 2, "AI measurement constructions without finding", (255, 215, 0)),
        LayerStyle("AI_FINDING", 3, "AI findings (listhesis, abnormal classification)", (255, 64, 64)),
        LayerStyle("AI_INFO", 4, "AI result identification, caution and summary", (255, 170, 0)),
    )
}


@dataclass
class Graphic:
    """A polyline or a point."""

    kind: str  # "polyline" | "point"
    points: np.ndarray  # (N, 2) float (column, row)
    layer: str
    tracking_id: str | None = None
    tracking_uid: str | None = None


@dataclass
class TextLabel:
    """A text with its bounding box ``(left, top, right, bottom)`` and optional anchor point."""

    text: str
    box: tuple[float, float, float, float]
    layer: str
    anchor: tuple[float, float] | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None


@dataclass
class Overlay:
    """Everything drawn over one source image."""

    shape: tuple[int, int]  # (rows, columns)
    graphics: list[Graphic] = field(default_factory=list)
    labels: list[TextLabel] = field(default_factory=list)
    layers: dict[str, LayerStyle] = field(default_factory=lambda: dict(LAYERS))

    def used_layers(self) -> list[LayerStyle]:
        names = {g.layer for g in self.graphics} | {t.layer for t in self.labels}
        return sorted((self.layers[n] for n in names), key=lambda s: s.order)


def text_height(shape: tuple[int, int]) -> float:
    """Height of one text line in pixels for an image of ``shape`` (about 1/70 of the larger side)."""
    return float(max(10, round(max(shape) / 70)))


def _char_width(height: float) -> float:
    return 0.62 * height


def format_percent(value: float) -> str:
    """Slip magnitude as written everywhere (SR value, GSPS and SC text): one decimal."""
    return f"{round(abs(value), 1):.1f}"


def rounded_slip(level: LevelMeasurement) -> float:
    """The slip magnitude in percent stored in the SR (equal to the text in GSPS/SC)."""
    assert level.slip_percent is not None
    return float(format_percent(level.slip_percent))


def rounded_probability(p: float) -> float:
    """Probability / operating point as stored in the SR and shown in GSPS/SC (3 decimals)."""
    return round(float(p), 3)


def roi_polygon(result: CervicalResult) -> np.ndarray:
    """The classifier ROI as a closed 5-point polygon, clipped to the image."""
    rows, cols = result.image_shape
    c0, r0, c1, r1 = (float(v) for v in result.roi)
    c0, c1 = min(max(c0, 0.0), cols - 1.0), min(max(c1, 0.0), cols - 1.0)
    r0, r1 = min(max(r0, 0.0), rows - 1.0), min(max(r1, 0.0), rows - 1.0)
    return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)


def level_text(level: LevelMeasurement) -> str:
    """The one line that states a level's result, everywhere (GSPS and SC label beside the level,
    summary lines, the SR's comment, the OHIF overlay): plain ASCII.

    * graded: ``"L5-S1 anterolisthesis 38.0 % - Meyerding II"``;
    * measured below the reporting threshold: ``"L3-L4 2.1 % - no listhesis"``;
    * both vertebrae found but the level failed a check (``NOT_MEASURED``, never graded):
      ``"L5-S1 not measured: <reason>"``;
    * a vertebra missing (``MISSING``): ``"L1-L2: not measured (L1 not detected)"``.
    """
    if level.status is LevelStatus.NOT_MEASURED:
        return f"{level.name} not measured: {level.reason or 'failed a plausibility check'}"
    if level.status is LevelStatus.MISSING or level.slip_percent is None:
        why = level.reason or "a vertebra was not detected"
        return f"{level.name}: not measured ({why})"
    pct = format_percent(level.slip_percent)
    if level.grade is MeyerdingGrade.NONE:
        return f"{level.name} {pct} % - no listhesis"
    return f"{level.name} {level.direction.value} {pct} % - Meyerding {level.grade.value}"


def cervical_text(result: CervicalResult) -> str:
    side = "Right" if result.laterality is Laterality.RIGHT else "Left"
    label = "ABNORMAL" if result.label is Normality.ABNORMAL else "NORMAL"
    return (
        f"{side} oblique: foraminal stenosis {label}, p = {rounded_probability(result.probability):.3f} "
        f"(operating point {rounded_probability(result.operating_point):.3f})"
    )


def summary_lines(result: LumbarResult | CervicalResult) -> list[str]:
    """What was found (and not found), one line each, as shown top-left and stated in the SR."""
    if isinstance(result, CervicalResult):
        return [cervical_text(result)]
    lines: list[str] = []
    thr = f"{result.listhesis_threshold_percent:g}"
    if result.view is LumbarView.AP:
        lines.append("AP view: vertebrae only, spondylolisthesis not assessed")
    else:
        measured = [lv for lv in result.levels if lv.status is LevelStatus.MEASURED]
        graded = [lv for lv in measured if lv.grade is not MeyerdingGrade.NONE]
        if graded:
            lines.extend(level_text(lv) for lv in graded)
        elif measured:
            lines.append(f"No spondylolisthesis >= {thr} % at the measured levels")
        else:
            lines.append("Spondylolisthesis not assessed: no level could be measured")
        lines.extend(level_text(lv) for lv in result.levels if lv.status is LevelStatus.NOT_MEASURED)
        lines.extend(level_text(lv) for lv in result.levels if lv.status is LevelStatus.MISSING)
    if result.missing:
        lines.append("Not detected: " + ", ".join(v.value for v in result.missing))
    return lines


def slip_points(upper: VertebraSegment, lower: VertebraSegment) -> np.ndarray:
    """The three corners the slip is computed from, ``(3, 2)``: the upper vertebra's
    inferior-posterior corner, the lower vertebra's superior-posterior and superior-anterior corners
    (see :func:`cdss.analysis.geometry.slip`)."""
    return np.array(
        [
            upper.corners[CORNER_INFERIOR_POSTERIOR],
            lower.corners[CORNER_SUPERIOR_POSTERIOR],
            lower.corners[CORNER_SUPERIOR_ANTERIOR],
        ],
        dtype=float,
    )


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def _box_at(
    x: float, y_centre: float, text: str, h: float, shape: tuple[int, int], *, right_aligned: bool
) -> tuple[float, float, float, float]:
    width = len(text) * _char_width(h)
    rows, cols = shape
    x0 = x - width if right_aligned else x
    x0 = min(max(x0, 1.0), max(cols - 2.0 - width, 1.0))
    y0 = min(max(y_centre - h / 2.0, 1.0), max(rows - 2.0 - h, 1.0))
    return (x0, y0, min(x0 + width, cols - 1.0), min(y0 + h, rows - 1.0))


TrackingUid = Callable[..., str]


def build_overlay(
    result: LumbarResult | CervicalResult,
    *,
    header: list[str],
    vertebra_uid: Callable[[Vertebra], str],
    level_uid: Callable[[Vertebra, Vertebra], str],
    finding_uid: Callable[[str], str],
) -> Overlay:
    """The overlay of ``result``.

    Parameters
    ----------
    result
        Lumbar or cervical result.
    header
        Identification/caution lines written top-left before the summary.
    vertebra_uid, level_uid, finding_uid
        Tracking UID factories (the ones the SEG and SR use, see
        :class:`cdss.encode.common.EncodeContext`).
    """
    shape = (int(result.image_shape[0]), int(result.image_shape[1]))
    ov = Overlay(shape=shape)
    h = text_height(shape)
    if isinstance(result, LumbarResult):
        _lumbar(ov, result, h, vertebra_uid, level_uid)
    else:
        _cervical(ov, result, h, finding_uid)
    y = h * 0.5
    for line in [*header, *summary_lines(result)]:
        box = (h * 0.5, y, h * 0.5 + len(line) * _char_width(h), y + h)
        box = (box[0], box[1], min(box[2], shape[1] - 1.0), min(box[3], shape[0] - 1.0))
        ov.labels.append(TextLabel(line, box, "AI_INFO"))
        y += h * 1.35
    return ov


def _lumbar(
    ov: Overlay,
    result: LumbarResult,
    h: float,
    vertebra_uid: Callable[[Vertebra], str],
    level_uid: Callable[[Vertebra, Vertebra], str],
) -> None:
    found = {s.label: s for s in result.vertebrae}
    for seg in result.vertebrae:
        tid, tuid = f"{seg.label.value} vertebra", vertebra_uid(seg.label)
        ov.graphics.append(Graphic("polyline", _closed(seg.outline), "AI_VERTEBRAE", tid, tuid))
        corners = np.asarray(seg.corners, dtype=float)
        centre = corners.mean(axis=0)
        if result.view is LumbarView.LATERAL:
            anterior = _unit(
                (corners[CORNER_SUPERIOR_ANTERIOR] + corners[CORNER_INFERIOR_ANTERIOR]) / 2.0
                - (corners[CORNER_SUPERIOR_POSTERIOR] + corners[CORNER_INFERIOR_POSTERIOR]) / 2.0
            )
        else:
            anterior = np.array([1.0, 0.0])  # AP: labels to the image right of each body
        half = float(np.max(np.abs((corners - centre) @ anterior)))
        at = centre + anterior * (half + h * 0.6)
        box = _box_at(float(at[0]), float(at[1]), seg.label.value, h, ov.shape, right_aligned=anterior[0] < 0)
        ov.labels.append(TextLabel(seg.label.value, box, "AI_VERTEBRAE", None, tid, tuid))
    if result.view is not LumbarView.LATERAL:
        return
    for level in result.levels:
        measured = level.status is LevelStatus.MEASURED and level.slip_percent is not None
        if not measured and level.status is not LevelStatus.NOT_MEASURED:
            continue  # MISSING: nothing to draw, the summary lines say which vertebra is missing
        upper, lower = found.get(level.upper), found.get(level.lower)
        if upper is None or lower is None:
            continue
        layer = "AI_FINDING" if measured and level.grade is not MeyerdingGrade.NONE else "AI_MEASURE"
        tid, tuid = f"{level.name} spondylolisthesis", level_uid(level.upper, level.lower)
        uip, lps, las = slip_points(upper, lower)
        axis = _unit(las - lps)
        if measured:
            # The construction the slip is measured with: both endplate lines and the
            # perpendicular from the slipped corner; NOT_MEASURED levels show only their corners.
            uia = np.asarray(upper.corners[CORNER_INFERIOR_ANTERIOR], dtype=float)
            foot = lps + axis * float(np.dot(uip - lps, axis))  # projection of uip on the endplate line
            ov.graphics.append(Graphic("polyline", np.array([lps, las]), layer, tid, tuid))
            ov.graphics.append(Graphic("polyline", np.array([uia, uip]), layer, tid, tuid))
            ov.graphics.append(Graphic("polyline", np.array([uip, foot]), layer, tid, tuid))
        for p in (uip, lps, las):
            ov.graphics.append(Graphic("point", np.array([p]), layer, tid, tuid))
        posterior = -axis
        text = level_text(level)
        at = (uip + lps) / 2.0 + posterior * (h * 1.5)
        box = _box_at(float(at[0]), float(at[1]), text, h, ov.shape, right_aligned=posterior[0] < 0)
        ov.labels.append(TextLabel(text, box, layer, (float(uip[0]), float(uip[1])), tid, tuid))


def _cervical(ov: Overlay, result: CervicalResult, h: float, finding_uid: Callable[[str], str]) -> None:
    rect = roi_polygon(result)
    c0, r0 = rect[0]
    layer = "AI_FINDING" if result.label is Normality.ABNORMAL else "AI_MEASURE"
    tid = f"foraminal stenosis {result.laterality.value}"
    tuid = finding_uid(f"foraminal-stenosis-{result.laterality.value}")
    ov.graphics.append(Graphic("polyline", rect, layer, tid, tuid))
    label = "ABNORMAL" if result.label is Normality.ABNORMAL else "NORMAL"
    text = (
        f"{label} p={rounded_probability(result.probability):.3f} "
        f"(op {rounded_probability(result.operating_point):.3f})"
    )
    y = r0 - h * 0.9 if r0 - h * 1.5 > 0 else r0 + h * 0.9
    box = _box_at(float(c0), float(y), text, h, ov.shape, right_aligned=False)
    ov.labels.append(TextLabel(text, box, layer, None, tid, tuid))


def _closed(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if len(pts) and not np.allclose(pts[0], pts[-1]):
        pts = np.vstack([pts, pts[:1]])
    return pts


# ---------------------------------------------------------------------------------------------
# Reading an overlay back from a GSPS


def overlay_from_gsps(gsps: Dataset, shape: tuple[int, int]) -> Overlay:
    """The overlay stored in a Grayscale Softcopy Presentation State (PIXEL units only).

    Layer colours come from the GSPS Graphic Layer Sequence (CIE Lab) when present.
    """
    ov = Overlay(shape=shape, layers={})
    for i, layer in enumerate(gsps.get("GraphicLayerSequence", []), start=1):
        name = str(layer.GraphicLayer)
        rgb = LAYERS[name].rgb if name in LAYERS else (255, 255, 0)
        lab = layer.get("GraphicLayerRecommendedDisplayCIELabValue")
        if lab is not None:
            rgb = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
        ov.layers[name] = LayerStyle(
            name, int(layer.get("GraphicLayerOrder", i)), str(layer.get("GraphicLayerDescription", "")), rgb
        )
    for ann in gsps.get("GraphicAnnotationSequence", []):
        name = str(ann.GraphicLayer)
        if name not in ov.layers:
            ov.layers[name] = LayerStyle(name, len(ov.layers) + 1, "", (255, 255, 0))
        for go in ann.get("GraphicObjectSequence", []):
            if str(go.get("GraphicAnnotationUnits", "PIXEL")) != "PIXEL":
                continue
            pts = from_image_coordinates(np.asarray(go.GraphicData, dtype=float).reshape(-1, 2))
            gtype = str(go.GraphicType)
            kind = "point" if gtype == "POINT" else "polyline"
            ov.graphics.append(Graphic(kind, pts, name, go.get("TrackingID"), go.get("TrackingUID")))
        for to in ann.get("TextObjectSequence", []):
            if "BoundingBoxTopLeftHandCorner" in to:
                x0, y0 = (float(v) - PIXEL_CENTRE_OFFSET for v in to.BoundingBoxTopLeftHandCorner)
                x1, y1 = (float(v) - PIXEL_CENTRE_OFFSET for v in to.BoundingBoxBottomRightHandCorner)
            elif "AnchorPoint" in to:
                x0, y0 = (float(v) - PIXEL_CENTRE_OFFSET for v in to.AnchorPoint)
                x1, y1 = x0 + 1.0, y0 + text_height(shape)
            else:
                continue
            anchor = None
            if "AnchorPoint" in to and "BoundingBoxTopLeftHandCorner" in to:
                anchor = tuple(float(v) - PIXEL_CENTRE_OFFSET for v in to.AnchorPoint)
            ov.labels.append(
                TextLabel(
                    str(to.UnformattedTextValue),
                    (x0, y0, x1, y1),
                    name,
                    anchor,  # type: ignore[arg-type]
                    to.get("TrackingID"),
                    to.get("TrackingUID"),
                )
            )
    return ov
