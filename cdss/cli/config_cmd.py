"""``cdss config ...``: show the effective configuration."""

from __future__ import annotations

import json
from pathlib import Path

import tomli_w
import typer

from cdss.cli.common import settings_or_exit

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML configuration file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of TOML."),
) -> None:
    """Print the effective configuration (file + CDSS_* environment + defaults)."""
    settings = settings_or_exit(config)
    data = settings.to_toml_dict()
    typer.echo(json.dumps(data, indent=2) if as_json else tomli_w.dumps(data))
