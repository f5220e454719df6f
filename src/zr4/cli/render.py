"""`zr4 render`: profile in, Docker build context out (or compared, with --check)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from zr4.cli.common import PROFILE_OPTION, SET_OPTION
from zr4.errors import UsageError, Zr4Error
from zr4.paths import checkout_containing, source_root
from zr4.profile import load_profile


class StaleContextError(Zr4Error):
    """`render --check` found files that differ from a fresh render."""


def render(
    profile: str = PROFILE_OPTION,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Directory to write the build context to (default: docker/ of the zr4 checkout).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Compare with --out instead of writing; exit 1 if it differs."
    ),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Render a profile into a Docker build context (Dockerfile, start.sh, compose, locks, workflow...)."""
    from zr4.render import check_rendered, render_files, write_context  # Jinja2: not in the image's venv

    out = out if out is not None else default_out()
    resolved = load_profile(profile, overrides)
    files = render_files(resolved)
    if check:
        differences = check_rendered(files, out)
        if differences:
            listing = ", ".join(differences)
            raise StaleContextError(
                f"{out} is out of date for profile {resolved.name}: {listing}. "
                f"Run `{render_command(profile, overrides, out)}` and commit the result"
            )
        typer.echo(f"{out}: up to date with profile {resolved.name} ({len(files)} files)")
        return
    write_context(files, out)
    typer.echo(f"rendered profile {resolved.name} into {out}/ ({len(files)} files):")
    for item in files:
        typer.echo(f"  {item.path}  {len(item.content):,} bytes")


def default_out() -> Path:
    """``docker/`` (the committed build context) at the root of the checkout zr4 runs from, wherever
    the command is run; for an install from site-packages (``pip install .``), of the checkout the
    working directory lies in. Elsewhere there is no checkout to write into, so ``--out`` is required.
    """
    root = source_root() or checkout_containing(Path.cwd())
    if root is None:
        raise UsageError("zr4 is not running from a checkout: pass --out DIR for the build context")
    return root / "docker"


def render_command(profile: str, overrides: list[str], out: Path) -> str:
    """The command that renders this exact context again (the --set values included)."""
    sets = "".join(f" --set {shlex.quote(assignment)}" for assignment in overrides)
    return f"zr4 render --profile {shlex.quote(profile)}{sets} --out {shlex.quote(str(out))}"
