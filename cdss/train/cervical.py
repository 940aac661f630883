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
    :meth:`~cdss.train.cervical_data.SampleAugment.training`. Left views are mirrored into
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
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cdss.analysis.cervical.analyzer import resolve_device
from cdss.analysis.cervical.bundle import BundleMeta, file_sha256, save_bundle
from cdss.analysis.cervical.network import (
    SpatialTransformer,
    StenosisNet,
    build_classifier,
    rotation_theta,
    theta_angle,
)
from cdss.analysis.cervical.roi import ROI_CLASSES, resize_longest
from cdss.logs import get_logger
from cdss.train.cervical_data import (
    CropCache,
    Sample,
    SampleAugment,
    build_cache,
    cache_size,
    discover,
    load_display_u8,
    make_sample,
    split_indices,
)

__all__ = [
    "STAGES",
    "CervicalTrainConfig",
    "binary_metrics",
    "choose_operating_point",
    "export_bundle",
    "train_cervical",
]


def _log() -> Any:
    """The module logger, fetched per use (a cached one would keep a stream from an earlier configuration)."""
    return get_logger(__name__)


STAGES = ("stn", "classifier", "roi", "export")


@dataclass
class CervicalTrainConfig:
    """Options of ``cdss train cervical`` (see the module docstring and docs/models/cervical.md)."""

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


# ---------------------------------------------------------------------- helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """Accuracy, F1, sensitivity, specificity (at ``threshold``) and ROC AUC, as plain floats.

    ``labels`` 1 = abnormal. AUC is ``None`` when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, float)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    prec = tp / (tp + fp) if tp + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return {
        "n": n,
        "positives": int(y.sum()),
        "accuracy": (tp + tn) / n if n else None,
        "f1": f1,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "auc": auc,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "threshold": float(threshold),
    }


