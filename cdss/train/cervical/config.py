"""Options of the cervical training run and the small helpers every stage shares."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdss.logs import get_logger

__all__ = ["STAGES", "CervicalTrainConfig", "append_log", "jsonable", "log", "save_atomic", "seed_everything"]


def log() -> Any:
    """The training logger, fetched per use (a cached one would keep a stream from an earlier configuration)."""
    return get_logger("cdss.train.cervical")


STAGES = ("stn", "classifier", "roi", "export")


@dataclass
class CervicalTrainConfig:
    """Options of ``cdss train cervical`` (see :mod:`cdss.train.cervical` and docs/models/cervical.md)."""

    data: Path
    out: Path = Path("var/train/cervical")
    stage: str = "all"
    device: str = "auto"
    epochs: int = 6
    imgsz: int = 256
    batch: int = 4
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    step_fraction: float = 7 / 25
    lr_milestones: tuple[float, ...] | None = None
    warmup_fraction: float = 0.0
    lr_gamma: float = 0.1
    clip_grad: float = 5.0
    val_fraction: float = 0.15
    seed: int = 0
    margin: float = 0.08
    crop: str = "stretch"
    pool: str = "max"
    backbone: str = "resnet50"
    resume: bool = False
    stn_epochs: int = 8
    stn_lr: float = 1e-3
    stn_loc_size: int = 96
    roi_epochs: int = 25
    roi_imgsz: int = 320
    roi_input_side: int = 384
    roi_batch: int = 16
    roi_max_images: int = 600
    roi_weights: Path | None = None
    roi_init: Path | None = None
    roi_run: str = "train"
    checkpoint_minutes: float = 10.0
    time_hours: float | None = None
    operating_point_method: str = "youden"
    max_images: int | None = None
    threads: int = 0
    name: str = "cdss-cervical-stenosis"
    version: str = "1.0.0"
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def append_log(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))
