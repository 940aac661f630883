"""Training data for the lumbar segmentation model: BUU-LSPINE and cdss synthetic → YOLO segmentation.

Both importers write the Ultralytics segmentation layout::

    OUT/images/{train,val}/<name>.png    8-bit grey, longest side resized to ``max_side`` (INTER_AREA)
    OUT/labels/{train,val}/<name>.txt    one line per body: ``class x1 y1 x2 y2 ...`` normalised to [0, 1]
    OUT/data.yaml                        class names: ``vertebra, sacrum`` (anatomical scheme, default)
                                         or ``L1 … S1`` (seed-000 scheme; :mod:`cdss.analysis.lumbar.classes`)
    OUT/manifest.json                    per image: source files, view, split, original size

Polygons are normalised by the *original* image size, so they stay valid under the
aspect-preserving resize (Ultralytics then letterboxes to ``imgsz`` itself).

BUU-LSPINE (seed 000, section D)
--------------------------------
The dataset has one folder per view (``AP``, ``LA``) holding ``<id>.jpg`` with ``<id>.csv``
beside it. Each CSV row is ``x1,y1,x2,y2,label``: one vertebral endplate line from point 1 to
point 2 in image pixels (``label`` is the dataset's per-row annotation flag and is not used for
segmentation). Rows come in anatomical order: L1 superior, L1 inferior, L2 superior, …,
L5 inferior and, on lateral views, S1 superior (11 rows; 10 on views without S1).

A vertebra's polygon is its superior endplate followed by its inferior endplate reversed:
``sup.p1, sup.p2, inf.p2, inf.p1`` (exactly seed 000's Figure 2). S1 has only its superior
endplate in BUU-LSPINE. We close it as a quadrilateral extended caudally — perpendicular to the
endplate, away from L5 — by :data:`S1_EXTENSION` (0.5) of the endplate width. Only S1's two
superior corners are used by the slip measurement, so the invented caudal edge carries no
measurement; it only gives the model a body-sized region to segment.

cdss synthetic
--------------
Every ``<name>.json`` written by ``cdss fixtures generate`` (``generator`` ``cdss.synth`` —
family A — or ``cdss.synth.family_b``) with ``<name>.dcm`` beside it. The image is the DICOM rendered with
:func:`cdss.analysis.pixels.display_image` (bone bright, VOI applied, MONOCHROME1 inverted) and
scaled to 8 bits — the same function the analysis uses at inference. Each vertebra's polygon is
its ground-truth ``outline`` (or its four ``corners`` when no outline is given). The thoracic
bodies above L1 (``T12``, ``T11``: family A lists them under ``thoracic``, family B under
``vertebrae``) are labelled too when at least :data:`THORACIC_MIN_VISIBLE` of them is in the
image: in the anatomical scheme every body is a ``vertebra``, so the model learns what a
vertebral body looks like rather than which one it is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom

from cdss.analysis.imaging import level_crop_box, resize_longest
from cdss.analysis.lumbar.classes import LEVEL_CLASSES, ClassScheme
from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.types import Vertebra

__all__ = [
    "CLASS_NAMES",
    "LEVEL_PAIRS",
    "S1_EXTENSION",
    "DatasetError",
    "EndplateRow",
    "LabelledImage",
    "buu_polygons",
    "clip_polygon",
    "iter_buu",
    "iter_synthetic",
    "level_crop_box",
    "read_buu_csv",
    "resize_longest",
    "split_names",
    "write_yolo_dataset",
]

#: Class names of the seed-000 scheme (kept for callers of the 2.x API; see :class:`ClassScheme`).
CLASS_NAMES: list[str] = list(LEVEL_CLASSES)
#: Generators whose ground truth :func:`iter_synthetic` reads (the two synthetic families).
SYNTHETIC_GENERATORS = {"cdss.synth": "A", "cdss.synth.family_b": "B"}
#: Thoracic bodies (above L1) labelled as vertebrae when at least this share is in the image.
THORACIC_MIN_VISIBLE = 0.25
#: Caudal extension of the S1 quadrilateral built from BUU's single S1 endplate, fraction of its width.
S1_EXTENSION = 0.5
_VIEW_FOLDERS = {"ap": "ap", "la": "lateral", "lat": "lateral", "lateral": "lateral", "ll": "lateral"}


class DatasetError(ValueError):
    """A training dataset is malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class EndplateRow:
    """One BUU-LSPINE CSV row: an endplate line from ``p1`` to ``p2`` (column, row pixels)."""

    p1: tuple[float, float]
    p2: tuple[float, float]
    label: str