def choose_operating_point(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Probability threshold chosen on validation data.

    Parameters
    ----------
    method
        ``youden`` (maximise sensitivity + specificity − 1), ``sens90`` / ``sens95`` (the highest
        threshold whose sensitivity reaches 90 % / 95 %, i.e. sensitivity first), or a number
        (used as is).

    Returns
    -------
    float
        A threshold in (0, 1); an image is abnormal when ``probability >= threshold``.
    """
    from sklearn.metrics import roc_curve

    try:
        return float(method)
    except ValueError:
        pass
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, float)
    if len(set(y.tolist())) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if method == "youden":
        j = tpr - fpr
        best = np.flatnonzero(j == j.max())
        k = int(best[len(best) // 2])  # middle of a plateau
        t = float(thr[k])
        # place the cut half-way to the next lower score so it is not on a training value
        lower = p[p < t]
        if lower.size:
            t = (t + float(lower.max())) / 2.0
        return float(np.clip(t, 1e-6, 1 - 1e-6))
    if method in ("sens90", "sens95"):
        need = 0.90 if method == "sens90" else 0.95
        ok = np.flatnonzero(tpr >= need)
        return float(np.clip(thr[ok[0]], 1e-6, 1 - 1e-6)) if ok.size else 0.5
    raise ValueError(f"unknown operating point method {method!r}: youden, sens90, sens95 or a number")


def _lr_at(cfg: CervicalTrainConfig, frac: float) -> float:
    """Learning rate at fraction ``frac`` (0…1) of the run.

    The fraction is the share of optimiser steps done, or — with ``time_hours`` — of the time
    budget spent, whichever is larger.

    Seed 004's step schedule scaled to the run (× ``lr_gamma`` after every ``step_fraction`` of
    it, i.e. every 7 of 25 epochs) unless ``lr_milestones`` (fractions of the run) are given;
    optionally preceded by a linear warm-up over ``warmup_fraction`` of the run.
    """
    if cfg.lr_milestones:
        drops = sum(1 for m in cfg.lr_milestones if frac >= m)
    else:
        drops = int(frac / cfg.step_fraction + 1e-9)
    lr = cfg.lr * (cfg.lr_gamma**drops)
    if cfg.warmup_fraction > 0 and frac < cfg.warmup_fraction:
        lr *= max(frac / cfg.warmup_fraction, 0.01)
    return lr


# ---------------------------------------------------------------------- data
def _prepare_data(
    cfg: CervicalTrainConfig, progress: Callable[[str, int, int], None] | None
) -> tuple[list[Sample], CropCache, np.ndarray, np.ndarray]:
    """Discover samples, split them (stable, saved) and build or reload the crop cache."""
    samples = discover(cfg.data)
    if cfg.max_images and len(samples) > cfg.max_images:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(samples), cfg.max_images, replace=False))
        samples = [samples[i] for i in keep]
    keys = [s.key for s in samples]
    split_path = cfg.out / "split.json"
    if split_path.exists():
        saved = json.loads(split_path.read_text())
        if saved.get("keys") == keys:
            train_idx, val_idx = np.array(saved["train"], int), np.array(saved["val"], int)
        else:
            train_idx, val_idx = split_indices(samples, cfg.val_fraction, cfg.seed)
    else:
        train_idx, val_idx = split_indices(samples, cfg.val_fraction, cfg.seed)
    split_path.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text(json.dumps({"keys": keys, "train": train_idx.tolist(), "val": val_idx.tolist()}))
    need = cache_size(cfg.imgsz, cfg.crop)
    cache_dir = cfg.out / "cache" / f"c{need}_{cfg.margin:g}"
    cache = None
    # any existing cache of the same images and margin stored at this size or larger will do
    # (samples are resampled from it to imgsz)
    for cand in sorted((cfg.out / "cache").glob(f"*_{cfg.margin:g}")):
        meta_file = cand / "meta.npz"
        if not meta_file.exists() or int(np.load(meta_file)["width"]) < need:
            continue
        cache = CropCache.load(cand)
        if cache.keys == keys:
            break
        cache = None
    if cache is None:
        finder = _roi_finder(cfg) if any(s.roi is None for s in samples) else None
        cache = build_cache(
            samples,
            cfg.imgsz,
            cfg.margin,
            crop=cfg.crop,
            roi_finder=finder,
            progress=(lambda i, n: progress("cache", i, n)) if progress else None,
        )
        cache.save(cache_dir)
    return samples, cache, train_idx, val_idx


def _roi_finder(cfg: CervicalTrainConfig) -> Callable[[np.ndarray], tuple[float, float, float, float] | None]:
    """ROI boxes for site images without one: this run's detector, else the shipped model's."""
    from cdss.analysis.cervical.analyzer import SHIPPED_WEIGHTS
    from cdss.analysis.cervical.bundle import load_bundle
    from cdss.analysis.cervical.roi import RoiDetector

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


def _batch(
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
    x = torch.from_numpy(np.stack(xs)[:, None])
    y = torch.from_numpy(cache.labels[idx].astype(np.float32))
    return x, y, torch.tensor(angles, dtype=torch.float32), torch.tensor(aspects, dtype=torch.float32)


# ---------------------------------------------------------------------- STN
def _stn_target(angles: torch.Tensor, aspects: torch.Tensor) -> torch.Tensor:
    return rotation_theta(torch.nan_to_num(angles, nan=0.0), aspects)


def train_stn(cfg: CervicalTrainConfig, cache: CropCache, train_idx: np.ndarray, val_idx: np.ndarray) -> Path:
    """Train the STN (stage ``stn``); returns the path of its best state dict."""
    out = cfg.out / "stn"
    best_path = out / "best.pt"
    if best_path.exists() and not cfg.resume and cfg.stage != "stn":
        return best_path
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed + 1)
    stn = SpatialTransformer(cfg.stn_loc_size).to(device)
    opt = torch.optim.Adam(stn.parameters(), lr=cfg.stn_lr)
    start = 0
    best = math.inf
    last = out / "last.pt"
    if cfg.resume and last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        stn.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["epoch"]), float(ck["best"])
    aug = SampleAugment.stn()
    bs = 32
    for epoch in range(start, cfg.stn_epochs):
        t0 = time.perf_counter()
        for g in opt.param_groups:  # cosine decay over the STN epochs
            g["lr"] = cfg.stn_lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.stn_epochs))
        stn.train()
        perm = np.random.default_rng([cfg.seed, 7, epoch]).permutation(train_idx)
        losses = []
        for b in range(0, len(perm), bs):
            x, _, ang, asp = _batch(cache, perm[b : b + bs], cfg, aug, 10_000 + epoch)
            theta = stn.theta(x.to(device))
            loss = F.mse_loss(theta, _stn_target(ang, asp).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        err, base = _stn_eval(stn, cache, val_idx, cfg, device)
        rec = {
            "stage": "stn",
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_angle_mae_deg": err,
            "val_identity_mae_deg": base,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        _log().info("cervical stn epoch", **rec)
        _append_log(cfg.out / "log.jsonl", rec)
        if err < best:
            best = err
            _save_atomic({"model": stn.state_dict(), "loc_size": cfg.stn_loc_size, "val": rec}, best_path)
        _save_atomic(
            {"model": stn.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "best": best}, last
        )
    return best_path


def _stn_eval(
    stn: SpatialTransformer, cache: CropCache, idx: np.ndarray, cfg: CervicalTrainConfig, device: str
) -> tuple[float, float]:
    """Mean absolute angle error (degrees) of the STN and of doing nothing, on rotated val crops."""
    stn.eval()
    errs, base = [], []
    aug = SampleAugment(rotate_deg=15.0, rotate_p=1.0)
    with torch.no_grad():
        for b in range(0, len(idx), 32):
            x, _, ang, asp = _batch(cache, idx[b : b + 32], cfg, aug, 20_000)
            th = stn.theta(x.to(device)).cpu()
            pred = theta_angle(th, asp)  # the rotation that the predicted matrix undoes
            ok = torch.isfinite(ang)
            errs.extend((pred[ok] - ang[ok]).abs().tolist())
            base.extend(ang[ok].abs().tolist())
    return (float(np.mean(errs)) if errs else math.nan, float(np.mean(base)) if base else math.nan)


def _load_stn(path: Path, device: str) -> SpatialTransformer:
    ck = torch.load(path, map_location=device, weights_only=False)
    stn = SpatialTransformer(int(ck.get("loc_size", 96)))
    stn.load_state_dict(ck["model"])
    return stn.to(device).eval()


# ---------------------------------------------------------------------- classifier
def _predict(
    net: StenosisNet, cache: CropCache, idx: np.ndarray, cfg: CervicalTrainConfig, device: str
) -> np.ndarray:
    net.eval()
    probs = []
    with torch.no_grad():
        for b in range(0, len(idx), 16):
            x, _, _, _ = _batch(cache, idx[b : b + 16], cfg, SampleAugment(), 0)
            probs.extend(torch.sigmoid(net(x.to(device))).cpu().tolist())
    return np.asarray(probs, float)


def _optimizer(cfg: CervicalTrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Seed 004's SGD (momentum 0.9), or AdamW (what trains a randomly initialised ResNet here)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: sgd or adamw")


def train_classifier(
    cfg: CervicalTrainConfig,
    cache: CropCache,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    stn_path: Path | None,
) -> Path:
    """Train ResNet50 behind the frozen STN (stage ``classifier``); returns ``best.pt``."""
    out = cfg.out / "classifier"
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed + 2)
    stn = _load_stn(stn_path, device) if stn_path is not None and stn_path.exists() else None
    net = StenosisNet(stn, build_classifier(cfg.backbone, cfg.pool)).to(device)
    if device == "cpu":  # oneDNN convolutions are faster in NHWC (measured ~12 % on this CPU)
        net.classifier.to(memory_format=torch.channels_last)
    params = [p for p in net.classifier.parameters() if p.requires_grad]
    opt = _optimizer(cfg, params)
    labels = cache.labels[train_idx]
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    pos_weight = torch.tensor(neg / max(pos, 1), dtype=torch.float32, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    n_batches = math.ceil(len(train_idx) / cfg.batch)
    total = n_batches * cfg.epochs
    epoch, step_in_epoch, best_auc, best_loss = 0, 0, -1.0, math.inf
    elapsed = 0.0  # training seconds so far (validation excluded), for the time budget
    budget = cfg.time_hours * 3600.0 if cfg.time_hours else None
    history: list[dict[str, Any]] = []
    last = out / "last.pt"
    if cfg.resume and last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        net.classifier.load_state_dict(ck["classifier"])
        opt.load_state_dict(ck["optimizer"])
        epoch, step_in_epoch = int(ck["epoch"]), int(ck["step_in_epoch"])
        best_auc, best_loss = float(ck["best_auc"]), float(ck["best_loss"])
        elapsed = float(ck.get("elapsed", 0.0))
        history = list(ck.get("history", []))
        _log().info("cervical classifier resumed", epoch=epoch, step_in_epoch=step_in_epoch)

    def checkpoint(ep: int, step: int) -> None:
        _save_atomic(
            {
                "classifier": net.classifier.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": ep,
                "step_in_epoch": step,
                "best_auc": best_auc,
                "best_loss": best_loss,
                "elapsed": elapsed,
                "history": history,
                "config": _jsonable(asdict(cfg)),
            },
            last,
        )

    def fraction(step: int) -> float:
        # steps, or elapsed time when a budget is set — whichever is further along
        return min(1.0, max(step / total, elapsed / budget if budget else 0.0))

    aug = SampleAugment.training()
    last_ck = time.monotonic()
    out_of_time = budget is not None and elapsed >= budget
    while epoch < cfg.epochs and not out_of_time:
        t0 = time.perf_counter()
        net.train()
        perm = np.random.default_rng([cfg.seed, 11, epoch]).permutation(train_idx)
        losses = []
        done_batches = 0
        for b in range(step_in_epoch, n_batches):
            t_step = time.perf_counter()
            step = epoch * n_batches + b
            lr = _lr_at(cfg, fraction(step))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, _, _ = _batch(cache, perm[b * cfg.batch : (b + 1) * cfg.batch], cfg, aug, epoch)
            logits = net(x.to(device))
            loss = loss_fn(logits, y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            opt.step()
            losses.append(loss.item())
            elapsed += time.perf_counter() - t_step
            done_batches += 1
            if (b + 1) % 25 == 0:
                _log().info(
                    "cervical classifier step",
                    epoch=epoch + 1,
                    batch=b + 1,
                    of=n_batches,
                    lr=lr,
                    loss=round(float(np.mean(losses[-25:])), 4),
                    s_per_image=round((time.perf_counter() - t0) / (done_batches * cfg.batch), 3),
                    run_fraction=round(fraction(step), 4),
                )
            if time.monotonic() - last_ck > cfg.checkpoint_minutes * 60:
                checkpoint(epoch, b + 1)
                last_ck = time.monotonic()
            if budget is not None and elapsed >= budget:
                out_of_time = True
                step_in_epoch = b + 1
                break
        train_seconds = time.perf_counter() - t0
        probs = _predict(net, cache, val_idx, cfg, device)
        yv = cache.labels[val_idx]
        with torch.no_grad():
            pt = torch.tensor(np.clip(probs, 1e-6, 1 - 1e-6))
            val_loss = float(
                F.binary_cross_entropy(pt, torch.tensor(yv, dtype=torch.float64), reduction="mean")
            )
        m = binary_metrics(yv, probs, 0.5)
        rec = {
            "stage": "classifier",
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else None,
            "val_loss": val_loss,
            "val_auc": m["auc"],
            "val_accuracy_at_0.5": m["accuracy"],
            "lr_end": _lr_at(cfg, fraction((epoch + 1) * n_batches - 1)),
            "train_seconds": round(train_seconds, 1),
            "s_per_image": round(train_seconds / max(1, done_batches * cfg.batch), 3),
            "images_seen": int(done_batches * cfg.batch),
            "run_fraction": round(fraction((epoch + 1) * n_batches - 1), 4),
            "stopped_by_time_budget": bool(out_of_time),
        }
        history.append(rec)
        _log().info("cervical classifier epoch", **rec)
        _append_log(cfg.out / "log.jsonl", rec)
        auc = m["auc"] if m["auc"] is not None else -val_loss
        if auc > best_auc or (auc == best_auc and val_loss < best_loss):
            best_auc, best_loss = auc, val_loss
            op = choose_operating_point(yv, probs, cfg.operating_point_method)
            _save_atomic(
                {
                    "classifier": net.classifier.state_dict(),
                    "epoch": epoch + 1,
                    "val": {**rec, "operating_point": op, "metrics_at_op": binary_metrics(yv, probs, op)},
                    "val_probs": probs.tolist(),
                    "pos_weight": float(pos_weight),
                },
                out / "best.pt",
            )
        if out_of_time:  # stopped inside the epoch: a resume with a larger budget continues here
            checkpoint(epoch, step_in_epoch)
            break
        epoch += 1
        step_in_epoch = 0
        checkpoint(epoch, 0)
        last_ck = time.monotonic()
    return out / "best.pt"


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


# ---------------------------------------------------------------------- ROI detector
def _roi_dataset(
    cfg: CervicalTrainConfig, samples: list[Sample], train_idx: np.ndarray, val_idx: np.ndarray
) -> Path:
    """Write the YOLO detection dataset (PNG longest side ``roi_input_side`` + normalised boxes)."""
    import cv2

    root = cfg.out / "roi" / "data"
    yaml_path = root / "data.yaml"
    if yaml_path.exists():
        return yaml_path
    rng = np.random.default_rng(cfg.seed + 3)
    with_roi_train = [int(i) for i in train_idx if samples[int(i)].roi is not None]
    with_roi_val = [int(i) for i in val_idx if samples[int(i)].roi is not None]
    n_train = min(len(with_roi_train), cfg.roi_max_images)
    n_val = min(len(with_roi_val), max(20, cfg.roi_max_images // 6))
    picks = {
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
            c0, r0, c1, r1 = s.roi  # type: ignore[misc]
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
    from cdss.analysis.cervical.roi import build_roi_model

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
        from cdss.analysis._ultralytics import ultralytics

        model = ultralytics().YOLO(str(last), task="detect")
        model.train(resume=True)
        return best
    if cfg.roi_init is not None:  # continue from an earlier detector (fresh schedule)
        from cdss.analysis.cervical.roi import load_roi_model

        model = load_roi_model(cfg.roi_init)
    else:
        model = build_roi_model("yolo11n.yaml")
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


# ---------------------------------------------------------------------- export
#: Options that only the ``roi`` stage uses (left out of the recipe when a detector is given).
_ROI_TRAINING_OPTIONS = ("roi_epochs", "roi_batch", "roi_max_images", "roi_init", "roi_run")


def export_bundle(
    cfg: CervicalTrainConfig, stn_path: Path | None, clf_path: Path, roi_path: Path | None
) -> Path:
    """Write ``OUT/cdss-cervical.pt`` (fp16 classifier) and ``OUT/manifest.json``."""
    clf = torch.load(clf_path, map_location="cpu", weights_only=False)
    stn_state = None
    loc = 0
    if stn_path is not None and stn_path.exists():
        st = torch.load(stn_path, map_location="cpu", weights_only=False)
        stn_state, loc = st["model"], int(st.get("loc_size", cfg.stn_loc_size))
        stn_val = st.get("val", {})
    else:
        stn_val = {}
    val = clf.get("val", {})
    meta = BundleMeta(
        name=cfg.name,
        version=cfg.version,
        imgsz=cfg.imgsz,
        margin=cfg.margin,
        crop=cfg.crop,
        pool=cfg.pool,
        backbone=cfg.backbone,
        architecture="YOLO11n ROI + STN + "
        + ("compact CNN" if cfg.backbone == "compact" else cfg.backbone.replace("resnet", "ResNet")),
        operating_point=float(val.get("operating_point", 0.5)),
        operating_point_method=cfg.operating_point_method,
        stn_loc_size=loc,
        roi_imgsz=cfg.roi_imgsz,
        roi_input_side=cfg.roi_input_side,
        training={
            "recipe": _jsonable(
                {
                    k: v
                    for k, v in asdict(cfg).items()
                    if k not in ("data", "out", "resume", "stage", "roi_weights")
                    # a given detector (--roi-weights) was not trained here: its options never ran
                    and not (cfg.roi_weights is not None and k in _ROI_TRAINING_OPTIONS)
                }
                | (
                    {"roi_detector": "given (--roi-weights), not trained in this run"}
                    if cfg.roi_weights
                    else {}
                )
            ),
            "classifier_best_epoch": clf.get("epoch"),
            "validation": _jsonable(val),
            "stn_validation": _jsonable(stn_val),
            "pos_weight": clf.get("pos_weight"),
        },
    )
    path = cfg.out / "cdss-cervical.pt"
    sha = save_bundle(
        path, meta, stn_state, clf["classifier"], roi_path if roi_path and roi_path.exists() else None
    )
    manifest = {
        "name": meta.name,
        "version": meta.version,
        "file": path.name,
        "sha256": sha,
        "size_bytes": path.stat().st_size,
        "architecture": meta.architecture,
        "training_data": meta.training_data,
        "operating_point": meta.operating_point,
        "operating_point_method": meta.operating_point_method,
        "imgsz": meta.imgsz,
        "classifier_dtype": "float16",
        "roi_detector_sha256": file_sha256(roi_path) if roi_path and roi_path.exists() else None,
        "training": meta.training,
    }
    (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------- entry point
def train_cervical(
    cfg: CervicalTrainConfig, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, Path | None]:
    """Run the requested stage(s); returns the paths produced (``stn``, ``classifier``, ``roi``, ``bundle``)."""
    stages = STAGES if cfg.stage == "all" else (cfg.stage,)
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}: choose one of {', '.join(STAGES)} or all")
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    samples, cache, train_idx, val_idx = _prepare_data(cfg, progress)
    _log().info(
        "cervical data",
        images=len(samples),
        train=len(train_idx),
        val=len(val_idx),
        abnormal=int(cache.labels.sum()),
        left=int((cache.lateralities == "L").sum()),
    )
    out: dict[str, Path | None] = {"stn": None, "classifier": None, "roi": None, "bundle": None}
    stn_best = cfg.out / "stn" / "best.pt"
    clf_best = cfg.out / "classifier" / "best.pt"
    roi_best = cfg.roi_weights or cfg.out / "roi" / cfg.roi_run / "weights" / "best.pt"
    if "stn" in stages:
        stn_best = train_stn(cfg, cache, train_idx, val_idx)
    out["stn"] = stn_best if stn_best.exists() else None
    if "classifier" in stages:
        clf_best = train_classifier(cfg, cache, train_idx, val_idx, out["stn"])
    out["classifier"] = clf_best if clf_best.exists() else None
    if "roi" in stages:
        roi_best = train_roi(cfg, samples, train_idx, val_idx)
    out["roi"] = roi_best if roi_best.exists() else None
    if "export" in stages or cfg.stage == "all":
        if out["classifier"] is None:
            raise FileNotFoundError(f"no classifier checkpoint {clf_best}: run --stage classifier first")
        out["bundle"] = export_bundle(cfg, out["stn"], out["classifier"], out["roi"])
    return out


def install_bundle(bundle: Path, target_dir: Path) -> Path:
    """Copy a bundle and its manifest into ``target_dir`` (e.g. the package's weights folder)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    dst = target_dir / "cdss-cervical.pt"
    shutil.copyfile(bundle, dst)
    man = bundle.parent / "manifest.json"
    if man.exists():
        shutil.copyfile(man, target_dir / "manifest.json")
    return dst
