"""``cdss fixtures ...``: generate synthetic radiographs with ground truth, render previews."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cdss.synth.acquisition import Variant
from cdss.synth.generator import Kind
from cdss.synth.transfer import TransferSyntax

app = typer.Typer(help="Synthetic radiographs with exact ground truth (DICOM + JSON).", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


@app.command("generate")
def generate_cmd(
    out_dir: Path = typer.Argument(..., help="Directory for <name>.dcm + <name>.json pairs."),
    kind: Kind = typer.Option(Kind.LUMBAR_LATERAL, "--kind", "-k", help="What the images show."),
    count: int = typer.Option(10, "--count", "-n", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed; (kind, seed, index, variant) fixes an image."),
    variant: Variant = typer.Option(Variant.STANDARD, "--variant", help="Image-quality variant."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes."),
    transfer_syntax: TransferSyntax = typer.Option(
        TransferSyntax.EXPLICIT, "--transfer-syntax", "-t", help="Encoding of the DICOM files."
    ),
    start_index: int = typer.Option(0, "--start-index", min=0, help="Index of the first image."),
    max_side: int | None = typer.Option(
        None,
        "--max-side",
        min=64,
        help="Longest image side in pixels (coarser detector; for small fixtures).",
    ),
    laterality: str | None = typer.Option(
        None, "--laterality", help="Cervical oblique: 'L' or 'R' (default: random per image)."
    ),
    label: str | None = typer.Option(
        None, "--label", help="Cervical oblique: 'normal' or 'abnormal' (default: 50 % each)."
    ),
    body_part: str | None = typer.Option(
        None,
        "--body-part",
        help="Other: chest, hand, knee, pelvis or skull; family b: chest, chest_lateral, abdomen, pelvis, "
        "hip, tspine, knee, hand (default: random per image).",
    ),
    pair: bool = typer.Option(
        False,
        "--pair",
        help="Write each acquisition twice: DX For Processing (_proc) and For Presentation (_pres).",
    ),
    wild_headers: bool = typer.Option(
        False,
        "--wild-headers",
        help="Also write real-world, non-conformant header spellings (e.g. 'L-SPINE').",
    ),
    family: str = typer.Option(
        "a",
        "--family",
        help="Synthetic family: 'a' (cdss.synth, default) or 'b' (cdss.synth.family_b, independently designed).",
    ),
) -> None:
    """Write COUNT synthetic images of KIND (DICOM + ground-truth JSON) to OUT_DIR."""
    if family not in ("a", "b"):
        raise typer.BadParameter("must be a or b", param_hint="--family")
    if family == "b":
        _check_family_b(kind, laterality, label, body_part, pair)
        extra_b: dict[str, object] = {"family": "b"}
        if body_part is not None:
            extra_b["body_part"] = body_part
        _run(
            out_dir,
            kind,
            count,
            seed,
            variant,
            workers,
            transfer_syntax,
            start_index,
            max_side,
            wild_headers,
            extra_b,
        )
        return

    extra: dict[str, object] = {}
    if laterality is not None:
        if laterality.upper() not in ("L", "R"):
            raise typer.BadParameter("must be L or R", param_hint="--laterality")
        extra["laterality"] = laterality.upper()
    if label is not None:
        if label not in ("normal", "abnormal"):
            raise typer.BadParameter("must be normal or abnormal", param_hint="--label")
        extra["abnormal"] = label == "abnormal"
    if extra and kind is not Kind.CERVICAL_OBLIQUE:
        raise typer.BadParameter("only for --kind cervical_oblique", param_hint="--laterality/--label")
    if body_part is not None:
        if kind is not Kind.OTHER:
            raise typer.BadParameter("only for --kind other", param_hint="--body-part")
        if body_part not in ("chest", "hand", "knee", "pelvis", "skull"):
            raise typer.BadParameter("must be chest, hand, knee, pelvis or skull", param_hint="--body-part")
        extra["body_part"] = body_part
    if pair:
        extra["pair"] = True
    _run(
        out_dir,
        kind,
        count,
        seed,
        variant,
        workers,
        transfer_syntax,
        start_index,
        max_side,
        wild_headers,
        extra,
    )


_B_PARTS = ("chest", "chest_lateral", "abdomen", "pelvis", "hip", "tspine", "knee", "hand")


def _check_family_b(
    kind: Kind, laterality: str | None, label: str | None, body_part: str | None, pair: bool
) -> None:
    if kind is Kind.CERVICAL_OBLIQUE:
        raise typer.BadParameter("family b has lumbar_lateral, lumbar_ap and other only", param_hint="--kind")
    if laterality is not None or label is not None:
        raise typer.BadParameter(
            "cervical options do not apply to family b", param_hint="--laterality/--label"
        )
    if pair:
        raise typer.BadParameter("--pair exists for family a only", param_hint="--pair")
    if body_part is not None:
        if kind is not Kind.OTHER:
            raise typer.BadParameter("only for --kind other", param_hint="--body-part")
        if body_part not in _B_PARTS:
            raise typer.BadParameter(f"family b body parts: {', '.join(_B_PARTS)}", param_hint="--body-part")


def _run(
    out_dir: Path,
    kind: Kind,
    count: int,
    seed: int,
    variant: Variant,
    workers: int,
    transfer_syntax: TransferSyntax,
    start_index: int,
    max_side: int | None,
    wild_headers: bool,
    extra: dict[str, object],
) -> None:
    from cdss.synth.dataset import write_dataset

    times: list[float] = []
    with _progress() as progress:
        task = progress.add_task(f"{kind.value} ({variant.value})", total=count)

        def tick(w: Any) -> None:
            times.append(w.seconds)
            progress.advance(task)

        write_dataset(
            out_dir,
            kind,
            count,
            seed,
            variant,
            workers,
            transfer_syntax,
            start_index=start_index,
            progress=tick,
            max_side=max_side,
            wild_headers=wild_headers,
            **extra,
        )
    typer.echo(
        f"wrote {count} images to {out_dir} (median {statistics.median(times):.2f} s per image per worker)"
    )


@app.command("render")
def render_cmd(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="Directory with .dcm files."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="PNG directory (default: DIRECTORY/png)."),
    overlay: bool = typer.Option(False, "--overlay", help="Draw the ground truth from the .json files."),
    max_size: int = typer.Option(1024, "--max-size", min=64, help="Longest PNG side in pixels."),
) -> None:
    """Render every DICOM in DIRECTORY as PNG (display polarity), optionally with its ground truth."""
    from cdss.synth.overlay import render_png

    files = sorted(directory.glob("*.dcm"))
    if not files:
        typer.echo(f"error: no .dcm files in {directory}", err=True)
        raise typer.Exit(2)
    target = out_dir or directory / "png"
    with _progress() as progress:
        task = progress.add_task("render", total=len(files))
        for f in files:
            render_png(f, target / f"{f.stem}.png", overlay=overlay, max_size=max_size)
            progress.advance(task)
    typer.echo(f"wrote {len(files)} PNGs to {target}")


def register(root: typer.Typer) -> None:
    """Attach ``cdss fixtures`` to the root command."""
    root.add_typer(app, name="fixtures")
