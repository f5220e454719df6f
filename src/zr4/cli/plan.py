"""`zr4 plan` and `zr4 tune` (filled in by the planner work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the planner's top-level commands to ``app``."""
