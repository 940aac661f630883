"""Training the lumbar vertebra segmentation model (``cdss train lumbar``).

Recipe (defaults of :class:`LumbarTrainConfig`; the shipped model's exact arguments are in its
model card, ``docs/models/lumbar.md``):

* architecture YOLO11n-seg (``--model yolov8n-seg`` for YOLOv8), built from Ultralytics' bundled
  YAML — no pretrained download exists offline, so training starts from random weights;
* data converted to the YOLO segmentation layout by :mod:`cdss.train.datasets` (PNG longest
  side :data:`cdss.analysis.lumbar.analyzer.INPUT_SIDE`);
* geometric augmentation: rotation ±15°, scale ±25 %, translation ±10 %, horizontal flip 0.5
  (the analysis determines the anterior side itself), no vertical flip, **no mosaic** (mosaic
  tiles four spines into one image and shrinks bodies; the geometry needs whole, full-size
  spines); photometric: seed 000's six operations online (:mod:`cdss.train.augment`) plus
  Ultralytics' brightness jitter;
* optional extra samples: ``--level-crops N`` adds N zoomed crops around one level (two
  adjacent vertebrae) per training image — what the analysis' zoom refinement shows the model;
  ``--variety-p`` adds randomised appearance changes (:class:`cdss.train.augment.VarietyAugment`);
* ``--style-p`` adds the strong style randomisation of the cross-family recipe
  (:class:`cdss.train.augment.StyleAugment`: tone curves, windows, CLAHE, JPEG, resolution
  loss, grid lines, seams, burned-in text, quantum noise);
* labels in the **anatomical** class scheme by default (``vertebra`` for every body in the
  field, T12 included; ``sacrum``): the analysis names the bodies from anatomy, so the model
  is not asked to count (``--classes levels`` keeps seed 000's six classes L1 … S1);
* ``--init`` starts from existing weights (e.g. the shipped model: fine-tuning; a different
  class scheme transfers everything but the classification head) instead of random
  initialisation;
* AdamW (Ultralytics ``optimizer=auto`` on short schedules), cosine learning-rate decay,
  checkpoints every epoch (``last.pt``) so ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdss.analysis._ultralytics import build_yolo, load_yolo
from cdss.analysis.lumbar.analyzer import INPUT_SIDE, resolve_device
from cdss.analysis.lumbar.classes import ClassScheme
from cdss.train.datasets import DatasetError, iter_buu, iter_synthetic, write_yolo_dataset

__all__ = ["LumbarTrainConfig", "prepare_dataset", "train_lumbar"]


@dataclass
class LumbarTrainConfig:
    """Arguments of ``cdss train lumbar`` (see the CLI help for each)."""

    data: Path
    out: Path
    format: str = "synthetic"  # synthetic | buu | yolo
    model: str = "yolo11n-seg"
    epochs: int = 60
    imgsz: int = 512
    batch: int = 8
    device: str = "auto"
    workers: int = 2
    resume: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    patience: int = 100
    lr0: float | None = None
    spine_crops: bool = False
    level_crops: int = 0
    variety_p: float = 0.0
    style_p: float = 0.0
    classes: str = ClassScheme.ANATOMICAL.value  # anatomical | levels
    init: Path | None = None
    inference_imgsz: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_dataset(
    data: Path,
    fmt: str,
    work: Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    spine_crops: bool = False,
    level_crops: int = 0,
    scheme: ClassScheme = ClassScheme.ANATOMICAL,
) -> Path:
    """Turn ``data`` into a YOLO segmentation dataset; return its ``data.yaml``.

    ``fmt``: ``synthetic`` (cdss synthetic DICOM + JSON of either family), ``buu`` (BUU-LSPINE
    JPG + CSV) or ``yolo`` (an existing dataset: ``data`` is its directory holding
    ``data.yaml``, or the YAML). ``scheme``: class scheme of the labels written.
    """
    data = Path(data)
    if fmt == "yolo":
        yaml = data if data.suffix in {".yaml", ".yml"} else data / "data.yaml"
        if not yaml.exists():
            raise DatasetError(f"--format yolo needs a data.yaml; {yaml} does not exist")
        return yaml
    if fmt == "synthetic":
        items = iter_synthetic(data)
    elif fmt == "buu":
        items = iter_buu(data)
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}: use synthetic, buu or yolo")
    target = work / "dataset"
    if (target / "data.yaml").exists():
        return target / "data.yaml"  # converted by an earlier (interrupted) run
    tmp = work / "dataset.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    yaml = write_yolo_dataset(
        items,
        tmp,
        val_fraction=val_fraction,
        seed=seed,
        max_side=INPUT_SIDE,
        spine_crops=spine_crops,
        level_crops=level_crops,
        scheme=scheme,
    )
    yaml.write_text(yaml.read_text().replace(str(tmp.resolve()), str(target.resolve())))
    tmp.rename(target)
    return target / "data.yaml"


def _hyperparameters(cfg: LumbarTrainConfig, device: str) -> dict[str, Any]:
    hyp: dict[str, Any] = {
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "batch": cfg.batch,
        "device": device,
        "workers": cfg.workers,
        "seed": cfg.seed,
        "deterministic": False,
        "patience": cfg.patience,
        "cos_lr": True,
        "mosaic": 0.0,
        "close_mosaic": 0,
        "mixup": 0.0,
        "copy_paste": 0.0,
        "degrees": 15.0,
        "scale": 0.25,
        "translate": 0.1,
        "shear": 0.0,
        "perspective": 0.0,
        "fliplr": 0.5,
        "flipud": 0.0,
        "hsv_h": 0.0,
        "hsv_s": 0.0,
        "hsv_v": 0.3,
        "amp": device.startswith("cuda"),
        "plots": False,
        "val": True,
        "save_period": -1,
        "nbs": cfg.batch,  # an optimizer step per batch: short CPU schedules need the steps
        "exist_ok": True,
        "verbose": True,
        "warmup_epochs": min(3.0, max(0.5, cfg.epochs * 0.05)),
    }
    if cfg.lr0 is not None:
        hyp["lr0"] = cfg.lr0
    hyp.update(cfg.extra)
    return hyp


def train_lumbar(cfg: LumbarTrainConfig) -> Path:
    """Train (or resume) a lumbar segmentation model; return the path of ``best.pt``.

    Layout under ``cfg.out``: ``dataset/`` (converted data), ``run/`` (Ultralytics run:
    ``weights/last.pt``, ``weights/best.pt``, ``results.csv``, ``args.yaml``) and
    ``train-config.json``.
    """
    import cdss.train._yolo as yolo_ext  # imports Ultralytics (after its offline setup): only when training
    from cdss.train._yolo import LumbarSegmentationTrainer

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    last = out / "run" / "weights" / "last.pt"
    device = resolve_device(cfg.device)
    if device.startswith("cuda:"):
        device = device.split(":", 1)[1]  # Ultralytics wants "0"
    if cfg.resume:
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint {last} to resume from")
        saved = (
            json.loads((out / "train-config.json").read_text())
            if (out / "train-config.json").exists()
            else {}
        )
        yolo_ext.VARIETY_AUGMENT_P = float(saved.get("variety_p", 0.0))
        yolo_ext.STYLE_AUGMENT_P = float(saved.get("style_p", 0.0))
        model = load_yolo(last)
        model.train(resume=True, trainer=LumbarSegmentationTrainer, device=device, workers=cfg.workers)
        return _finish(out, saved.get("inference_imgsz"))
    yaml = prepare_dataset(
        Path(cfg.data),
        cfg.format,
        out,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        spine_crops=cfg.spine_crops,
        level_crops=cfg.level_crops,
        scheme=ClassScheme(cfg.classes),
    )
    (out / "train-config.json").write_text(
        json.dumps({**asdict(cfg), "data_yaml": str(yaml)}, default=str, indent=2), encoding="utf-8"
    )
    yolo_ext.VARIETY_AUGMENT_P = cfg.variety_p
    yolo_ext.STYLE_AUGMENT_P = cfg.style_p
    if cfg.init is not None:
        if not Path(cfg.init).exists():
            raise FileNotFoundError(f"--init: weights {cfg.init} do not exist")
        model = load_yolo(Path(cfg.init))
    else:
        model = build_yolo(cfg.model)
    model.train(
        data=str(yaml),
        project=str(out),
        name="run",
        trainer=LumbarSegmentationTrainer,
        **_hyperparameters(cfg, device),
    )
    return _finish(out, cfg.inference_imgsz)


def _finish(out: Path, inference_imgsz: int | None) -> Path:
    """Record cdss metadata (inference size) inside the final checkpoints; return ``best.pt``."""
    weights = out / "run" / "weights"
    for name in ("best.pt", "last.pt"):
        path = weights / name
        if not path.exists():
            continue
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["cdss"] = {
            "inference_imgsz": inference_imgsz or int(ckpt.get("train_args", {}).get("imgsz", 640))
        }
        torch.save(ckpt, path)
    best = weights / "best.pt"
    return best if best.exists() else weights / "last.pt"
