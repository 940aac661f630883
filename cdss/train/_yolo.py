"""Ultralytics trainer/dataset subclasses for cdss (import only after the offline setup).

:class:`LumbarSegmentationTrainer` is Ultralytics' segmentation trainer whose *training* dataset
additionally applies :class:`cdss.train.augment.SeedAugment` (seed 000's photometric
augmentations) just before the samples are formatted. It survives ``close_mosaic`` (which
rebuilds the transforms) because the insertion happens in the dataset's ``build_transforms``.
"""

from __future__ import annotations

from typing import Any

from cdss.analysis._ultralytics import ultralytics

ultralytics()  # environment first (offline, private config dir)

from ultralytics.data.dataset import YOLODataset  # noqa: E402
from ultralytics.models.yolo.segment import SegmentationTrainer  # noqa: E402

from cdss.train.augment import SeedAugment, StyleAugment, VarietyAugment  # noqa: E402

__all__ = ["SEED_AUGMENT_P", "STYLE_AUGMENT_P", "LumbarSegmentationTrainer", "LumbarYOLODataset"]

#: Probability that a training sample gets one of seed 000's photometric augmentations.
SEED_AUGMENT_P = 0.4
#: Probability of one randomised appearance change (:class:`VarietyAugment`), independently.
#: Set by the trainer from ``cdss_variety_p`` (0 = off, the v1.0.0 recipe).
VARIETY_AUGMENT_P = 0.0
#: Probability of a chain of style operations (:class:`StyleAugment`), independently; from ``style_p``.
STYLE_AUGMENT_P = 0.0


class LumbarYOLODataset(YOLODataset):
    """YOLO dataset whose augmented transforms end with seed 000's photometric operations."""

    def build_transforms(self, hyp: Any = None) -> Any:
        transforms = super().build_transforms(hyp)
        if self.augment:
            transforms.insert(len(transforms.transforms) - 1, SeedAugment(SEED_AUGMENT_P))
            if VARIETY_AUGMENT_P > 0:
                transforms.insert(len(transforms.transforms) - 1, VarietyAugment(VARIETY_AUGMENT_P))
            if STYLE_AUGMENT_P > 0:
                transforms.insert(len(transforms.transforms) - 1, StyleAugment(STYLE_AUGMENT_P))
        return transforms


class LumbarSegmentationTrainer(SegmentationTrainer):
    """Segmentation trainer using :class:`LumbarYOLODataset` for the training split."""

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train" and isinstance(dataset, YOLODataset):
            dataset.__class__ = LumbarYOLODataset
            dataset.transforms = dataset.build_transforms(hyp=self.args)  # type: ignore[arg-type]  # Ultralytics' args are an IterableSimpleNamespace at run time
        return dataset
