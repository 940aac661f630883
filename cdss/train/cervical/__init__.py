"""Training of the cervical foraminal stenosis model (seed 004), CPU-friendly and resumable.

Stages (``cdss train cervical --stage …``; ``all`` runs them in this order):

``stn``
    The Spatial Transformer alone (seed 004 section 3.4: "trained separately, then frozen").
    Supervised: its 2×3 affine output is regressed (MSE) onto the rotation that makes the C2–C7
    axis vertical — known from the synthetic ground truth (vertebra corners) plus a random extra
    rotation of ±20° applied to the crop. For site data without that truth the spine is assumed
    upright and only the applied rotation is learnt (self-supervised). Adam, batch 32.
``classifier``
    ResNet50 (random init) behind the frozen STN; weighted BCE (``pos_weight`` = negatives /
    positives of the training split), SGD momentum 0.9, lr 0.001, batch 4, lr × 0.1 after every
    7/25 of the run (seed 004: every 7 of 25 epochs), augmentation from
    :meth:`~cdss.train.cervical.data.SampleAugment.training`. Left views are mirrored into
    right-view orientation, so each view trains with the flipped opposite view (seed 004
    section 3.3). Checkpoints ``last.pt`` at every epoch end and every ``checkpoint_minutes``
    inside an epoch; ``best.pt`` by validation AUC. The operating point is chosen on the
    validation split (Youden's J by default).
``roi``
    YOLO11n detection (Ultralytics, bundled YAML, random init) of the cervical-spine box with two
    classes (left/right oblique); left-right flip augmentation off.
``export``
    Bundle STN + classifier (fp16) + detector into ``OUT/cdss-cervical.pt`` with
    ``OUT/manifest.json`` (sha256, recipe, validation figures).

Everything lives under ``OUT`` (default ``var/train/cervical``): ``cache/`` (crop cache),
``split.json``, ``stn/``, ``classifier/``, ``roi/``, ``log.jsonl``.

Modules: :mod:`~cdss.train.cervical.config` (options), :mod:`~cdss.train.cervical.data` (samples,
crop cache, augmentation), :mod:`~cdss.train.cervical.stn`, :mod:`~cdss.train.cervical.classifier`,
:mod:`~cdss.train.cervical.roi`, :mod:`~cdss.train.cervical.export` (one per stage),
:mod:`~cdss.train.cervical.run` (the run), :mod:`~cdss.train.cervical.metrics` and
:mod:`~cdss.train.cervical.evaluate` (held-out evaluation, model card figures).
"""

from cdss.train.cervical.config import STAGES, CervicalTrainConfig
from cdss.train.cervical.export import export_bundle
from cdss.train.cervical.metrics import binary_metrics, choose_operating_point
from cdss.train.cervical.run import train_cervical

__all__ = [
    "STAGES",
    "CervicalTrainConfig",
    "binary_metrics",
    "choose_operating_point",
    "export_bundle",
    "train_cervical",
]
