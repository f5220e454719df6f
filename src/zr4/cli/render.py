"""`zr4 render`: profile in, Docker build context out (or compared, with --check)."""

from __future__ import annotations

from pathlib import Path

import typer

from zr4.cli.common import PROFILE_OPTION, SET_OPTION
from zr4.errors import Zr4Error
from zr4.profile import load_profile
from zr4.render import check_rendered, render_files, write_context


class StaleContextError(Zr4Error):
    """`render --check` found files that differ from a fresh render."""


def render(
    profile: str = PROFILE_OPTION,
    out: Path = typer.Option(Path("docker"), "--out", "-o", help="Directory to write the build context to."),
    check: bool = typer.Option(
        False, "--check", help="Compare with --out instead of writing; exit 1 if it differs."
    ),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Render a profile into a Docker build context (Dockerfile, start.sh, compose, locks, workflow...)."""
    resolved = load_profile(profile, overrides)
    files = render_files(resolved)
    if check:
        differences = check_rendered(files, out)
        if differences:
            listing = ", ".join(differences)
            raise StaleContextError(
                f"{out} is out of date for profile {resolved.name}: {listing}. "
                f"Run `zr4 render --profile {profile} --out {out}` and commit the result"
            )
        typer.echo(f"{out}: up to date with profile {resolved.name} ({len(files)} files)")
        return
    write_context(files, out)
    typer.echo(f"rendered profile {resolved.name} into {out}/ ({len(files)} files):")
    for item in files:
        typer.echo(f"  {item.path}  {len(item.content):,} bytes")
