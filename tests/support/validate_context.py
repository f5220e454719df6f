"""A rendered 4080super context for the validate tests, and how they read check results."""

from __future__ import annotations

from pathlib import Path

from zr4.paths import source_root
from zr4.profile import load_profile
from zr4.render import render_files, write_context
from zr4.validate import BuildContext
from zr4.validate.model import CheckResult

REPO = source_root()


def render(tmp_path: Path, *overrides: str) -> Path:
    """Render the default profile (with ``--set`` overrides) into ``tmp_path/docker``."""
    out = tmp_path / "docker"
    write_context(render_files(load_profile("4080super", overrides)), out)
    return out


def context_of(directory: Path) -> BuildContext:
    """The context as `zr4 validate` sees it (self-contained: no named contexts)."""
    return BuildContext(directory)


def messages(result: CheckResult) -> str:
    return "\n".join(str(finding) for finding in result.findings)
