"""`zr4 sync` commands (filled in by the sync work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="sync commands")
