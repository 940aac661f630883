"""``cdss train <analysis>`` and ``cdss evaluate <analysis>``: one sub-command per analysis.

Each analysis adds its commands to the two groups in :func:`register` (``train_app`` and
``evaluate_app``); the logic lives in :mod:`cdss.train`. Adding an analysis (e.g. cervical) is a
``@train_app.command("cervical")`` and an ``@evaluate_app.command("cervical")`` function.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from cdss.cli import train_view
from cdss.config import ModelSettings

__all__ = ["evaluate_app", "register", "train_app"]

console = Console(width=140)
train_app = typer.Typer(help="Train an analysis model.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate an analysis model on held-out data.", no_args_is_help=True)


class DataFormat(StrEnum):
    SYNTHETIC = "synthetic"
    BUU = "buu"
    YOLO = "yolo"


class ClassSchemeOption(StrEnum):
    ANATOMICAL = "anatomical"
    LEVELS = "levels"


class Architecture(StrEnum):
    YOLO11N = "yolo11n-seg"
    YOLO11S = "yolo11s-seg"
    YOLOV8N = "yolov8n-seg"
    YOLOV8S = "yolov8s-seg"


@train_app.command("lumbar")
def train_lumbar_cmd(
    data: Path = typer.Option(
        ..., "--data", help="Training data directory (or data.yaml for --format yolo)."
    ),
    out: Path = typer.Option(Path("var/train/lumbar"), "--out", help="Run directory (dataset, checkpoints)."),
    fmt: DataFormat = typer.Option(
        DataFormat.SYNTHETIC,
        "--format",
        help="synthetic: cdss synthetic DICOM + JSON; buu: BUU-LSPINE (AP/LA folders of JPG + CSV); "
        "yolo: an Ultralytics segmentation dataset.",
    ),
    model: Architecture = typer.Option(Architecture.YOLO11N, "--model", help="Architecture (bundled YAML)."),
    epochs: int = typer.Option(60, "--epochs", min=1, help="Epochs (upper bound when --time-hours is set)."),
    imgsz: int = typer.Option(512, "--imgsz", min=64, help="Training image size, pixels."),
    batch: int = typer.Option(8, "--batch", min=1, help="Batch size."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loader worker processes."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the interrupted run in --out from last.pt."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val split and of training."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9, help="Validation share."),
    spine_crops: bool = typer.Option(
        False,
        "--spine-crops/--no-spine-crops",
        help="Train on random crops around the spine (see model card).",
    ),
    level_crops: int = typer.Option(
        0,
        "--level-crops",
        min=0,
        max=5,
        help="Extra zoomed crops around one level (two adjacent vertebrae) per training image "
        "(what the analysis' zoom refinement shows the model).",
    ),
    variety_p: float = typer.Option(
        0.0,
        "--variety-p",
        min=0.0,
        max=1.0,
        help="Probability of one randomised appearance change per sample (gamma, CLAHE, unsharp "
        "mask, blur, noise, contrast, intensity ramp), on top of seed 000's augmentations.",
    ),
    style_p: float = typer.Option(
        0.0,
        "--style-p",
        min=0.0,
        max=1.0,
        help="Probability of a chain of 1-3 style operations per sample (tone curves, windows, CLAHE, "
        "JPEG, resolution loss, grid lines, seams, burned-in text, quantum noise): the cross-family recipe.",
    ),
    classes: ClassSchemeOption = typer.Option(
        ClassSchemeOption.ANATOMICAL,
        "--classes",
        help="anatomical: 'vertebra' (every body, T12 too) and 'sacrum', named from anatomy by the "
        "analysis (default); levels: seed 000's six classes L1...S1.",
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Start from these weights (.pt, e.g. the shipped model) instead of random initialisation "
        "(fine-tuning; another class scheme transfers all but the classification head).",
    ),
    inference_imgsz: int | None = typer.Option(
        None, "--inference-imgsz", help="Image size the analysis uses with these weights (default: --imgsz)."
    ),
    time_hours: float | None = typer.Option(
        None, "--time-hours", help="Wall-clock budget: Ultralytics fits the epochs and LR schedule into it."
    ),
) -> None:
    """Train the lumbar vertebral-body segmentation model (YOLO segmentation; vertebra + sacrum)."""
    os.environ.setdefault("YOLO_VERBOSE", "True")  # Ultralytics' own epoch progress bars and metrics
    from cdss.train.lumbar import LumbarTrainConfig, train_lumbar

    extra = {"time": time_hours} if time_hours else {}
    cfg = LumbarTrainConfig(
        data=data,
        out=out,
        format=fmt.value,
        model=model.value,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=workers,
        resume=resume,
        seed=seed,
        val_fraction=val_fraction,
        spine_crops=spine_crops,
        level_crops=level_crops,
        variety_p=variety_p,
        style_p=style_p,
        classes=classes.value,
        init=init,
        inference_imgsz=inference_imgsz,
        extra=extra,
    )
    console.print(f"[bold]Training lumbar segmentation[/bold] ({model.value}, {fmt.value} data) → {out}")
    best = train_lumbar(cfg)
    console.print(f"[green]Done.[/green] Weights: {best}")


@evaluate_app.command("lumbar")
def evaluate_lumbar_cmd(
    data: list[Path] = typer.Option(
        ..., "--data", help="Held-out cdss synthetic lumbar images (DICOM + JSON), any depth; repeatable."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Weights (.pt); default: the shipped model."),
    out: Path = typer.Option(Path("var/eval/lumbar"), "--out", help="Where metrics.json and plots go."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threshold: float = typer.Option(5.0, "--threshold", help="Listhesis threshold, percent."),
    grade_margin: float = typer.Option(
        ModelSettings().grade_margin_pp,
        "--grade-margin",
        min=0.0,
        help="No grade within this many pp (plus --grade-margin-fraction of the slip) of a grade "
        "boundary (the node's models.grade_margin_pp; 0 with fraction 0 = off).",
    ),
    grade_margin_fraction: float = typer.Option(
        ModelSettings().grade_margin_fraction,
        "--grade-margin-fraction",
        min=0.0,
        help="Part of the grade margin that grows with the slip (the node's models.grade_margin_fraction).",
    ),
    skip_map: bool = typer.Option(False, "--skip-map", help="Skip the Ultralytics box/mask mAP validation."),
    trained_on: list[str] = typer.Option(
        [],
        "--trained-on",
        help="Synthetic families the weights were trained on (A, B; repeat): the others are checked "
        "against the cross-family targets. Default: the shipped manifest's families.",
    ),
    logo: list[str] = typer.Option(
        [],
        "--logo",
        help="Leave-one-family-out report instead: FAMILY=WEIGHTS for each family's model "
        "(e.g. --logo A=var/train/a/best.pt --logo B=var/train/b/best.pt), each tested on every family.",
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="At most this many images (0 = all)."),
) -> None:
    """Evaluate lumbar weights: mask mAP, slip error (all and listhesis levels), grades, abstention, per family."""
    from cdss.analysis.lumbar.quality import GradeMargin
    from cdss.train.evaluate import evaluate_logo, evaluate_lumbar, render_logo, render_summary

    margin = GradeMargin(grade_margin, grade_margin_fraction)

    if logo:
        models = {}
        for item in logo:
            fam, sep, path = item.partition("=")
            if not sep or not fam or not path:
                raise typer.BadParameter(f"--logo {item!r}: expected FAMILY=WEIGHTS, e.g. A=best.pt")
            models[fam.strip().upper()] = Path(path)
        report = evaluate_logo(
            data,
            models,
            out=out,
            device=device,
            threshold_percent=threshold,
            grade_margin=margin,
            limit=limit,
        )
        render_logo(report, console)
        console.print(f"report: {out / 'logo.json'}")
        return
    metrics = evaluate_lumbar(
        data,
        weights=weights,
        out=out,
        device=device,
        threshold_percent=threshold,
        grade_margin=margin,
        with_map=not skip_map,
        trained_on={f.upper() for f in trained_on} or None,
        limit=limit,
    )
    render_summary(metrics, console)
    console.print(f"metrics: {out / 'metrics.json'}")
    if not metrics.get("targets", {}).get("all_met", False):
        console.print("[yellow]Not every target is met (see metrics.json 'targets').[/yellow]")
    json.dumps(metrics)  # fail loudly here if something non-serialisable slipped in


def register(app: typer.Typer) -> None:
    """Attach ``train`` and ``evaluate`` to the ``cdss`` command."""
    from cdss.cli.train_cervical import register_commands

    register_commands(train_app, evaluate_app)
    train_view.register_commands(train_app, evaluate_app)
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