@dataclass
class LabelledImage:
    """An image with vertebra polygons in its own (column, row) pixel grid."""

    name: str
    view: str  # "lateral" or "ap"
    load: object  # zero-argument callable returning a uint8 (rows, columns) image
    shape: tuple[int, int]  # (rows, columns) of the original image
    polygons: dict[str, np.ndarray]  # "L1" … "L5", "S1" (Vertebra values) and "T12", "T11"
    source: str
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- BUU-LSPINE
def read_buu_csv(path: Path) -> list[EndplateRow]:
    """Parse a BUU-LSPINE annotation CSV (rows ``x1,y1,x2,y2,label``; a header line is tolerated).

    Raises
    ------
    DatasetError
        A row without four numeric coordinates.
    """
    rows: list[EndplateRow] = []
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(2048)
        fh.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t ") if sample.strip() else csv.excel
        for lineno, rec in enumerate(csv.reader(fh, dialect), start=1):
            values = [v.strip() for v in rec if v.strip() != ""]
            if not values:
                continue
            try:
                x1, y1, x2, y2 = (float(v) for v in values[:4])
            except ValueError as exc:
                if lineno == 1:  # header
                    continue
                raise DatasetError(f"{path}:{lineno}: expected x1,y1,x2,y2,label, got {rec!r}") from exc
            if len(values) < 4:
                raise DatasetError(f"{path}:{lineno}: expected x1,y1,x2,y2,label, got {rec!r}")
            rows.append(EndplateRow((x1, y1), (x2, y2), values[4] if len(values) > 4 else ""))
    return rows


def buu_polygons(rows: list[EndplateRow]) -> dict[Vertebra, np.ndarray]:
    """Vertebra polygons from BUU endplate rows (seed 000, section D).

    Parameters
    ----------
    rows
        10 rows (L1…L5 superior/inferior) or 11 rows (plus S1 superior), anatomical order.

    Returns
    -------
    dict
        Vertebra → ``(4, 2)`` polygon (column, row): ``sup.p1, sup.p2, inf.p2, inf.p1``; S1 is
        closed caudally by :data:`S1_EXTENSION` × its endplate width.
    """
    if len(rows) not in (10, 11):
        raise DatasetError(
            f"expected 10 or 11 endplate rows (L1…L5 superior/inferior [+ S1 superior]), got {len(rows)}"
        )
    polys: dict[Vertebra, np.ndarray] = {}
    lumbar = [Vertebra.L1, Vertebra.L2, Vertebra.L3, Vertebra.L4, Vertebra.L5]
    for k, vert in enumerate(lumbar):
        sup, inf = rows[2 * k], rows[2 * k + 1]
        polys[vert] = np.array([sup.p1, sup.p2, inf.p2, inf.p1], dtype=float)
    if len(rows) == 11:
        s = rows[10]
        p1, p2 = np.array(s.p1, dtype=float), np.array(s.p2, dtype=float)
        axis = p2 - p1
        width = float(np.hypot(*axis))
        if width < 1e-6:
            raise DatasetError("S1 superior endplate has zero length")
        normal = np.array([-axis[1], axis[0]]) / width
        l5_centre = polys[Vertebra.L5].mean(axis=0)
        if float(np.dot(normal, (p1 + p2) / 2 - l5_centre)) < 0:  # point away from L5 (caudally)
            normal = -normal
        ext = normal * S1_EXTENSION * width
        polys[Vertebra.S1] = np.array([p1, p2, p2 + ext, p1 + ext], dtype=float)
    return polys


