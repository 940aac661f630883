"""The cervical training run: data (split, crop cache), then the requested stages in order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cdss.train.cervical.classifier import train_classifier
from cdss.train.cervical.config import STAGES, CervicalTrainConfig, log
from cdss.train.cervical.data import CropCache, Sample, build_cache, cache_size, discover, split_indices
from cdss.train.cervical.export import export_bundle
from cdss.train.cervical.roi import roi_finder, train_roi
from cdss.train.cervical.stn import train_stn

__all__ = ["train_cervical"]


def prepare_data(
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
        finder = roi_finder(cfg) if any(s.roi is None for s in samples) else None
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
    samples, cache, train_idx, val_idx = prepare_data(cfg, progress)
    log().info(
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
