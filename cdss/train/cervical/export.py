"""Stage ``export``: the bundle (STN + fp16 classifier + detector) and its manifest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from cdss.analysis.cervical.bundle import BundleMeta, file_sha256, save_bundle
from cdss.train.cervical.config import CervicalTrainConfig, jsonable

__all__ = ["export_bundle"]

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
            "recipe": jsonable(
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
            "validation": jsonable(val),
            "stn_validation": jsonable(stn_val),
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