def _view_of(path: Path) -> str:
    for part in reversed(path.parts[:-1]):
        view = _VIEW_FOLDERS.get(part.lower())
        if view:
            return view
    return "lateral"


def iter_buu(root: Path) -> Iterator[LabelledImage]:
    """Every ``<id>.jpg``/``.png`` with ``<id>.csv`` beside it under ``root`` (``AP``/``LA`` folders).

    The view comes from the nearest folder named ``AP`` or ``LA``/``LAT``/``lateral``
    (default lateral).
    """
    root = Path(root)
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not images:
        raise DatasetError(f"no BUU-LSPINE images (*.jpg with a .csv beside them) under {root}")
    for image in images:
        csv_path = image.with_suffix(".csv")
        if not csv_path.exists():
            continue
        polys = buu_polygons(read_buu_csv(csv_path))
        header = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
        if header is None:
            raise DatasetError(f"{image}: not a readable image")
        view = _view_of(image.relative_to(root))
        name = "_".join(image.relative_to(root).with_suffix("").parts)

        def load(p: Path = image) -> np.ndarray:
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DatasetError(f"{p}: not a readable image")
            return img

        yield LabelledImage(
            name=name,
            view=view,
            load=load,
            shape=(int(header.shape[0]), int(header.shape[1])),
            polygons={v.value: poly for v, poly in polys.items()},
            source=str(image),
        )


