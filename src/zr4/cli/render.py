"""`zr4 render`: profile in, Docker build context out (or compared, with --check)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
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
        help=(
            "Folder to write the build context to: a new or empty one, or one zr4 rendered before, where"
            " only zr4's own files are replaced (default: docker/ of the zr4 checkout)."
        ),
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
            raise StaleContextError(stale_advice(out, resolved.name, profile, overrides, differences))
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


def render_command(profile: str, overrides: list[str], out: Path | str, check: bool = False) -> str:
    """The command that renders this exact context again (the --set values included)."""
    sets = "".join(f" --set {shlex.quote(assignment)}" for assignment in overrides)
    flag = " --check" if check else ""
    return f"zr4 render --profile {shlex.quote(profile)}{sets}{flag} --out {shlex.quote(str(out))}"


def stale_advice(out: Path, name: str, profile: str, overrides: list[str], differences: list[str]) -> str:
    """What `render --check` says about a stale folder: what differs, and a fix that harms nothing.

    Rendering into a folder that holds another profile's context would replace that context (the
    committed docker/ is 4080super's), so then the advice points at a folder of the profile's own;
    "commit" is said only where git tracks the folder.
    """
    from zr4.render import context_profile

    held = context_profile(out)
    if held is not None and held != name:
        own = _golden_folder(name)
        where = (
            f"check it against its own folder: `{render_command(profile, overrides, own, check=True)}`"
            if own is not None
            else f"render it into a folder of its own: `{render_command(profile, overrides, 'DIR')}`"
        )
        count = f"{len(differences)} file{'s' if len(differences) != 1 else ''} differ"
        return f"{out} holds the build context of profile {held}, not {name} ({count}); {where}"
    listing = ", ".join(differences)
    commit = " and commit the result" if tracked_by_git(out) else ""
    return (
        f"{out} is out of date for profile {name}: {listing}. "
        f"Run `{render_command(profile, overrides, out)}`{commit}"
    )


def _golden_folder(name: str) -> Path | None:
    """The checkout's committed render of profile ``name`` (docker/ or tests/golden/<name>), if any."""
    from zr4.render import context_profile

    root = source_root() or checkout_containing(Path.cwd())
    if root is None:
        return None
    for folder in (root / "docker", root / "tests" / "golden" / name):
        if folder.is_dir() and context_profile(folder) == name:
            return folder
    return None


def tracked_by_git(folder: Path) -> bool:
    """Whether git tracks any file of ``folder`` (so a fresh render there is something to commit)."""
    git = shutil.which("git")
    if git is None or not folder.is_dir():
        return False
    try:
        listed = subprocess.run(
            [git, "-C", str(folder), "ls-files", "-z", "--", "."],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and bool(listed.stdout)
