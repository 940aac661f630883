"""The lumbar analysis: display image → YOLO segmentation → bodies named from anatomy → corners → slip.

Pipeline for one image (all coordinates (column, row) in the source pixel grid):

1. :func:`cdss.analysis.pixels.display_image` (bone bright, VOI, MONOCHROME1 inverted) → 8 bit;
   aspect-preserving INTER_AREA downscale to :data:`INPUT_SIDE` (the size of the stored
   training PNGs, :func:`cdss.analysis.imaging.resize_longest`);
2. Ultralytics segmentation with ``retina_masks=True``; with ``spine_crop`` a second pass on a
   square crop around everything the first pass found, at the same pixel scale;
3. every detection is a *candidate body* (class ``vertebra`` or ``sacrum``; seed-000 weights:
   L1…L5 count as vertebra, S1 as sacrum — :mod:`cdss.analysis.lumbar.classes`); overlapping
   detections of one body are merged;
4. **names from anatomy** (:mod:`cdss.analysis.lumbar.chain`): the bodies are chained from the
   sacrum upwards and counted (S1, L5 … L1, T12); a gap, an implausible spacing or shape stops
   or flags the chain — never a silent shift of names;
5. (``flip_average``) the same on the mirrored crop; each vertebra found by both passes is
   measured on the mean of the two corner fits (:mod:`cdss.analysis.lumbar.corners`);
6. (``edge_refine``) each vertebra's sides are moved onto the edges of the source-resolution
   image (:mod:`cdss.analysis.lumbar.refine`);
7. anterior side (:mod:`cdss.analysis.lumbar.orientation`), levels measured
   (:mod:`cdss.analysis.lumbar.measure`), then every level gets a confidence and is reported
   *not measured* with the reason when a check fails (:mod:`cdss.analysis.lumbar.quality`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pydicom.dataset import Dataset

from cdss.analysis._ultralytics import UltralyticsSetupError, load_yolo
from cdss.analysis.geometry import slip
from cdss.analysis.imaging import resize_longest
from cdss.analysis.lumbar.chain import Body, ChainResult, body_geometry, chain_from_sacrum, dedupe
from cdss.analysis.lumbar.classes import ClassScheme, LumbarClassError, class_scheme
from cdss.analysis.lumbar.corners import mask_outline
from cdss.analysis.lumbar.measure import Found, measure_levels, quadrilateral_fit, segments_from_outlines
from cdss.analysis.lumbar.orientation import (
    AnteriorEstimate,
    anterior_from_lordosis,
    anterior_from_patient_orientation,
    anterior_from_posterior_elements,
)
from cdss.analysis.lumbar.quality import (
    AbstainRule,
    GradeMargin,
    LevelEvidence,
    apply_abstention,
    apply_grade_margin,
)
from cdss.analysis.lumbar.refine import refine_corners, smoothed_for_edges
from cdss.analysis.pixels import display_image, to_uint8
from cdss.analysis.types import (
    LevelMeasurement,
    LevelStatus,
    LumbarResult,
    LumbarView,
    ModelInfo,
    Vertebra,
    VertebraSegment,
)

__all__ = [
    "INPUT_SIDE",
    "SHIPPED_WEIGHTS",
    "Candidate",
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
#: A vertebra of the mirrored pass is the same body when its centre is within this × its size.
_PAIR_DISTANCE = 0.25


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


@dataclass
class Candidate:
    """One detected body before naming: outline (source px), detection confidence, sacrum or not."""

    outline: np.ndarray
    confidence: float
    sacrum: bool


@dataclass
class _Prepared:
    display: np.ndarray  # float32 [0, 1], source grid
    model_input: np.ndarray  # uint8 BGR, downscaled
    scale: tuple[float, float]  # (source columns / input columns, source rows / input rows)
    offset: tuple[float, float] = (0.0, 0.0)  # source (column, row) of the input's top-left pixel


@dataclass
class Naming:
    """The named vertebrae of one pass and how the chain went."""

    found: list[Found]
    chain: ChainResult | None
    reason: str = ""  # why nothing could be named (no sacrum)
    above_l1: list[str] = field(default_factory=list)  # T12, T11 found on the chain


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
        *,
        scheme: ClassScheme = ClassScheme.ANATOMICAL,
        spine_crop: bool = False,
        flip_average: bool = False,
        edge_refine: bool = False,
        abstain: AbstainRule | None = None,
        grade_margin: GradeMargin | None = None,
    ) -> None:
        self._model = model
        # CPU threads for inference, re-applied before every call because Ultralytics' device
        # selection resets torch to cpu_count - 1 (one thread on two cores); 0 = every core.
        self.torch_threads = 0
        self.scheme = scheme
        self.spine_crop = spine_crop
        self.flip_average = flip_average  # also segment the final pass mirrored, average the corners
        self.edge_refine = edge_refine  # move the corners onto the source image's edges
        self.abstain = abstain or AbstainRule()
        self.info = info
        self.device = device
        self.imgsz = imgsz
        self.threshold_percent = threshold_percent
        self.grade_margin = grade_margin or GradeMargin()  # no grade this close to a boundary (quality.py)
        self._lock = threading.Lock()  # Ultralytics predictors keep per-call state

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        weights: Path | None = None,
        device: str = "auto",
        *,
        threshold_percent: float = 5.0,
        grade_margin: GradeMargin | None = None,
    ) -> LumbarAnalyzer:
        """Load the shipped model (``weights=None``) or any Ultralytics YOLO segmentation ``.pt``.

        Parameters
        ----------
        weights
            ``None`` for the shipped synthetic-data model, or a ``.pt`` trained with
            ``cdss train lumbar`` (classes ``vertebra, sacrum``) or with plain Ultralytics on
            the six seed-000 classes ``L1 … L5, S1`` (e.g. on BUU-LSPINE).
        device
            ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        threshold_percent
            Slip magnitude below which a level is "no listhesis" (settings
            ``models.listhesis_threshold_percent``).
        grade_margin
            No grade is reported for a slip this close to a grade boundary (settings
            ``models.grade_margin_pp`` and ``models.grade_margin_fraction``; ``None`` = their
            defaults; :func:`~cdss.analysis.lumbar.quality.apply_grade_margin`).
        """
        path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
        if weights is None and not path.exists():
            raise UltralyticsSetupError(
                f"the shipped lumbar weights {path} are missing from this installation; "
                "reinstall cdss or set models.lumbar_weights"
            )
        model = load_yolo(path)
        names = {int(k): str(v) for k, v in dict(model.names).items()}
        try:
            scheme = class_scheme(names, path)
        except LumbarClassError as exc:
            raise UltralyticsSetupError(str(exc)) from exc
        resolved = resolve_device(device)
        model.to(resolved)
        ckpt = getattr(model, "ckpt", None) or {}
        train_args = ckpt.get("train_args", {}) if isinstance(ckpt, dict) else {}
        meta = ckpt.get("cdss", {}) if isinstance(ckpt, dict) else {}
        imgsz = int(meta.get("inference_imgsz") or train_args.get("imgsz", INPUT_SIDE) or INPUT_SIDE)
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
        return cls(
            model,
            info,
            resolved,
            imgsz,
            threshold_percent,
            scheme=scheme,
            spine_crop=bool(meta.get("spine_crop", False)),
            flip_average=bool(meta.get("flip_average", False)),
            edge_refine=bool(meta.get("edge_refine", False)),
            abstain=AbstainRule.from_mapping(meta.get("abstain")),
            grade_margin=grade_margin,
        )

    def warm_up(self) -> None:
        """Run one dummy prediction so the first real image does not pay for lazy initialisation."""
        dummy = np.zeros((INPUT_SIDE, int(INPUT_SIDE * 0.8), 3), dtype=np.uint8)
        self._predict([dummy])

    # ------------------------------------------------------------------ inference
    def _predict(self, images: list[np.ndarray], imgsz: int | None = None) -> list[Any]:
        with self._lock:
            wanted = self.torch_threads or os.cpu_count() or 1
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)
            results = list(
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
            if torch.get_num_threads() != wanted:  # the first call selects the device and resets it
                torch.set_num_threads(wanted)
            return results

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
        """Analyse several images with batched forward passes (the queue's batches, evaluation)."""
        if not items:
            return []
        prepared = [self.prepare(ds) for ds, _ in items]
        predictions = self._predict([p.model_input for p in prepared])
        if self.spine_crop:
            # second pass on a crop around the spine: the scale the spine-crop model was trained at
            crops = [self._crop_around_spine(p, pred) for p, pred in zip(prepared, predictions, strict=True)]
            todo = [i for i, c in enumerate(crops) if c is not None]
            if todo:
                again = self._predict([crops[i].model_input for i in todo])  # type: ignore[union-attr]
                for i, pred in zip(todo, again, strict=True):
                    prepared[i], predictions[i] = crops[i], pred  # type: ignore[assignment]
        candidates = [self.candidates(pred, prep) for prep, pred in zip(prepared, predictions, strict=True)]
        mirrored: list[list[Candidate] | None] = [None] * len(items)
        if self.flip_average:
            flipped = self._predict([np.ascontiguousarray(p.model_input[:, ::-1]) for p in prepared])
            mirrored = [
                self.candidates(pred, prep, mirrored=True)
                for prep, pred in zip(prepared, flipped, strict=True)
            ]
        return [
            self._postprocess(ds, LumbarView(view), prep, c, m)
            for (ds, view), prep, c, m in zip(items, prepared, candidates, mirrored, strict=True)
        ]

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

    # ------------------------------------------------------------------ candidates and names
    def candidates(self, pred: Any, prep: _Prepared, mirrored: bool = False) -> list[Candidate]:
        """Every detected body of one prediction as a :class:`Candidate` (outline in source px).

        ``mirrored``: the prediction was made on the model input mirrored left↔right; its masks
        are mirrored back before the outlines are taken.
        """
        if pred.masks is None or pred.boxes is None or len(pred.boxes) == 0:
            return []
        classes = pred.boxes.cls.cpu().numpy().astype(int)
        confs = pred.boxes.conf.cpu().numpy().astype(float)
        masks = pred.masks.data.cpu().numpy() > 0.5
        if mirrored:
            masks = np.ascontiguousarray(masks[:, :, ::-1])
        sx, sy = prep.scale
        ox, oy = prep.offset
        out = []
        for i, cls_id in enumerate(classes):
            if not (self.scheme.is_body(int(cls_id)) or self.scheme.is_sacrum(int(cls_id))):
                continue
            outline = mask_outline(masks[i])
            if len(outline) < 8:
                continue
            src = np.column_stack(
                [(outline[:, 0] + 0.5) * sx - 0.5 + ox, (outline[:, 1] + 0.5) * sy - 0.5 + oy]
            )
            out.append(Candidate(src, float(confs[i]), self.scheme.is_sacrum(int(cls_id))))
        return out

    @staticmethod
    def name_bodies(candidates: list[Candidate]) -> Naming:
        """Name the candidate bodies by counting up from the sacrum (:mod:`~cdss.analysis.lumbar.chain`)."""
        sacra = [i for i, c in enumerate(candidates) if c.sacrum]
        if not sacra:
            return Naming([], None, "sacrum (S1) not found: the vertebrae cannot be named from anatomy")
        sacrum = max(sacra, key=lambda i: candidates[i].confidence)
        others = [i for i, c in enumerate(candidates) if not c.sacrum]
        kept = dedupe([candidates[i].outline for i in others], [candidates[i].confidence for i in others])
        bodies_idx = [others[k] for k in kept]
        # a body detection that is really the sacrum (large overlap) is not a vertebra
        keep_after_sacrum = dedupe(
            [candidates[sacrum].outline] + [candidates[i].outline for i in bodies_idx],
            [2.0] + [candidates[i].confidence for i in bodies_idx],
        )
        bodies_idx = [bodies_idx[k - 1] for k in keep_after_sacrum if k > 0]
        geometry: list[Body] = [body_geometry(c.outline) for c in candidates]
        chain = chain_from_sacrum(geometry, sacrum, bodies_idx)
        found = []
        above = []
        for idx, name in chain.names.items():
            if name in {v.value for v in Vertebra}:
                found.append(Found(Vertebra(name), candidates[idx].outline, candidates[idx].confidence))
            else:
                above.append(name)
        return Naming(found, chain, above_l1=sorted(above, reverse=True))

    # ------------------------------------------------------------------ orientation
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

    # ------------------------------------------------------------------ post-processing
    def _postprocess(
        self,
        ds: Any,
        view: LumbarView,
        prep: _Prepared,
        candidates: list[Candidate],
        mirrored: list[Candidate] | None,
    ) -> LumbarResult:
        shape = prep.display.shape
        notes: list[str] = []
        naming = self.name_bodies(candidates)
        found = naming.found
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
        segments = segments_from_outlines(found, shape, view, anterior)
        by_label = {s.label: s for s in segments}
        # mirror pass: per vertebra, the second corner fit of the same body
        second: dict[Vertebra, np.ndarray] = {}
        if mirrored is not None:
            m_naming = self.name_bodies(mirrored)
            m_segments = {s.label: s for s in segments_from_outlines(m_naming.found, shape, view, anterior)}
            for label, seg in by_label.items():
                other = m_segments.get(label)
                if other is None:
                    continue
                size = float(np.sqrt(max(seg.mask.sum(), 1)))
                if (
                    np.hypot(*(seg.outline.mean(axis=0) - other.outline.mean(axis=0)))
                    <= _PAIR_DISTANCE * size
                ):
                    second[label] = other.corners
            if second:
                notes.append(
                    f"flip averaging: {len(second)} vertebra(e) measured as the mean of the image and its mirror"
                )
        first = {label: s.corners.copy() for label, s in by_label.items()}
        for label, corners in second.items():
            by_label[label].corners = (first[label] + corners) / 2.0
        mask_corners = {label: s.corners.copy() for label, s in by_label.items()}
        refined_any = False
        if self.edge_refine and segments:
            sizes = [float(np.sqrt(max(s.mask.sum(), 1))) for s in segments]
            smooth = smoothed_for_edges(prep.display, float(np.median(sizes)))
            moved = 0
            for seg, size in zip(segments, sizes, strict=True):
                ref = refine_corners(smooth, seg.corners, size)
                seg.corners = ref.corners
                moved += ref.sides_moved
            refined_any = moved > 0
            notes.append(
                f"edge refinement: {moved} of {4 * len(segments)} vertebra sides moved onto image edges"
            )
        levels = measure_levels(segments, view, self.threshold_percent)
        levels = self._chain_levels(levels, naming)
        evidence = self._evidence(
            levels, by_label, first, second, mask_corners if refined_any else None, naming
        )
        levels, fired = apply_abstention(levels, evidence, self.abstain)
        if view is LumbarView.LATERAL:  # AP levels carry no grade
            levels, near_boundary = apply_grade_margin(levels, self.threshold_percent, self.grade_margin)
            fired |= near_boundary
        if naming.reason:
            notes.append(naming.reason)
        if naming.chain is not None:
            notes.extend(naming.chain.notes)
            if naming.chain.stop_reason:
                notes.append(naming.chain.stop_reason)
        if naming.above_l1:
            notes.append(f"also found above L1 (not reported): {', '.join(naming.above_l1)}")
        for name, check in fired.items():
            notes.append(f"{name} not measured ({check} check)")
        missing = [v.value for v in Vertebra if v not in by_label]
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

    @staticmethod
    def _chain_levels(levels: list[LevelMeasurement], naming: Naming) -> list[LevelMeasurement]:
        """Levels whose vertebrae could not be named because the chain stopped or had no anchor."""
        out = []
        gap = naming.chain is not None and "not detected" in naming.chain.stop_reason
        for lv in levels:
            if lv.status is LevelStatus.MISSING and naming.reason:
                lv = LevelMeasurement(
                    upper=lv.upper, lower=lv.lower, status=LevelStatus.NOT_MEASURED, reason=naming.reason
                )
            elif lv.status is LevelStatus.MISSING and gap and naming.chain is not None:
                lv = LevelMeasurement(
                    upper=lv.upper,
                    lower=lv.lower,
                    status=LevelStatus.NOT_MEASURED,
                    reason=naming.chain.stop_reason,
                )
            out.append(lv)
        return out

    def _evidence(
        self,
        levels: list[LevelMeasurement],
        by_label: dict[Vertebra, VertebraSegment],
        first: dict[Vertebra, np.ndarray],
        second: dict[Vertebra, np.ndarray] | None,
        mask_corners: dict[Vertebra, np.ndarray] | None,
        naming: Naming,
    ) -> dict[str, LevelEvidence]:
        problems = naming.chain.problems if naming.chain is not None else {}
        # how four-sided each body's mask is, on its final corners (quality.py, "shape fit")
        fits = {
            label: quadrilateral_fit(seg.mask, seg.corners, seg.outline) for label, seg in by_label.items()
        }
        evidence: dict[str, LevelEvidence] = {}
        for lv in levels:
            if lv.status is not LevelStatus.MEASURED:
                continue
            u, lo = lv.upper, lv.lower
            det = min(by_label[u].confidence, by_label[lo].confidence)
            flip = None
            confirmed = None
            if second is not None:
                confirmed = u in second and lo in second
                if confirmed:
                    try:
                        flip = abs(slip(first[u], first[lo])[0] - slip(second[u], second[lo])[0])
                    except ValueError:
                        confirmed = False
            refine = None
            if mask_corners is not None and lv.slip_percent is not None:
                try:
                    refine = abs(lv.slip_percent - slip(mask_corners[u], mask_corners[lo])[0])
                except ValueError:
                    refine = None
            problem = problems.get(u.value) or problems.get(lo.value) or ""
            weakest = min((u, lo), key=lambda v: fits[v])
            evidence[lv.name] = LevelEvidence(
                det, flip, refine, problem, confirmed, shape_fit=fits[weakest], shape_body=weakest.value
            )
        return evidence
