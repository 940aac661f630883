"""Stage ``classifier``: the stenosis classifier behind the frozen STN (seed 004 section 3.5)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cdss.analysis.cervical.analyzer import resolve_device
from cdss.analysis.cervical.network import StenosisNet, build_classifier
from cdss.train.cervical.batches import training_batch
from cdss.train.cervical.config import (
    CervicalTrainConfig,
    append_log,
    jsonable,
    log,
    save_atomic,
    seed_everything,
)
from cdss.train.cervical.data import CropCache, SampleAugment
from cdss.train.cervical.metrics import binary_metrics, choose_operating_point
from cdss.train.cervical.stn import load_stn

__all__ = ["lr_at", "train_classifier"]


def lr_at(cfg: CervicalTrainConfig, frac: float) -> float:
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


def _predict(
    net: StenosisNet, cache: CropCache, idx: np.ndarray, cfg: CervicalTrainConfig, device: str
) -> np.ndarray:
    net.eval()
    probs = []
    with torch.no_grad():
        for b in range(0, len(idx), 16):
            x, _, _, _ = training_batch(cache, idx[b : b + 16], cfg, SampleAugment(), 0)
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
    seed_everything(cfg.seed + 2)
    stn = load_stn(stn_path, device) if stn_path is not None and stn_path.exists() else None
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
        log().info("cervical classifier resumed", epoch=epoch, step_in_epoch=step_in_epoch)

    def checkpoint(ep: int, step: int) -> None:
        save_atomic(
            {
                "classifier": net.classifier.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": ep,
                "step_in_epoch": step,
                "best_auc": best_auc,
                "best_loss": best_loss,
                "elapsed": elapsed,
                "history": history,
                "config": jsonable(asdict(cfg)),
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
            lr = lr_at(cfg, fraction(step))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, _, _ = training_batch(cache, perm[b * cfg.batch : (b + 1) * cfg.batch], cfg, aug, epoch)
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
                log().info(
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
            "lr_end": lr_at(cfg, fraction((epoch + 1) * n_batches - 1)),
            "train_seconds": round(train_seconds, 1),
            "s_per_image": round(train_seconds / max(1, done_batches * cfg.batch), 3),
            "images_seen": int(done_batches * cfg.batch),
            "run_fraction": round(fraction((epoch + 1) * n_batches - 1), 4),
            "stopped_by_time_budget": bool(out_of_time),
        }
        history.append(rec)
        log().info("cervical classifier epoch", **rec)
        append_log(cfg.out / "log.jsonl", rec)
        auc = m["auc"] if m["auc"] is not None else -val_loss
        if auc > best_auc or (auc == best_auc and val_loss < best_loss):
            best_auc, best_loss = auc, val_loss
            op = choose_operating_point(yv, probs, cfg.operating_point_method)
            save_atomic(
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
