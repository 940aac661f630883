"""Stage ``stn``: the Spatial Transformer, trained alone and then frozen (seed 004 section 3.4)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cdss.analysis.cervical.analyzer import resolve_device
from cdss.analysis.cervical.network import SpatialTransformer, rotation_theta, theta_angle
from cdss.train.cervical.batches import training_batch
from cdss.train.cervical.config import CervicalTrainConfig, append_log, log, save_atomic, seed_everything
from cdss.train.cervical.data import CropCache, SampleAugment

__all__ = ["load_stn", "train_stn"]


def _stn_target(angles: torch.Tensor, aspects: torch.Tensor) -> torch.Tensor:
    return rotation_theta(torch.nan_to_num(angles, nan=0.0), aspects)


def train_stn(cfg: CervicalTrainConfig, cache: CropCache, train_idx: np.ndarray, val_idx: np.ndarray) -> Path:
    """Train the STN (stage ``stn``); returns the path of its best state dict."""
    out = cfg.out / "stn"
    best_path = out / "best.pt"
    if best_path.exists() and not cfg.resume and cfg.stage != "stn":
        return best_path
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed + 1)
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
            x, _, ang, asp = training_batch(cache, perm[b : b + bs], cfg, aug, 10_000 + epoch)
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
        log().info("cervical stn epoch", **rec)
        append_log(cfg.out / "log.jsonl", rec)
        if err < best:
            best = err
            save_atomic({"model": stn.state_dict(), "loc_size": cfg.stn_loc_size, "val": rec}, best_path)
        save_atomic(
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
            x, _, ang, asp = training_batch(cache, idx[b : b + 32], cfg, aug, 20_000)
            th = stn.theta(x.to(device)).cpu()
            pred = theta_angle(th, asp)  # the rotation that the predicted matrix undoes
            ok = torch.isfinite(ang)
            errs.extend((pred[ok] - ang[ok]).abs().tolist())
            base.extend(ang[ok].abs().tolist())
    return (float(np.mean(errs)) if errs else math.nan, float(np.mean(base)) if base else math.nan)


def load_stn(path: Path, device: str) -> SpatialTransformer:
    ck = torch.load(path, map_location=device, weights_only=False)
    stn = SpatialTransformer(int(ck.get("loc_size", 96)))
    stn.load_state_dict(ck["model"])
    return stn.to(device).eval()
