"""The lumbar analysis: display image → YOLO segmentation → corners → slip and Meyerding grade.

Pipeline for one image (all coordinates (column, row) in the source pixel grid):

1. :func:`cdss.analysis.pixels.display_image` (bone bright, VOI, MONOCHROME1 inverted) → 8 bit;
2. aspect-preserving INTER_AREA downscale to :data:`INPUT_SIDE` (the size the training PNGs are
   stored at, :func:`cdss.analysis.imaging.resize_longest`), so inference sees the same resampling
   as training; Ultralytics then letterboxes to the model's training ``imgsz``;
3. Ultralytics segmentation with ``retina_masks=True`` (mask logits upsampled bilinearly to the
   input image before thresholding, i.e. smooth sub-pixel boundaries);
4. per class the most confident instance; an instance whose box overlaps a more confident
   instance of another class by IoU > 0.5 is dropped (one body cannot be two vertebrae);
5. the outline of each mask (largest component) mapped to source pixels, the four sides
   fitted and intersected (:mod:`cdss.analysis.lumbar.corners`);
6. (weights that ask for it) **zoom refinement**: for every adjacent pair found, a square
   crop around the two vertebrae (:data:`LEVEL_FACTOR` × their joint extent) is cut from the
   source-resolution image and segmented again (all crops of a batch in one forward pass); the
   crop's masks are matched to the two expected vertebrae by mask overlap (IoU, never by the
   crop's class labels), and the corners that level's slip uses are fitted on those finer
   outlines (:func:`cdss.analysis.lumbar.measure.segments_from_outlines`);
7. anterior side (:mod:`cdss.analysis.lumbar.orientation`), corners labelled, levels measured
   (:mod:`cdss.analysis.lumbar.measure`); missing vertebrae give missing levels.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pydicom.dataset import Dataset

from cdss.analysis._ultralytics import UltralyticsSetupError, load_yolo
from cdss.analysis.imaging import level_crop_box, resize_longest
from cdss.analysis.lumbar.corners import mask_outline, open_mask
from cdss.analysis.lumbar.measure import Found, fill_outline, measure_levels, segments_from_outlines
from cdss.analysis.lumbar.orientation import (
    AnteriorEstimate,
    anterior_from_lordosis,
    anterior_from_patient_orientation,
    anterior_from_posterior_elements,
)
from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.types import (
    LUMBAR_LEVELS,
    LumbarResult,
    LumbarView,
    ModelInfo,
    Vertebra,
    VertebraSegment,
)

__all__ = [
    "INPUT_SIDE",
    "LEVEL_FACTOR",
    "SHIPPED_WEIGHTS",
    "LumbarAnalyzer",
    "resolve_device",
    "shipped_manifest",
]

#: Longest side of the image given to the model (and of the stored training PNGs), pixels.
INPUT_SIDE = 640
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "lumbar"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "cdss-lumbar-seg.pt"
MANIFEST = WEIGHTS_DIR / "manifest.json"
_MIN_CONFIDENCE = 0.25
_DUPLICATE_IOU = 0.5
#: Side of a zoom-refinement crop, × the larger extent of the level's two vertebrae together
#: (the middle of the 1.15–1.6 range the level-crop training samples use).
LEVEL_FACTOR = 1.35
#: A crop's mask is taken as the expected vertebra when their IoU is at least this.
_MATCH_IOU = 0.5


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda:0`` when CUDA is available, else ``cpu``; other values pass through."""
    if device in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def shipped_manifest() -> dict[str, Any]:
    """The manifest of the shipped weights (name, version, sha256, training data, metrics)."""
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Prepared:
    display: np.ndarray  # float32 [0, 1], source grid
    model_input: np.ndarray  # uint8 BGR, downscaled
    scale: tuple[float, float]  # (source columns / input columns, source rows / input rows)
    offset: tuple[float, float] = (0.0, 0.0)  # source (column, row) of the input's top-left pixel


