"""Options shared by the commands that take a profile."""

from __future__ import annotations

import typer

PROFILE_OPTION = typer.Option(
    "4080super",
    "--profile",
    "-p",
    help="Bundled profile name (see `zr4 profiles`) or a path to your own YAML.",
)
SET_OPTION = typer.Option(
    [], "--set", help="Override one field, e.g. --set model.gguf_level=Q5_K_M (repeatable)."
)
