"""Stage ``roi``: the YOLO11n detector of the cervical spine box (two classes: left/right oblique)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cdss.analysis._ultralytics import ultralytics
from cdss.analysis.cervical.analyzer import SHIPPED_WEIGHTS, resolve_device
from cdss.analysis.cervical.bundle import BundleMeta, load_bundle
from cdss.analysis.cervical.roi import ROI_CLASSES, RoiDetector, build_roi_model, load_roi_model
from cdss.analysis.imaging import resize_longest
from cdss.train.cervical.config import CervicalTrainConfig
from cdss.train.cervical.data import Sample, load_display_u8

__all__ = ["roi_finder", "train_roi"]


def roi_finder(cfg: CervicalTrainConfig) -> Callable[[np.ndarray], tuple[float, float, float, float] | None]:
    """ROI boxes for site images without one: this run's detector, else the shipped model's."""
    device = resolve_device(cfg.device)
    own = cfg.out / "roi" / cfg.roi_run / "weights" / "best.pt"
    if cfg.roi_weights is not None:
        own = cfg.roi_weights
    if own.exists():
        det = RoiDetector(own, device, cfg.roi_imgsz, cfg.roi_input_side)
    else:
        blob = load_bundle(SHIPPED_WEIGHTS)
        meta = BundleMeta.from_dict(blob["meta"])
        tmp = cfg.out / "roi" / "shipped-roi.pt"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob["roi_detector"])
        det = RoiDetector(tmp, device, meta.roi_imgsz, meta.roi_input_side)

    def find(img: np.ndarray) -> tuple[float, float, float, float] | None:
        d = det.detect_batch([img])[0]
        return d.box if d is not None else None

    return find


def _roi_dataset(
    cfg: CervicalTrainConfig, samples: list[Sample], train_idx: np.ndarray, val_idx: np.ndarray
) -> Path:
    """Write the YOLO detection dataset (PNG longest side ``roi_input_side`` + normalised boxes)."""
    root = cfg.out / "roi" / "data"
    yaml_path = root / "data.yaml"
    if yaml_path.exists():
        return yaml_path
    rng = np.random.default_rng(cfg.seed + 3)
    with_roi_train = [int(i) for i in train_idx if samples[int(i)].roi is not None]
    with_roi_val = [int(i) for i in val_idx if samples[int(i)].roi is not None]
    n_train = min(len(with_roi_train), cfg.roi_max_images)
    n_val = min(len(with_roi_val), max(20, cfg.roi_max_images // 6))
    picks: dict[str, Any] = {
        "train": rng.choice(with_roi_train, n_train, replace=False) if n_train else [],
        "val": rng.choice(with_roi_val, n_val, replace=False) if n_val else [],
    }
    for split, idx in picks.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in idx:
            s = samples[int(i)]
            img = load_display_u8(s.image)
            rows, cols = img.shape
            small = resize_longest(img, cfg.roi_input_side)
            cv2.imwrite(str(root / "images" / split / f"{s.key}.png"), small)
            assert s.roi is not None  # only samples with a box were picked
            c0, r0, c1, r1 = s.roi
            # pixel-centre box → edge coordinates, normalised by the source size
            x0, y0, x1, y1 = (c0 + 0.5) / cols, (r0 + 0.5) / rows, (c1 + 0.5) / cols, (r1 + 0.5) / rows
            cls = 0 if s.laterality.value == "L" else 1
            (root / "labels" / split / f"{s.key}.txt").write_text(
                f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n"
            )
    yaml_path.write_text(
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n"
        + "names:\n"
        + "".join(f"  {i}: {n}\n" for i, n in enumerate(ROI_CLASSES))
    )
    return yaml_path


def train_roi(
    cfg: CervicalTrainConfig, samples: list[Sample], train_idx: np.ndarray, val_idx: np.ndarray
) -> Path:
    """Train the YOLO11n ROI detector (stage ``roi``); returns its ``best.pt``."""
    if cfg.roi_weights is not None:
        return cfg.roi_weights
    run = cfg.out / "roi" / cfg.roi_run
    best = run / "weights" / "best.pt"
    last = run / "weights" / "last.pt"
    if best.exists() and not cfg.resume and cfg.stage != "roi":
        return best
    data_yaml = _roi_dataset(cfg, samples, train_idx, val_idx)
    device = resolve_device(cfg.device)
    dev = "cpu" if device == "cpu" else device.replace("cuda:", "")
    if cfg.resume and last.exists():
        model = ultralytics().YOLO(str(last), task="detect")
        model.train(resume=True)
        return best
    # continue from an earlier detector (fresh schedule), or start from random init
    model = load_roi_model(cfg.roi_init) if cfg.roi_init is not None else build_roi_model("yolo11n.yaml")
    model.train(
        data=str(data_yaml),
        epochs=cfg.roi_epochs,
        imgsz=cfg.roi_imgsz,
        batch=cfg.roi_batch,
        device=dev,
        workers=0,
        project=str((cfg.out / "roi").resolve()),  # a relative project would land in Ultralytics' runs_dir
        name=cfg.roi_run,
        exist_ok=True,
        pretrained=False,
        amp=False,
        plots=False,
        fliplr=0.0,  # a mirrored left view looks like a right view: never flip
        degrees=10.0,
        mosaic=0.5,
        close_mosaic=max(1, cfg.roi_epochs // 5),
        seed=cfg.seed,
        deterministic=False,
        verbose=False,
        patience=max(10, cfg.roi_epochs),
    )
    return best
