"""Package trained lumbar weights as the shipped model (``cdss/analysis/weights/lumbar/``).

The checkpoint is reduced to what inference needs (model in half precision, training
arguments, cdss metadata; no optimizer, no EMA copy), written as
``cdss-lumbar-seg.pt``, and described by ``manifest.json`` (name, version, sha256, architecture,
training data, recipe, evaluation figures). :class:`~cdss.analysis.lumbar.LumbarAnalyzer`
reads the manifest for the :class:`~cdss.analysis.types.ModelInfo` written into every result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from cdss.analysis._ultralytics import ultralytics

__all__ = ["inference_checkpoint", "ship_lumbar"]


def inference_checkpoint(
    checkpoint: Path, target: Path, inference: dict[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Write ``checkpoint`` reduced to what inference needs (half-precision model, training
    arguments, cdss metadata merged with ``inference``; no optimizer, no EMA copy) to ``target``.

    Returns the model (for its class names and architecture) and the cdss metadata written.
    """
    ultralytics()  # unpickling the checkpoint imports Ultralytics: configure it (offline, settings dir) first
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if inference:
        ckpt["cdss"] = {**(ckpt.get("cdss") or {}), **inference}
    model = (ckpt.get("ema") or ckpt["model"]).half()
    for p in model.parameters():
        p.requires_grad = False
    slim = {
        "model": model,
        "ema": None,
        "optimizer": None,
        "epoch": -1,
        "updates": None,
        "train_args": ckpt.get("train_args", {}),
        "train_metrics": ckpt.get("train_metrics"),
        "date": ckpt.get("date"),
        "version": ckpt.get("version"),
        "cdss": ckpt.get("cdss", {}),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)
    return model, dict(slim["cdss"])


def ship_lumbar(
    checkpoint: Path,
    dest_dir: Path,
    *,
    version: str,
    training_data: str,
    recipe: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the inference-only checkpoint and its manifest into ``dest_dir``; return the manifest.

    Parameters
    ----------
    inference
        Inference settings stored in the checkpoint's ``cdss`` metadata, which
        :meth:`cdss.analysis.lumbar.LumbarAnalyzer.load` reads: ``inference_imgsz``,
        ``spine_crop``, ``flip_average``, ``edge_refine``, ``abstain`` (a mapping of
        :class:`~cdss.analysis.lumbar.quality.AbstainRule` fields) — merged over what the
        checkpoint already holds.
    extra
        More manifest fields (e.g. where the metrics were measured).
    """
    target = dest_dir / "cdss-lumbar-seg.pt"
    model, meta = inference_checkpoint(checkpoint, target, inference)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    yaml_file = str(getattr(model, "yaml", {}).get("yaml_file", ""))
    manifest = {
        "name": "cdss-lumbar-seg",
        "version": version,
        "file": target.name,
        "sha256": digest,
        "size_bytes": target.stat().st_size,
        "precision": "float16",
        "architecture": Path(yaml_file).stem.replace("yolo11", "YOLO11").replace("yolov8", "YOLOv8")
        or "YOLO-seg",
        "classes": [str(model.names[k]) for k in sorted(model.names)],
        "inference_imgsz": meta.get("inference_imgsz"),
        "inference": meta,
        "training_data": training_data,
        "recipe": recipe,
        "metrics": metrics or {},
        "intended_use": "Research only; trained on synthetic radiographs; not validated on patients.",
        "model_card": "docs/models/lumbar.md",
        **(extra or {}),
    }
    (dest_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
