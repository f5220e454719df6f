"""`zr4 lock`: regenerate or check a profile's stack locks (one per pose backend the stack can run) and
zr4's own runtime lock (thin layer over zr4.lock)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from zr4 import lock as locks
from zr4.errors import UsageError
from zr4.profile import bundled_profile_names, load_profile
from zr4.profile.models import Profile


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _profiles_on(lock_name: str) -> list[str]:
    return [name for name in bundled_profile_names() if load_profile(name).lock_name == lock_name]


def _sharing_note(variant: Profile) -> str:
    """Which bundled profiles install this lock; for a lock none installs, how to build one that does."""
    sharing = _profiles_on(variant.lock_name)
    if sharing:
        return f" (profiles {', '.join(sharing)})"
    backend = variant.features.pose_backend
    return f" (no bundled profile; --set features.pose_backend={backend} installs it)"


def _command(profile: str, index_url: str, *flags: str) -> str:
    """The `zr4 lock` command line for this profile and index, with ``flags`` (e.g. ``--upgrade``)."""
    words = ["zr4", "lock", "--profile", profile]
    if index_url != locks.PYPI_SIMPLE:
        words += ["--index-url", index_url]
    return shlex.join([*words, *flags])


def lock(
    profile: str = typer.Option(
        "4080super", "--profile", "-p", help="Bundled profile name or a YAML path; its stack's lock is made."
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Compare the committed locks with their inputs and with a fresh resolution; exit 1 on any drift.",
    ),
    upgrade: bool = typer.Option(
        False,
        "--upgrade",
        "-U",
        help="Resolve from scratch: take what the index serves now (up to the cutoff).",
    ),
    upgrade_package: list[str] = typer.Option(
        [], "--upgrade-package", "-P", help="Free this package's pin (repeatable); the others are kept."
    ),
    index_url: str = typer.Option(
        locks.PYPI_SIMPLE,
        "--index-url",
        help="The package index uv resolves against (a PEP 503 simple index).",
    ),
) -> None:
    """Write the stack's locks (data/locks/<stack>.txt for the ONNX pose backend, <stack>-mmpose.txt where
    the stack pins mmpose) and data/locks/zr4-runtime.txt with uv, keeping the committed pins that still
    satisfy the inputs (--upgrade to take newer releases), or --check them against the index."""
    if check and (upgrade or upgrade_package):
        raise UsageError("--check compares the locks, it changes nothing: drop --upgrade/--upgrade-package")
    if "://" not in index_url:
        raise UsageError(f"--index-url {index_url!r} is not a URL (e.g. {locks.PYPI_SIMPLE})")
    resolved = load_profile(profile)
    variants = locks.pose_variants(resolved)
    stack_inputs = [(locks.load_lock_input(variant), variant) for variant in variants]
    runtime_input = locks.load_runtime_lock_input()
    if not check:
        flags = ["--upgrade"] if upgrade else []
        for name in upgrade_package:
            flags += ["--upgrade-package", name]
        made_by = _command(profile, index_url, *flags)
        jobs: list[tuple[locks.LockInput, Profile | None, str]] = [
            (lock_input, variant, _sharing_note(variant)) for lock_input, variant in stack_inputs
        ]
        jobs.append((runtime_input, None, " (zr4's venv in the image)"))
        for lock_input, lock_profile, note in jobs:
            outcome = locks.generate(
                lock_input,
                made_by,
                lock_profile,
                index_url=index_url,
                upgrade=upgrade,
                upgrade_packages=upgrade_package,
            )
            written = "unchanged" if outcome.unchanged else "->"
            typer.echo(
                f"{outcome.path.stem}: {outcome.packages} packages, resolved in {outcome.seconds:.1f} s "
                f"{written} {_shown(outcome.path)}{note}"
            )
            for change in outcome.changes:
                typer.echo(f"{outcome.path.stem}: {change}")
        return
    failures: list[str] = []
    inputs_moved = False
    outcomes = [locks.check(lock_input, variant, index_url=index_url) for lock_input, variant in stack_inputs]
    outcomes.append(locks.check(runtime_input, index_url=index_url))
    for outcome in outcomes:
        name = outcome.path.stem
        if not outcome.drift and not outcome.problems and not outcome.inputs_changed:
            typer.echo(
                f"{name}: up to date ({outcome.packages} packages, re-resolved in {outcome.seconds:.1f} s)"
            )
            continue
        if outcome.inputs_changed:
            inputs_moved = True
            typer.echo(
                f"{name}: made from other inputs than the committed files (its header's digest differs)"
            )
        for problem in outcome.problems:
            typer.echo(f"{name}: {problem}")
        for change in outcome.drift:
            typer.echo(f"{name}: {change}")
        failures.append(f"{name} ({len(outcome.drift)} changes, {len(outcome.problems)} pin mismatches)")
    if failures:
        # Changed inputs need only a re-lock (the kept pins move no further than they must); drift
        # with unchanged inputs is the index serving other files, which only --upgrade takes.
        refresh = _command(profile, index_url) if inputs_moved else _command(profile, index_url, "--upgrade")
        raise locks.LockError(
            f"locks out of date: {', '.join(failures)}; run `{refresh}`, review the diff, and commit"
        )
