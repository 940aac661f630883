"""Training batches drawn from the crop cache (shared by the STN and classifier stages)."""

from __future__ import annotations

import numpy as np
import torch

from cdss.train.cervical.config import CervicalTrainConfig
from cdss.train.cervical.data import CropCache, SampleAugment, make_sample

__all__ = ["training_batch"]


def training_batch(
    cache: CropCache, idx: np.ndarray, cfg: CervicalTrainConfig, aug: SampleAugment, epoch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels, spine angles (degrees) and window aspects of the samples ``idx``."""
    xs, angles, aspects = [], [], []
    for i in idx:
        rng = np.random.default_rng([cfg.seed, epoch, int(i)])
        x, a, r = make_sample(cache, int(i), cfg.imgsz, cfg.margin, aug, rng, cfg.crop)
        xs.append(x)
        angles.append(a)
        aspects.append(r)
    inputs = torch.from_numpy(np.stack(xs)[:, None])
    labels = torch.from_numpy(cache.labels[idx].astype(np.float32))
    return (
        inputs,
        labels,
        torch.tensor(angles, dtype=torch.float32),
        torch.tensor(aspects, dtype=torch.float32),
    )