class LumbarAnalyzer:
    """Lumbar vertebra segmentation and spondylolisthesis measurement (thread-safe after :meth:`load`).

    Use :meth:`load`; the constructor takes an already loaded Ultralytics model.
    """

    def __init__(
        self,
        model: Any,
        info: ModelInfo,
        device: str,
        imgsz: int,
        threshold_percent: float = 5.0,
        spine_crop: bool = False,
        relabel: bool = True,
        level_refine: bool = False,
        level_imgsz: int | None = None,
    ) -> None:
        self._model = model
        self.torch_threads = 0  # > 0: CPU threads for inference (re-applied: Ultralytics resets them)
        self.spine_crop = spine_crop
        self.level_refine = level_refine
        self.level_imgsz = level_imgsz or imgsz
        self.level_factor = LEVEL_FACTOR
        self.level_flip = False  # also segment each level crop mirrored, average the corners
        self.flip_average = False  # also segment the final pass mirrored, average each level's corners
        self.mask_open = 0.0  # opening disc, fraction of √(mask area), before outlines (0 = off)
        self.relabel = relabel
        self.info = info
        self.device = device
        self.imgsz = imgsz
        self.threshold_percent = threshold_percent
        self._lock = threading.Lock()  # Ultralytics predictors keep per-call state

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, weights: Path | None = None, device: str = "auto", *, threshold_percent: float = 5.0
    ) -> LumbarAnalyzer:
        """Load the shipped model (``weights=None``) or any Ultralytics YOLO segmentation ``.pt``.

        Parameters
        ----------
        weights
            ``None`` for the shipped synthetic-data model, or a ``.pt`` trained with
            ``cdss train lumbar`` (or plain Ultralytics) on six classes L1 … S1.
        device
            ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        threshold_percent
            Slip magnitude below which a level is "no listhesis" (settings
            ``models.listhesis_threshold_percent``).
        """
        path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
        if weights is None and not path.exists():
            raise UltralyticsSetupError(
                f"the shipped lumbar weights {path} are missing from this installation; "
                "reinstall cdss or set models.lumbar_weights"
            )
        model = load_yolo(path)
        names = {int(k): str(v) for k, v in dict(model.names).items()}
        expected = {v.class_id: v.value for v in Vertebra}
        if names != expected:
            raise UltralyticsSetupError(
                f"{path}: model classes {names} are not the six lumbar classes {expected} "
                "(train with `cdss train lumbar`)"
            )
        resolved = resolve_device(device)
        model.to(resolved)
        ckpt = getattr(model, "ckpt", None) or {}
        train_args = ckpt.get("train_args", {}) if isinstance(ckpt, dict) else {}
        meta = ckpt.get("cdss", {}) if isinstance(ckpt, dict) else {}
        imgsz = int(meta.get("inference_imgsz") or train_args.get("imgsz", INPUT_SIDE) or INPUT_SIDE)
        spine_crop = bool(meta.get("spine_crop", False))
        level_refine = bool(meta.get("level_refine", False))
        level_imgsz = int(meta.get("level_imgsz") or imgsz)
        level_factor = float(meta.get("level_factor") or LEVEL_FACTOR)
        level_flip = bool(meta.get("level_flip", False))
        flip_average = bool(meta.get("flip_average", False))
        mask_open = float(meta.get("mask_open", 0.0))
        sha = _sha256(path)
        if weights is None:
            man = shipped_manifest()
            info = ModelInfo(
                name=man.get("name", "cdss-lumbar-seg"),
                version=man.get("version", "0"),
                weights_sha256=sha,
                architecture=man.get("architecture", "YOLO11n-seg"),
                training_data=man.get("training_data", "synthetic radiographs (cdss.synth)"),
            )
        else:
            arch = str(getattr(model.model, "yaml", {}).get("yaml_file", "") or "YOLO-seg")
            info = ModelInfo(
                name="cdss-lumbar-seg-site",
                version=sha[:12],
                weights_sha256=sha,
                architecture=Path(arch).stem or "YOLO-seg",
                training_data=f"site-trained weights {path.name}",
            )
        analyzer = cls(
            model,
            info,
            resolved,
            imgsz,
            threshold_percent,
            spine_crop=spine_crop,
            level_refine=level_refine,
            level_imgsz=level_imgsz,
        )
        analyzer.level_factor, analyzer.level_flip, analyzer.mask_open = level_factor, level_flip, mask_open
        analyzer.flip_average = flip_average
        return analyzer

    def warm_up(self) -> None:
        """Run one dummy prediction so the first real image does not pay for lazy initialisation."""
        dummy = np.zeros((INPUT_SIDE, int(INPUT_SIDE * 0.8), 3), dtype=np.uint8)
        self._predict([dummy])

    # ------------------------------------------------------------------ inference
    def _predict(self, images: list[np.ndarray], imgsz: int | None = None) -> list[Any]:
        with self._lock:
            if self.torch_threads > 0 and torch.get_num_threads() != self.torch_threads:
                torch.set_num_threads(self.torch_threads)
            return list(
                self._model.predict(
                    images,
                    imgsz=imgsz or self.imgsz,
                    conf=_MIN_CONFIDENCE,
                    retina_masks=True,
                    device=self.device,
                    verbose=False,
                    batch=max(1, len(images)),
                )
            )

    @staticmethod
    def prepare(ds_or_image: Dataset | np.ndarray) -> _Prepared:
        """Display image and model input for a dataset (or an already displayed float/uint8 image)."""
        if isinstance(ds_or_image, Dataset):
            disp = display_image(ds_or_image)
        else:
            arr = np.asarray(ds_or_image)
            disp = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        small = resize_longest(to_uint8(disp), INPUT_SIDE)
        rows, cols = disp.shape
        scale = (cols / small.shape[1], rows / small.shape[0])
        return _Prepared(disp, cv2.cvtColor(small, cv2.COLOR_GRAY2BGR), scale)

    def analyse(self, ds: Dataset | np.ndarray, view: LumbarView | str = LumbarView.LATERAL) -> LumbarResult:
        """Analyse one image.

        Parameters
        ----------
        ds
            The DICOM dataset (or a display image, float [0, 1] or uint8, ``(rows, columns)``).
        view
            ``lateral`` or ``ap``.
        """
        return self.analyse_batch([(ds, view)])[0]

    def analyse_batch(self, items: list[tuple[Dataset | np.ndarray, LumbarView | str]]) -> list[LumbarResult]:
        """Analyse several images with one batched forward pass (evaluation and benchmarks)."""
        prepared = [self.prepare(ds) for ds, _ in items]
        predictions = self._predict([p.model_input for p in prepared]) if prepared else []
        if self.spine_crop and prepared:
            # second pass on a crop around the spine: the scale the spine-crop model was trained at
            crops = [self._crop_around_spine(p, pred) for p, pred in zip(prepared, predictions, strict=True)]
            todo = [i for i, c in enumerate(crops) if c is not None]
            if todo:
                again = self._predict([crops[i].model_input for i in todo])  # type: ignore[union-attr]
                for i, pred in zip(todo, again, strict=True):
                    prepared[i], predictions[i] = crops[i], pred  # type: ignore[assignment]
        found = [self._found(pred, prep) for prep, pred in zip(prepared, predictions, strict=True)]
        refined: list[dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]] | None] = [
            None
        ] * len(items)
        how = ""
        if self.level_refine and found:
            refined = list(self.refine_levels([p.display for p in prepared], found))
            how = "zoom refinement: {} level(s) measured on zoomed crops"
        elif self.flip_average and found:
            refined = list(self._flip_pairs(prepared, found))
            how = "flip averaging: {} level(s) measured as the mean of the image and its mirror"
        return [
            self._postprocess(ds, LumbarView(view), prep, f, r, how)
            for (ds, view), prep, f, r in zip(items, prepared, found, refined, strict=True)
        ]

    def _flip_pairs(
        self, prepared: list[_Prepared], found: list[list[Found]]
    ) -> list[dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]]]:
        """Segment every final-pass input mirrored left↔right; pair each level's outlines.

        Returns, per image, ``(upper, lower)`` → ``[(upper, lower) outlines of the pass,
        (upper, lower) outlines of the mirrored pass]`` (source px) for the levels whose two
        vertebrae both passes found (same label, centroids within a quarter of the body's
        size). :func:`~cdss.analysis.lumbar.measure.segments_from_outlines` then measures each
        such level on the mean of the two corner fits — the mask boundary's errors of the two
        passes partly cancel.
        """
        inputs = [np.ascontiguousarray(p.model_input[:, ::-1]) for p in prepared]
        preds = self._predict(inputs)
        results: list[dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]]] = []
        for prep, pred, fs in zip(prepared, preds, found, strict=True):
            mirrored = {f.label: f for f in self._found(pred, prep, mirrored=True)}
            pairs: dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]] = {}
            by_label = {f.label: f for f in fs}

            agree = set()
            for label, f in by_label.items():
                if label in mirrored:
                    a, b = f.outline, mirrored[label].outline
                    size = float(np.max(a.max(axis=0) - a.min(axis=0)))
                    if float(np.hypot(*(a.mean(axis=0) - b.mean(axis=0)))) <= 0.25 * size:
                        agree.add(label)
            for upper, lower in LUMBAR_LEVELS:
                if upper in agree and lower in agree:
                    pairs[(upper, lower)] = [
                        (by_label[upper].outline, by_label[lower].outline),
                        (mirrored[upper].outline, mirrored[lower].outline),
                    ]
            results.append(pairs)
        return results

    # ------------------------------------------------------------------ zoom refinement
    def refine_levels(
        self, displays: list[np.ndarray], found: list[list[Found]]
    ) -> list[dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]]]:
        """Segment a zoomed crop around every level found; return each level's two finer outlines.

        The crop is a square of ``level_factor`` (default :data:`LEVEL_FACTOR`) × the joint extent
        of the two vertebrae, cut from the source-resolution image and resized to ``level_imgsz``.

        Parameters
        ----------
        displays
            Per image, the display image (float [0, 1], source grid).
        found
            Per image, the vertebrae found by the whole-image / spine passes (source px outlines).

        Returns
        -------
        list of dict
            Per image, ``(upper, lower)`` → the two outlines (source (column, row) px) segmented
            on the crop (a list: one pair for the crop, one more for its mirror image when
            ``level_flip`` is set), for the levels whose two vertebrae were both recognised there
            (mask IoU ≥ 0.5 with the expected vertebra). Levels not in the dict keep the coarser
            outlines.
        """
        jobs: list[tuple[int, Vertebra, Vertebra, tuple[int, int], np.ndarray, np.ndarray, bool]] = []
        inputs: list[np.ndarray] = []
        side_px = self.level_imgsz
        for img_idx, (disp, fs) in enumerate(zip(displays, found, strict=True)):
            by_label = {f.label: f for f in fs}
            rows, cols = disp.shape
            for upper, lower in LUMBAR_LEVELS:
                if upper not in by_label or lower not in by_label:
                    continue
                out_u, out_l = by_label[upper].outline, by_label[lower].outline
                cx, cy, side = level_crop_box(out_u, out_l, self.level_factor)
                c0 = int(np.clip(np.floor(cx - side / 2), 0, cols - 1))
                r0 = int(np.clip(np.floor(cy - side / 2), 0, rows - 1))
                c1 = int(np.clip(np.ceil(cx + side / 2), c0 + 1, cols))
                r1 = int(np.clip(np.ceil(cy + side / 2), r0 + 1, rows))
                if c1 - c0 < 16 or r1 - r0 < 16:
                    continue
                crop = to_uint8(disp[r0:r1, c0:c1])
                scale = side_px / max(r1 - r0, c1 - c0)
                size = (max(1, round((c1 - c0) * scale)), max(1, round((r1 - r0) * scale)))
                interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                small = cv2.resize(crop, size, interpolation=interp)
                # source px → crop-input px: (p - origin + 0.5) * f - 0.5 with f per axis
                fx, fy = size[0] / (c1 - c0), size[1] / (r1 - r0)
                for flip in (False, True) if self.level_flip else (False,):
                    jobs.append((img_idx, upper, lower, (c0, r0), np.array([fx, fy]), np.array(size), flip))
                    view = small[:, ::-1] if flip else small
                    inputs.append(cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_GRAY2BGR))
        results: list[dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]]] = [
            {} for _ in displays
        ]
        if not inputs:
            return results
        preds = self._predict(inputs, imgsz=side_px)
        for (img_idx, upper, lower, (c0, r0), f, size, flip), pred in zip(jobs, preds, strict=True):
            if pred.masks is None or len(pred.masks) == 0:
                continue
            masks = pred.masks.data.cpu().numpy() > 0.5
            if flip:
                masks = np.ascontiguousarray(masks[:, :, ::-1])
            by_label = {fd.label: fd for fd in found[img_idx]}
            origin = np.array([c0, r0], dtype=float)
            outlines = []
            for label in (upper, lower):
                expected_px = (by_label[label].outline - origin + 0.5) * f - 0.5
                expected = fill_outline(expected_px, (int(size[1]), int(size[0])))
                best = _best_match(masks, expected)
                if best is None:
                    break
                outline = mask_outline(open_mask(masks[best], self.mask_open))
                if len(outline) < 8:
                    break
                outlines.append((outline + 0.5) / f - 0.5 + origin)
            if len(outlines) == 2:
                results[img_idx].setdefault((upper, lower), []).append((outlines[0], outlines[1]))
        return results

    @staticmethod
    def _crop_around_spine(prep: _Prepared, pred: Any) -> _Prepared | None:
        """Model input for a square crop around everything the first pass found (``None``: too little found).

        The crop side is 1.4 × the larger extent of the union of the detected boxes (20 % margin
        each side, the middle of the margins the spine-crop training used), clipped to the image;
        it is taken from the source-resolution display image and resampled to the same pixel
        scale as the full-image input (INTER_AREA), exactly like the training crops.
        """
        if pred.boxes is None or len(pred.boxes) < 2:
            return None
        boxes = pred.boxes.xyxy.cpu().numpy().astype(float)
        sx, sy = prep.scale
        x0, y0 = boxes[:, 0].min() * sx, boxes[:, 1].min() * sy
        x1, y1 = boxes[:, 2].max() * sx, boxes[:, 3].max() * sy
        side = 1.4 * max(x1 - x0, y1 - y0)
        rows, cols = prep.display.shape
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        c0, r0 = int(max(0, np.floor(cx - side / 2))), int(max(0, np.floor(cy - side / 2)))
        c1, r1 = int(min(cols, np.ceil(cx + side / 2))), int(min(rows, np.ceil(cy + side / 2)))
        if c1 - c0 < 32 or r1 - r0 < 32:
            return None
        crop = to_uint8(prep.display[r0:r1, c0:c1])
        factor = INPUT_SIDE / max(rows, cols)
        if factor < 1.0:
            size = (max(1, round((c1 - c0) * factor)), max(1, round((r1 - r0) * factor)))
            small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        else:
            small = resize_longest(crop, INPUT_SIDE)
        scale = ((c1 - c0) / small.shape[1], (r1 - r0) / small.shape[0])
        return _Prepared(prep.display, cv2.cvtColor(small, cv2.COLOR_GRAY2BGR), scale, (float(c0), float(r0)))

    # ------------------------------------------------------------------ post-processing
    def _found(self, pred: Any, prep: _Prepared, mirrored: bool = False) -> list[Found]:
        """Labelled vertebra outlines (source px) of one prediction.

        ``mirrored``: the prediction was made on the model input mirrored left↔right; its masks
        are mirrored back before the outlines are taken (labels do not depend on the mirror).
        """
        if pred.masks is None or pred.boxes is None or len(pred.boxes) == 0:
            return []
        classes = pred.boxes.cls.cpu().numpy().astype(int)
        confs = pred.boxes.conf.cpu().numpy().astype(float)
        boxes = pred.boxes.xyxy.cpu().numpy().astype(float)
        masks = pred.masks.data.cpu().numpy() > 0.5
        if mirrored:
            masks = np.ascontiguousarray(masks[:, :, ::-1])
        labels = self._labels(classes, confs, boxes) if self.relabel else None
        if labels is None:
            best: dict[int, int] = {}
            for i, (cls_id, conf) in enumerate(zip(classes, confs, strict=True)):
                if 0 <= cls_id < len(Vertebra) and (cls_id not in best or conf > confs[best[cls_id]]):
                    best[cls_id] = i
            chosen = sorted(best.values(), key=lambda i: -confs[i])
            labels = {}
            for i in chosen:
                if all(_box_iou(boxes[i], boxes[j]) <= _DUPLICATE_IOU for j in labels):
                    labels[i] = Vertebra.from_class_id(int(classes[i]))
        sx, sy = prep.scale
        ox, oy = prep.offset
        found = []
        for i, label in labels.items():
            outline = mask_outline(open_mask(masks[i], self.mask_open))
            if len(outline) < 8:
                continue
            src = np.column_stack(
                [(outline[:, 0] + 0.5) * sx - 0.5 + ox, (outline[:, 1] + 0.5) * sy - 0.5 + oy]
            )
            found.append(Found(label, src, float(confs[i])))
        return found

    @staticmethod
    def _labels(classes: np.ndarray, confs: np.ndarray, boxes: np.ndarray) -> dict[int, Vertebra] | None:
        """Anatomical labelling: count the bodies upwards from the sacrum.

        The model's own class for the sacrum (S1) is reliable — it looks like nothing else — but
        the lumbar classes can be off by one (T12 called L1, …). All detected bodies (any
        class, duplicates removed) are chained from the most confident S1 upwards, each step
        to the nearest body whose centre lies higher and within 1.5 body sizes; the chain is
        labelled S1, L5, L4, … Bodies off the chain keep no label (missing, never guessed).
        The first step is special: with a grade III–IV slip L5 has slid forward and down the
        sacral slope, and its centre can lie *lower* than the sacrum's. There, a body the
        model itself calls L5 within reach counts too (up to one body size lower), and is
        preferred. Returns ``None`` (use the model's classes) when there is no S1 or fewer than
        3 bodies.
        """
        order = np.argsort(-confs)
        bodies: list[int] = []
        for i in order:
            if all(_box_iou(boxes[i], boxes[j]) <= _DUPLICATE_IOU for j in bodies):
                bodies.append(int(i))
        s1 = [i for i in bodies if classes[i] == Vertebra.S1.class_id]
        if not s1 or len(bodies) < 3:
            return None
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        chain = [s1[0]]
        pool = [i for i in bodies if i != s1[0]]
        lumbar_up = [Vertebra.L5, Vertebra.L4, Vertebra.L3, Vertebra.L2, Vertebra.L1]
        while len(chain) < 6 and pool:
            cur = chain[-1]
            reach = 1.5 * float(np.median([sizes[j] for j in chain[-2:]]))
            near = [j for j in pool if np.hypot(*(centres[j] - centres[cur])) <= reach]
            above = [j for j in near if centres[j, 1] < centres[cur, 1]]
            if len(chain) == 1:  # S1 → L5: a far-slipped L5 may sit lower than the sacrum's centre
                l5 = [
                    j
                    for j in near
                    if classes[j] == Vertebra.L5.class_id and centres[j, 1] < centres[cur, 1] + sizes[cur]
                ]
                if l5:
                    above = [max(l5, key=lambda j: float(confs[j]))]
            if not above:
                break
            nxt = min(above, key=lambda j: float(np.hypot(*(centres[j] - centres[cur]))))
            chain.append(nxt)
            pool.remove(nxt)
        labels = {chain[0]: Vertebra.S1}
        for idx, label in zip(chain[1:], lumbar_up, strict=False):
            labels[idx] = label
        return labels

    def _anterior(self, ds: Any, segments_found: list[Found], display: np.ndarray) -> AnteriorEstimate | None:
        est = anterior_from_patient_orientation(ds) if isinstance(ds, Dataset) else None
        if est is not None:
            return est
        return self.anatomical_anterior(segments_found, display)

    @staticmethod
    def anatomical_anterior(found: list[Found], display: np.ndarray) -> AnteriorEstimate | None:
        """Anterior side from anatomy only (lordosis, else posterior elements)."""
        lumbar = sorted((f for f in found if f.label is not Vertebra.S1), key=lambda f: f.label.class_id)
        cents, widths, heights = [], [], []
        for f in lumbar:
            rect = cv2.minAreaRect(f.outline.astype(np.float32))
            cents.append(f.outline.mean(axis=0))
            widths.append(float(max(rect[1])))
            heights.append(float(min(rect[1])))
        est = anterior_from_lordosis(cents, widths)
        if est is None:
            est = anterior_from_posterior_elements(display, cents, widths, heights)
        return est

    def _postprocess(
        self,
        ds: Any,
        view: LumbarView,
        prep: _Prepared,
        found: list[Found],
        refined: dict[tuple[Vertebra, Vertebra], list[tuple[np.ndarray, np.ndarray]]] | None = None,
        how: str = "zoom refinement: {} level(s) measured on zoomed crops",
    ) -> LumbarResult:
        shape = prep.display.shape
        notes: list[str] = []
        anterior = None
        if view is LumbarView.LATERAL:
            anterior = self._anterior(ds, found, prep.display)
            if anterior is None:
                notes.append(
                    "anterior side undetermined (no PatientOrientation, too few vertebrae); assumed right"
                )
                anterior = AnteriorEstimate("right", "default")
            else:
                notes.append(f"anterior side {anterior.side} from {anterior.method} ({anterior.detail})")
        segments: list[VertebraSegment] = segments_from_outlines(found, shape, view, anterior, refined)
        if refined is not None:
            notes.append(how.format(len(refined)))
        levels = measure_levels(segments, view, self.threshold_percent)
        missing = [v.value for v in Vertebra if v not in {s.label for s in segments}]
        if missing:
            notes.append(f"not found: {', '.join(missing)}")
        return LumbarResult(
            view=view,
            image_shape=(int(shape[0]), int(shape[1])),
            vertebrae=segments,
            levels=levels,
            model=self.info,
            listhesis_threshold_percent=self.threshold_percent,
            anterior_direction=anterior.side if anterior is not None else "",
            notes=notes,
        )


def _best_match(masks: np.ndarray, expected: np.ndarray) -> int | None:
    """Index of the mask with the highest IoU with ``expected`` (``None`` below :data:`_MATCH_IOU`)."""
    if masks.shape[1:] != expected.shape:
        return None
    exp_area = int(expected.sum())
    if exp_area == 0:
        return None
    inter = np.logical_and(masks, expected[None]).sum(axis=(1, 2))
    union = masks.sum(axis=(1, 2)) + exp_area - inter
    iou = inter / np.maximum(union, 1)
    best = int(np.argmax(iou))
    return best if iou[best] >= _MATCH_IOU else None
