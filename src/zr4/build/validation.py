"""`zr4 build` runs `zr4 validate`'s static checks on the rendered context before the engine starts.

The checks themselves live in ``zr4.validate``; this is the one place the build calls them.
"""

from __future__ import annotations

from pathlib import Path

from zr4.errors import Zr4Error
from zr4.profile.models import Profile


class ValidationFailed(Zr4Error):
    """A static check failed; the build did not start."""


def static_problems(context_dir: Path, profile: Profile) -> list[str]:
    """One line per finding of a failed static check (empty: all passed)."""
    from zr4.validate import run_static_checks

    results = run_static_checks(context_dir, profile)
    problems: list[str] = []
    for result in results:
        if result.failed:
            problems.extend(f"{result.check}: {finding}" for finding in result.findings)
            if not result.findings:
                problems.append(f"{result.check}: {result.title} failed")
    return problems


def ensure_valid(context_dir: Path, profile: Profile) -> None:
    problems = static_problems(context_dir, profile)
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise ValidationFailed(
            f"`zr4 validate` found {len(problems)} problem(s) in {context_dir}: {shown}. "
            "Fix them, or build anyway with --no-validate"
        )
