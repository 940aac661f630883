"""``cdss render``: draw cdss (or any) SEG / GSPS results over their source radiograph as a PNG."""

from __future__ import annotations

from pathlib import Path

import pydicom
import typer

from cdss.render import RenderError, render_files, write_png


def render(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="Source DICOM image (DX/CR)."),
    seg: list[Path] = typer.Option(
        [], "--seg", exists=True, dir_okay=False, help="DICOM Segmentation to outline (repeatable)."
    ),
    gsps: list[Path] = typer.Option(
        [], "--gsps", exists=True, dir_okay=False, help="Grayscale Softcopy Presentation State (repeatable)."
    ),
    out: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="PNG file to write."),
    max_size: int | None = typer.Option(
        None, "--max-size", min=16, help="Downscale so the longer side is at most this many pixels."
    ),
) -> None:
    """Draw SEG outlines and GSPS annotations over SOURCE and write a PNG (display polarity)."""
    try:
        source_ds = pydicom.dcmread(source)
        seg_ds = [pydicom.dcmread(p) for p in seg]
        gsps_ds = [pydicom.dcmread(p) for p in gsps]
        rgb = render_files(source_ds, segs=seg_ds, gsps=gsps_ds)
        path = write_png(rgb, out, max_size=max_size)
    except (RenderError, ValueError, OSError, pydicom.errors.InvalidDicomError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Attach ``cdss render`` to the main app."""
    app.command("render")(render)
