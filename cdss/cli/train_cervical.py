"""``cdss train cervical`` and ``cdss evaluate cervical`` (attached to the groups of :mod:`cdss.cli.train`).

The logic lives in :mod:`cdss.train.cervical` and :mod:`cdss.train.cervical.evaluate`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

__all__ = ["evaluate_cervical_cmd", "register_commands", "train_cervical_cmd"]

console = Console()


class Stage(StrEnum):
    ALL = "all"
    STN = "stn"
    CLASSIFIER = "classifier"
    ROI = "roi"
    EXPORT = "export"


def train_cervical_cmd(
    data: Path = typer.Option(
        ...,
        "--data",
        help="cdss synthetic cervical obliques (DICOM + JSON, any depth) or a site folder with "
        "labels.csv (file,laterality,label[,x0,y0,x1,y1]).",
    ),
    out: Path = typer.Option(
        Path("var/train/cervical"), "--out", help="Run directory (cache, checkpoints, bundle)."
    ),
    stage: Stage = typer.Option(
        Stage.ALL, "--stage", help="stn, classifier, roi, export, or all (in that order)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    epochs: int = typer.Option(
        5, "--epochs", min=1, help="Classifier epochs (seed 004: 25; see model card)."
    ),
    imgsz: int = typer.Option(192, "--imgsz", min=32, help="Classifier input side, pixels (seed 004: 512)."),
    batch: int = typer.Option(4, "--batch", min=1, help="Classifier batch size (seed 004: 4)."),
    crop: str = typer.Option(
        "stretch",
        "--crop",
        help="stretch: ROI + margin resized to the square input (seed 004); pad: aspect kept.",
    ),
    pool: str = typer.Option(
        "max", "--pool", help="ResNet50 global pooling: max (shipped) or avg (torchvision)."
    ),
    backbone: str = typer.Option(
        "resnet50",
        "--backbone",
        help="Classifier: resnet50 (seed 004), resnet34, resnet18 or compact (five-stage CNN; what ships).",
    ),
    optimizer: str = typer.Option(
        "sgd", "--optimizer", help="sgd (seed 004, momentum 0.9) or adamw (shipped model, see card)."
    ),
    lr: float = typer.Option(0.001, "--lr", help="Initial SGD learning rate (seed 004: 0.001)."),
    lr_milestones: str | None = typer.Option(
        None,
        "--lr-milestones",
        help="Fractions of the run where the lr drops ×0.1, e.g. 0.7,0.9 (default: seed 004's "
        "every 7/25 of the run).",
    ),
    warmup: float = typer.Option(
        0.0, "--warmup", min=0.0, max=0.5, help="Linear lr warm-up, fraction of the run."
    ),
    time_hours: float | None = typer.Option(
        None,
        "--time-hours",
        help="Classifier wall-clock budget: the lr schedule runs on elapsed time and training stops "
        "when it is spent (--epochs is then an upper bound).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    stn_epochs: int = typer.Option(8, "--stn-epochs", min=1, help="Spatial transformer epochs."),
    roi_epochs: int = typer.Option(25, "--roi-epochs", min=1, help="ROI detector (YOLO11n) epochs."),
    roi_imgsz: int = typer.Option(320, "--roi-imgsz", min=32, help="ROI detector image size."),
    roi_max_images: int = typer.Option(600, "--roi-max-images", min=1, help="ROI detector training images."),
    roi_weights: Path | None = typer.Option(
        None, "--roi-weights", help="Use this trained detector (.pt) instead of training one."
    ),
    roi_init: Path | None = typer.Option(
        None, "--roi-init", help="Start the detector from these weights (.pt) instead of random init."
    ),
    roi_run: str = typer.Option("train", "--roi-run", help="Name of the detector run folder under OUT/roi."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", min=0.05, max=0.5, help="Validation share."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, augmentation and initialisation."),
    max_images: int | None = typer.Option(None, "--max-images", help="Use at most this many images."),
    operating_point: str = typer.Option(
        "youden", "--operating-point", help="youden, sens90, sens95 or a probability (chosen on validation)."
    ),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch CPU threads (0 = default; use 1 on a CPU shared with other jobs)."
    ),
    model_version: str = typer.Option(
        "1.0.0", "--model-version", help="Version written into the bundle and manifest (e.g. 2.0.0)."
    ),
) -> None:
    """Train the cervical foraminal stenosis model (ROI detector, STN, ResNet50 or lighter) — seed 004."""
    from rich.progress import Progress, TaskID

    from cdss.logs import configure_logging
    from cdss.train.cervical import CervicalTrainConfig, train_cervical

    configure_logging("INFO")
    cfg = CervicalTrainConfig(
        data=data,
        out=out,
        stage=stage.value,
        device=device,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        crop=crop,
        pool=pool,
        backbone=backbone,
        optimizer=optimizer,
        lr=lr,
        lr_milestones=tuple(float(v) for v in lr_milestones.split(",")) if lr_milestones else None,
        warmup_fraction=warmup,
        time_hours=time_hours,
        resume=resume,
        stn_epochs=stn_epochs,
        roi_epochs=roi_epochs,
        roi_imgsz=roi_imgsz,
        roi_max_images=roi_max_images,
        roi_weights=roi_weights,
        roi_init=roi_init,
        roi_run=roi_run,
        val_fraction=val_fraction,
        seed=seed,
        max_images=max_images,
        operating_point_method=operating_point,
        threads=threads,
        version=model_version,
    )
    console.print(f"[bold]Training cervical stenosis[/bold] (stage {stage.value}) on {data} → {out}")
    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def tick(name: str, i: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=n)
            progress.update(tasks[name], completed=i)

        paths = train_cervical(cfg, progress=tick)
    for k, v in paths.items():
        console.print(f"{k}: {v}")


def evaluate_cervical_cmd(
    data: list[Path] = typer.Option(
        ..., "--data", help="Held-out cervical obliques (synthetic DICOM + JSON or labels.csv); repeatable."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Cervical bundle (.pt); default: shipped."),
    out: Path = typer.Option(Path("var/eval/cervical"), "--out", help="Where metrics.json and ROC plots go."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    operating_point: float | None = typer.Option(
        None, "--operating-point", help="Threshold override (default: the one stored with the weights)."
    ),
    skip_roi: bool = typer.Option(False, "--skip-roi", help="Skip the ROI detector's own figures (mAP50)."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many images per --data directory."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch CPU threads (0 = default; 1 on a busy CPU)."
    ),
) -> None:
    """Evaluate cervical weights: accuracy, F1, sensitivity, specificity, AUC per view and variant, ROI mAP50."""
    from cdss.train.cervical.evaluate import evaluate_cervical, render_summary

    metrics = evaluate_cervical(
        data,
        weights=weights,
        out=out,
        device=device,
        operating_point=operating_point,
        with_roi=not skip_roi,
        limit=limit,
        threads=threads,
    )
    render_summary(metrics, console)
    console.print(f"metrics: {out / 'metrics.json'}")
    if not metrics.get("targets", {}).get("all_met", False):
        console.print("[yellow]Not every target is met (see metrics.json 'targets').[/yellow]")
    json.dumps(metrics)


def register_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add ``cervical`` to ``cdss train`` and ``cdss evaluate``."""
    train_app.command("cervical")(train_cervical_cmd)
    evaluate_app.command("cervical")(evaluate_cervical_cmd)
