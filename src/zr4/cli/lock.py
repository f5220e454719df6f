"""`zr4 lock`: regenerate or check a profile's stack lock and zr4's own runtime lock (thin layer over zr4.lock)."""

from __future__ import annotations

from pathlib import Path

import typer

from zr4 import lock as locks
from zr4.profile import bundled_profile_names, load_profile


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _profiles_on(lock_name: str) -> list[str]:
    return [name for name in bundled_profile_names() if load_profile(name).stack.lock == lock_name]


def lock(
    profile: str = typer.Option(
        "4080super", "--profile", "-p", help="Bundled profile name or a YAML path; its stack's lock is made."
    ),
    check: bool = typer.Option(
        False, "--check", help="Re-resolve and compare with the committed locks; exit 1 on any drift."
    ),
) -> None:
    """Write data/locks/<stack>.txt and data/locks/zr4-runtime.txt with uv (needs PyPI), or --check them."""
    resolved = load_profile(profile)
    stack_input = locks.load_lock_input(resolved)
    runtime_input = locks.load_runtime_lock_input()
    sharing = ", ".join(_profiles_on(stack_input.lock_name)) or resolved.name
    made_by = f"zr4 lock --profile {profile}"
    if not check:
        for outcome, note in (
            (locks.generate(stack_input, made_by, resolved), f" (profiles {sharing})"),
            (locks.generate(runtime_input, made_by), " (zr4's venv in the image)"),
        ):
            written = "unchanged" if outcome.unchanged else "->"
            typer.echo(
                f"{outcome.path.stem}: {outcome.packages} packages, resolved in {outcome.seconds:.1f} s "
                f"{written} {_shown(outcome.path)}{note}"
            )
        return
    failures: list[str] = []
    outcomes = [locks.check(stack_input, resolved), locks.check(runtime_input)]
    for outcome in outcomes:
        name = outcome.path.stem
        if not outcome.drift and not outcome.problems:
            typer.echo(
                f"{name}: up to date ({outcome.packages} packages, re-resolved in {outcome.seconds:.1f} s)"
            )
            continue
        for problem in outcome.problems:
            typer.echo(f"{name}: {problem}")
        for change in outcome.drift:
            typer.echo(f"{name}: {change}")
        failures.append(f"{name} ({len(outcome.drift)} changes, {len(outcome.problems)} pin mismatches)")
    if failures:
        raise locks.LockError(
            f"locks out of date: {', '.join(failures)}; run `zr4 lock --profile {profile}` and commit"
        )
