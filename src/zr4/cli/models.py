"""`zr4 models` commands (filled in by the models work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="models commands")
