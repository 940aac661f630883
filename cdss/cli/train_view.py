"""``cdss train view``, ``cdss train view-ship`` and ``cdss evaluate view``.

Attached to the groups of :mod:`cdss.cli.train`; the logic lives in :mod:`cdss.train.view`.
Like the other training commands, each command imports torch and the training code when it
runs, so that ``cdss`` itself starts quickly (torch costs about 1.5 s to import).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cdss.analysis.view.labels import LABELS

__all__ = ["evaluate_view_cmd", "register_commands", "ship_view_cmd", "train_view_cmd"]

console = Console(width=140)


class _Bars:
    """One rich progress bar per stage name (cache, train, epoch, evaluate ...)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int, info: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        task = self.tasks[stage]
        if done <= 1 and stage == "train":
            self.progress.reset(task, total=total)
        self.progress.update(task, completed=done, total=total, description=f"{stage} {info}".strip())


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def train_view_cmd(
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="Training data directory (repeatable): cdss synthetic DICOM + JSON of any family, or a "
        "site folder with labels.csv (file,label).",
    ),
    val_data: list[Path] = typer.Option(
        [], "--val", help="Validation directory (repeatable); default: --val-fraction of --data."
    ),
    out: Path = typer.Option(
        Path("var/train/view"), "--out", help="Run directory (cache, checkpoints, weights)."
    ),
    epochs: int = typer.Option(14, "--epochs", min=1, help="Epochs (upper bound when --time-hours is set)."),
    imgsz: int = typer.Option(128, "--imgsz", min=32, help="Input side, pixels."),
    width: int = typer.Option(24, "--width", min=4, help="Network stem width (channels)."),
    planes: str = typer.Option(
        "eq-std-mask", "--planes", help="Input planes: eq-std-mask or eq-lcn-mask (see preprocess)."
    ),
    batch: int = typer.Option(64, "--batch", min=2, help="Batch size."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak AdamW learning rate (warm-up, then cosine)."),
    augment: float = typer.Option(
        1.0, "--augment", min=0.0, max=2.0, help="Augmentation strength (0 = none, 1 = shipped recipe)."
    ),
    bend: float = typer.Option(
        0.0,
        "--bend",
        min=0.0,
        max=1.0,
        help="Probability of the sideways 'bend' augmentation (see model card).",
    ),
    val_fraction: float = typer.Option(0.15, "--val-fraction", min=0.0, max=0.9, help="Used without --val."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    workers: int = typer.Option(1, "--workers", min=0, help="Data-loader worker processes."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch CPU threads (0 = torch's default)."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling, augmentation and initialisation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    time_hours: float | None = typer.Option(None, "--time-hours", help="Stop after this wall-clock budget."),
    name: str = typer.Option("cdss-view", "--name", help="Model name written into the weights."),
    version: str = typer.Option("0.0.0", "--version", help="Model version written into the weights."),
) -> None:
    """Train the view classifier (lumbar lateral / lumbar AP / cervical oblique L / R / other)."""
    from cdss.train.view import ViewTrainConfig, train_view

    cfg = ViewTrainConfig(
        data=list(data),
        val_data=list(val_data),
        out=out,
        epochs=epochs,
        imgsz=imgsz,
        width=width,
        planes=planes,
        batch=batch,
        lr=lr,
        augment_strength=augment,
        bend=bend,
        val_fraction=val_fraction,
        device=device,
        workers=workers,
        threads=threads,
        seed=seed,
        resume=resume,
        time_hours=time_hours,
        name=name,
        version=version,
    )
    with _progress() as progress:
        outcome = train_view(cfg, _Bars(progress))
    v = outcome.validation
    console.print(
        f"best epoch {outcome.best_epoch + 1}: val accuracy {v['val_clean_accuracy']:.4f} "
        f"(augmented {v['val_aug_accuracy']:.4f}), val loss {v['val_loss']:.4f}"
    )
    console.print(f"weights {outcome.weights} sha256 {outcome.sha256}")


def _table(name: str, s: dict) -> Table:
    t = Table(title=f"{name}: {s['images']} images, accuracy {s['accuracy']:.4f}")
    t.add_column("true \\ predicted")
    for lab in LABELS:
        t.add_column(lab.value.replace("cervical_oblique", "c_obl"), justify="right")
    t.add_column("accuracy", justify="right")
    for k, lab in enumerate(LABELS):
        pc = s["per_class"][lab.value]
        t.add_row(lab.value, *[str(v) for v in s["confusion"][k]], f"{pc['accuracy']:.3f}" if pc else "-")
    return t


def evaluate_view_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Held-out directory (repeatable; one report each)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights file (default: the shipped one)."),
    device: str = typer.Option("cpu", "--device", help="cpu (the node's usual case), auto, cuda or cuda:N."),
    threads: int = typer.Option(1, "--threads", min=0, help="Torch CPU threads (0 = torch's default)."),
    decide_threshold: float = typer.Option(
        0.65, "--decide-threshold", help="Routing rates at this threshold."
    ),
    veto_threshold: float = typer.Option(0.8, "--veto-threshold", help="Routing rates at this p(other)."),
    out: Path | None = typer.Option(None, "--out", help="Write the full JSON report here."),
    routing: bool = typer.Option(
        False,
        "--routing",
        help="Also route every image as sent, without view tags, and (non-spine) labelled LSPINE, "
        "by tags alone and with the classifier at the given thresholds.",
    ),
) -> None:
    """Evaluate the view classifier on held-out sets (accuracy per class, confusion, ms per image)."""
    import torch

    from cdss.config import RouteSettings
    from cdss.train.view import evaluate_view, routing_study

    if threads > 0:
        torch.set_num_threads(threads)
    with _progress() as progress:
        report = evaluate_view(
            weights,
            data,
            device=device,
            decide_threshold=decide_threshold,
            veto_threshold=veto_threshold,
            progress=_Bars(progress),
        )
    for name, s in report["sets"].items():
        console.print(_table(name, s))
        r = s["routing"]
        console.print(
            f"  analysis accuracy {s['analysis_accuracy']:.4f}; classify {s['ms_per_image_classify']['median']:.1f} ms "
            f"median (read+display+classify {s['ms_per_image_read_display_classify']['median']:.1f} ms); "
            f"confident ≥{r['decide_threshold']}: {r['decided_share']:.3f} "
            f"(right analysis {r['decided_correct_analysis'] or 0:.3f}); p(other) ≥{r['veto_threshold']}: "
            f"spine {r['spine_vetoed_share'] or 0:.3f}, other {r['other_vetoed_share'] or 0:.3f}"
        )
    if routing:
        settings = RouteSettings(
            classifier_min_probability=decide_threshold, classifier_veto_probability=veto_threshold
        )
        with _progress() as progress:
            study = routing_study(weights, data, settings, device=device, progress=_Bars(progress))
        report["routing_study"] = study
        for name, per in study["sets"].items():
            t = Table(title=f"routing {name} (decide ≥{decide_threshold}, veto ≥{veto_threshold})")
            for col in ("scenario / truth", "images", "right, tags only", "right, with classifier", "rules"):
                t.add_column(col)
            for key, rec in per.items():
                rules = ", ".join(f"{k} {v}" for k, v in sorted(rec["rules"].items()))
                t.add_row(
                    key,
                    str(rec["images"]),
                    f"{rec['right_share_tags_only']:.3f}",
                    f"{rec['right_share']:.3f}",
                    rules,
                )
            console.print(t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1), encoding="utf-8")
        console.print(f"report written to {out}")


def ship_view_cmd(
    weights: Path = typer.Option(Path("var/train/view/cdss-view.pt"), "--weights", help="Trained weights."),
    report: list[Path] = typer.Option(
        [], "--report", help="`cdss evaluate view --out` report(s) whose figures go into the manifest."
    ),
    target: Path = typer.Option(
        Path(__file__).resolve().parent.parent / "analysis" / "weights" / "view",
        "--target",
        help="Directory of the shipped weights (package data).",
    ),
) -> None:
    """Install trained view weights as the shipped model and write manifest.json."""
    from cdss.analysis.view.weights import file_sha256, load_view_weights

    meta, _ = load_view_weights(weights)
    target.mkdir(parents=True, exist_ok=True)
    dest = target / "cdss-view.pt"
    shutil.copyfile(weights, dest)
    metrics = {}
    for path in report:
        rep = json.loads(path.read_text(encoding="utf-8"))
        for name, s in rep["sets"].items():
            metrics[str(name)] = {  # the set as given (two families may both be called "a")
                k: s[k]
                for k in (
                    "images",
                    "families",
                    "accuracy",
                    "analysis_accuracy",
                    "per_class",
                    "confusion",
                    "cervical_side_accuracy",
                    "routing",
                    "ms_per_image_classify",
                )
            }
    manifest: dict[str, Any] = {
        "name": meta.name,
        "version": meta.version,
        "file": dest.name,
        "sha256": file_sha256(dest),
        "size_bytes": dest.stat().st_size,
        "architecture": meta.architecture,
        "imgsz": meta.imgsz,
        "labels": meta.labels,
        "training_data": meta.training_data,
        "training": meta.training,
        "metrics": metrics,
        "card": "docs/models/view.md",
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    console.print(f"installed {dest} ({manifest['sha256'][:12]}) and {target / 'manifest.json'}")


def register_commands(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the view commands to the ``train`` and ``evaluate`` groups."""
    train_app.command("view")(train_view_cmd)
    train_app.command("view-ship")(ship_view_cmd)
    evaluate_app.command("view")(evaluate_view_cmd)
