"""The single ``cdss`` command. Sub-commands live in one module per area and hold no logic."""

from __future__ import annotations

import typer

from cdss.cli import config_cmd

app = typer.Typer(
    name="cdss",
    help="DICOM clinical decision support node for spine radiographs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

app.add_typer(config_cmd.app, name="config")


def _register() -> None:
    """Attach the area command modules (each defines ``register(app)``)."""
    from importlib import import_module

    for module in ("serve", "jobs", "audit", "users", "api", "fixtures", "train", "render"):
        try:
            mod = import_module(f"cdss.cli.{module}")
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name == f"cdss.cli.{module}":
                continue
            raise
        mod.register(app)


_register()


def main() -> None:
    app()