# --------------------------------------------------------------------------- synthetic
def iter_synthetic(
    root: Path, kinds: Iterable[str] = ("lumbar_lateral", "lumbar_ap")
) -> Iterator[LabelledImage]:
    """Every cdss synthetic image (``<name>.json`` + ``<name>.dcm``) of the given kinds under ``root``."""
    wanted = set(kinds)
    found = False
    for js in sorted(Path(root).rglob("*.json")):
        try:
            gt = json.loads(js.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if (
            not isinstance(gt, dict)
            or gt.get("generator") not in SYNTHETIC_GENERATORS
            or gt.get("kind") not in wanted
        ):
            continue
        dcm = js.with_suffix(".dcm")
        if not dcm.exists():
            raise DatasetError(f"{js}: ground truth without its image {dcm.name}")
        found = True
        polys: dict[str, np.ndarray] = {}
        bodies = {**(gt.get("thoracic") or {}), **(gt.get("vertebrae") or {})}
        for key, item in bodies.items():
            if key not in LEVEL_CLASSES and key not in ("T12", "T11"):
                continue
            if key in ("T12", "T11") and float(item.get("visible_fraction", 1.0)) < THORACIC_MIN_VISIBLE:
                continue
            pts = item.get("outline") or item.get("corners")
            if pts and len(pts) >= 3:
                polys[key] = np.asarray(pts, dtype=float)
        view = "ap" if gt["kind"] == "lumbar_ap" else "lateral"

        def load(p: Path = dcm) -> np.ndarray:
            return to_uint8(display_image(pydicom.dcmread(p)))

        shape = (int(gt["image"]["rows"]), int(gt["image"]["columns"]))
        rel = js.relative_to(root).with_suffix("")
        yield LabelledImage(
            name="_".join(rel.parts),
            view=view,
            load=load,
            shape=shape,
            polygons=polys,
            source=str(dcm),
            extra={
                "variant": gt.get("variant", "standard"),
                "family": SYNTHETIC_GENERATORS[gt["generator"]],
                "seed": gt.get("seed"),
                "index": gt.get("index"),
            },
        )
    if not found:
        raise DatasetError(f"no cdss synthetic lumbar images (<name>.json + <name>.dcm) under {root}")


# --------------------------------------------------------------------------- writing
def split_names(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """Names assigned to the validation split: a seeded shuffle, ``round(val_fraction × n)`` of them (≥ 1 when n ≥ 2)."""
    order = sorted(names)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n_val = round(val_fraction * len(order))
    if val_fraction > 0 and len(order) >= 2:
        n_val = max(1, n_val)
    return set(order[:n_val])


def _label_lines(
    polys: dict[str, np.ndarray], shape: tuple[int, int], scheme: ClassScheme = ClassScheme.ANATOMICAL
) -> list[str]:
    """YOLO segmentation label lines of ``polys`` on an image of ``shape`` (rows, columns).

    Polygons are clipped to the image (Sutherland–Hodgman); a body with less than
    :data:`MIN_VISIBLE` of its area inside is left out. ``scheme`` maps names to class ids:
    anatomical (S1 → sacrum, every other body → vertebra) or levels (L1 … S1; thoracic bodies
    are not labelled).
    """
    rows, cols = shape
    box = (-0.5, -0.5, cols - 0.5, rows - 0.5)
    lines = []
    for name in sorted(polys, key=_name_order):
        if scheme is ClassScheme.ANATOMICAL:
            class_id = 1 if name == Vertebra.S1.value else 0
        elif name in LEVEL_CLASSES:
            class_id = LEVEL_CLASSES.index(name)
        else:
            continue
        full = np.asarray(polys[name], dtype=float)
        pts = clip_polygon(full, box)
        if len(pts) < 3 or _polygon_area(pts) < MIN_VISIBLE * max(_polygon_area(full), 1e-9):
            continue
        # pixel centres → normalised image coordinates (edges at 0 and 1)
        x = np.clip((pts[:, 0] + 0.5) / cols, 0.0, 1.0)
        y = np.clip((pts[:, 1] + 0.5) / rows, 0.0, 1.0)
        coords = " ".join(f"{a:.6f} {b:.6f}" for a, b in zip(x, y, strict=True))
        lines.append(f"{class_id} {coords}")
    return lines


_ORDER = ("T11", "T12", *LEVEL_CLASSES)


def _name_order(name: str) -> int:
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


def _spine_crop(
    image: np.ndarray,
    polys: dict[str, np.ndarray],
    rng: np.random.Generator,
    margin: tuple[float, float],
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
    """A square crop containing every lumbar polygon, with a random margin and position."""
    rows, cols = image.shape[:2]
    allpts = np.vstack([p for n, p in polys.items() if n in LEVEL_CLASSES] or list(polys.values()))
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    extent = hi - lo
    side = float(max(extent)) * (1.0 + rng.uniform(*margin))
    side = min(side, float(max(rows, cols)))
    x0 = lo[0] - rng.uniform(0.0, max(side - extent[0], 0.0))
    y0 = lo[1] - rng.uniform(0.0, max(side - extent[1], 0.0))
    c0 = int(np.clip(np.floor(x0), 0, max(cols - 1, 0)))
    r0 = int(np.clip(np.floor(y0), 0, max(rows - 1, 0)))
    c1 = int(np.clip(np.ceil(x0 + side), c0 + 1, cols))
    r1 = int(np.clip(np.ceil(y0 + side), r0 + 1, rows))
    crop = image[r0:r1, c0:c1]
    shifted = {v: p - np.array([c0, r0], dtype=float) for v, p in polys.items()}
    return crop, shifted, (r1 - r0, c1 - c0)


def clip_polygon(poly: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Clip a polygon to an axis-aligned box (Sutherland–Hodgman).

    Parameters
    ----------
    poly
        ``(N, 2)`` (column, row) vertices.
    box
        ``(x0, y0, x1, y1)`` in the same coordinates.

    Returns
    -------
    numpy.ndarray
        ``(M, 2)`` vertices of the part inside the box (``M = 0`` when nothing is inside).
    """
    pts = [tuple(p) for p in np.asarray(poly, dtype=float).reshape(-1, 2)]
    x0, y0, x1, y1 = box
    edges = [
        (lambda p: p[0] >= x0, lambda a, b: _cut(a, b, 0, x0)),
        (lambda p: p[0] <= x1, lambda a, b: _cut(a, b, 0, x1)),
        (lambda p: p[1] >= y0, lambda a, b: _cut(a, b, 1, y0)),
        (lambda p: p[1] <= y1, lambda a, b: _cut(a, b, 1, y1)),
    ]
    for inside, cut in edges:
        if not pts:
            break
        result = []
        prev = pts[-1]
        for cur in pts:
            if inside(cur):
                if not inside(prev):
                    result.append(cut(prev, cur))
                result.append(cur)
            elif inside(prev):
                result.append(cut(prev, cur))
            prev = cur
        pts = result
    return np.asarray(pts, dtype=float).reshape(-1, 2)


def _cut(a: tuple[float, float], b: tuple[float, float], axis: int, value: float) -> tuple[float, float]:
    t = (value - a[axis]) / (b[axis] - a[axis])
    return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))


def _polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


#: Adjacent pairs measured as levels, and how often a level crop is centred on each.
LEVEL_PAIRS: list[tuple[Vertebra, Vertebra]] = [
    (Vertebra.L1, Vertebra.L2),
    (Vertebra.L2, Vertebra.L3),
    (Vertebra.L3, Vertebra.L4),
    (Vertebra.L4, Vertebra.L5),
    (Vertebra.L5, Vertebra.S1),
]
_LEVEL_WEIGHTS = np.array([0.15, 0.15, 0.2, 0.25, 0.25])
#: A partly visible vertebra in a level crop is labelled when this share of its area is inside.
MIN_VISIBLE = 0.2


def _level_crop(
    image: np.ndarray,
    polys: dict[str, np.ndarray],
    pair: tuple[Vertebra, Vertebra],
    rng: np.random.Generator,
    factor: tuple[float, float],
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
    """A square crop around one level (two adjacent vertebrae, neighbours partly visible)."""
    rows, cols = image.shape[:2]
    cx, cy, side = level_crop_box(
        polys[pair[0]], polys[pair[1]], float(rng.uniform(*factor)), tuple(rng.uniform(-0.08, 0.08, 2))
    )
    c0 = int(np.clip(np.floor(cx - side / 2), 0, max(cols - 1, 0)))
    r0 = int(np.clip(np.floor(cy - side / 2), 0, max(rows - 1, 0)))
    c1 = int(np.clip(np.ceil(cx + side / 2), c0 + 1, cols))
    r1 = int(np.clip(np.ceil(cy + side / 2), r0 + 1, rows))
    box = (float(c0) - 0.5, float(r0) - 0.5, float(c1) - 0.5, float(r1) - 0.5)  # pixel edges
    shifted: dict[str, np.ndarray] = {}
    for vert, poly in polys.items():
        clipped = clip_polygon(poly, box)
        if len(clipped) >= 3 and _polygon_area(clipped) >= MIN_VISIBLE * _polygon_area(np.asarray(poly)):
            shifted[vert] = clipped - np.array([c0, r0], dtype=float)
    return image[r0:r1, c0:c1], shifted, (r1 - r0, c1 - c0)


def write_yolo_dataset(
    items: Iterable[LabelledImage],
    out: Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_side: int = 640,
    spine_crops: bool = False,
    crop_margin: tuple[float, float] = (0.1, 0.5),
    full_fraction: float = 0.15,
    level_crops: int = 0,
    level_factor: tuple[float, float] = (1.15, 1.6),
    level_max_side: int = 640,
    progress: object | None = None,
    scheme: ClassScheme = ClassScheme.ANATOMICAL,
) -> Path:
    """Write ``items`` as an Ultralytics segmentation dataset under ``out``; return ``out/data.yaml``.

    Parameters
    ----------
    items
        Labelled images (from :func:`iter_buu` or :func:`iter_synthetic`).
    out
        Output directory (created; existing files of the same names are overwritten).
    val_fraction
        Fraction of images in the validation split (seeded by ``seed``); 0 puts everything in
        ``train`` and ``val`` points at ``train``; 1 puts everything in ``val``.
    max_side
        Longest side of the stored PNGs, pixels.
    spine_crops
        Store *training* images as square crops around the annotated vertebrae (plus a random
        margin of ``crop_margin`` × the spine's extent, random position), at the pixel scale of
        the ``max_side`` image: the model then trains at a small ``imgsz`` yet sees vertebrae
        at the size the analysis gives them (see ``docs/models/lumbar.md``). A
        ``full_fraction`` of training images stays whole; validation images always stay whole.
    level_crops
        Per training image, this many *additional* samples ``<name>_lv<k>.png``: square crops
        around one level (two adjacent vertebrae, chosen at random, lower levels more often)
        of ``level_factor`` × their joint extent, centre jittered by ±8 %, taken at the
        source resolution and stored with a longest side of at most ``level_max_side``. The
        analysis' zoom refinement runs the model on such crops. Vertebrae cut by the crop are
        clipped (Sutherland–Hodgman) and labelled when at least :data:`MIN_VISIBLE` of their
        area is inside.
    progress
        Optional callable ``progress(done: int)`` called after each image.
    scheme
        Class scheme of the labels (:class:`~cdss.analysis.lumbar.classes.ClassScheme`):
        anatomical (``vertebra``, ``sacrum``; the default) or the seed-000 levels L1 … S1.
    """
    out = Path(out)
    items = list(items)
    if not items:
        raise DatasetError("no images to write")
    val = (
        split_names([i.name for i in items], val_fraction, seed)
        if val_fraction < 1
        else {i.name for i in items}
    )
    manifest = []
    crop_rng = np.random.default_rng([seed, 7])
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for done, item in enumerate(items, start=1):
        split = "val" if item.name in val else "train"
        image = source = item.load()  # type: ignore[operator]
        if image.shape[:2] != tuple(item.shape):
            raise DatasetError(f"{item.source}: image is {image.shape[:2]}, annotations expect {item.shape}")
        polys, shape = item.polygons, item.shape
        scale = min(1.0, max_side / max(shape))
        if spine_crops and split == "train" and polys and crop_rng.random() >= full_fraction:
            image, polys, shape = _spine_crop(image, polys, crop_rng, crop_margin)
            size = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))
            stored = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        else:
            stored = resize_longest(image, max_side)
        cv2.imwrite(str(out / "images" / split / f"{item.name}.png"), stored)
        (out / "labels" / split / f"{item.name}.txt").write_text(
            "\n".join(_label_lines(polys, shape, scheme)) + "\n", encoding="utf-8"
        )
        manifest.append(
            {
                "name": item.name,
                "split": split,
                "view": item.view,
                "source": item.source,
                "shape": list(item.shape),
                **item.extra,
            }
        )
        pairs = [i for i, (u, lo) in enumerate(LEVEL_PAIRS) if u in item.polygons and lo in item.polygons]
        if level_crops > 0 and split == "train" and pairs:
            weights = _LEVEL_WEIGHTS[pairs] / _LEVEL_WEIGHTS[pairs].sum()
            chosen = crop_rng.choice(pairs, size=min(level_crops, len(pairs)), replace=False, p=weights)
            for k, idx in enumerate(chosen):
                crop, cpolys, cshape = _level_crop(
                    source, item.polygons, LEVEL_PAIRS[int(idx)], crop_rng, level_factor
                )
                name = f"{item.name}_lv{k}"
                cv2.imwrite(str(out / "images" / split / f"{name}.png"), resize_longest(crop, level_max_side))
                (out / "labels" / split / f"{name}.txt").write_text(
                    "\n".join(_label_lines(cpolys, cshape, scheme)) + "\n", encoding="utf-8"
                )
                upper, lower = LEVEL_PAIRS[int(idx)]
                manifest.append(
                    {
                        "name": name,
                        "split": split,
                        "view": item.view,
                        "source": item.source,
                        "shape": list(item.shape),
                        "crop": f"level {upper.value}-{lower.value}",
                        **item.extra,
                    }
                )
        if progress is not None:
            progress(done)  # type: ignore[operator]
    has_train = any(m["split"] == "train" for m in manifest)
    has_val = any(m["split"] == "val" for m in manifest)
    yaml_lines = [
        f"path: {out.resolve()}",
        f"train: images/{'train' if has_train else 'val'}",
        f"val: images/{'val' if has_val else 'train'}",
        "names:",
        *[f"  {i}: {n}" for i, n in enumerate(scheme.names)],
    ]
    (out / "data.yaml").write_text("\n".join(yaml_lines) + "\n", encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out / "data.yaml"
