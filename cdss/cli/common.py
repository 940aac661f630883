"""What every ``cdss`` command shares: loading the settings and naming the person at the keyboard."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from cdss.config import ConfigError, Settings, load_settings

__all__ = ["cli_actor", "settings_or_exit"]


def settings_or_exit(config: Path | None) -> Settings:
    """The effective settings, or exit with status 2 and the configuration error on stderr."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def cli_actor() -> str:
    """Who acts, for the audit trail: ``cli:<os user>`` (``cli`` when the user cannot be named)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
