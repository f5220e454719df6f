"""`zr4 build` runs `zr4 validate`'s static checks on the rendered context before the engine starts.

The checks themselves live in ``zr4.validate``; this is the one place the build calls them.
"""

from __future__ import annotations

from pathlib import Path

from zr4.errors import Zr4Error


class ValidationFailed(Zr4Error):
    """A static check failed; the build did not start."""


def static_problems(context_dir: Path) -> list[str]:
    """One line per finding of a failed static check (empty: all passed).

    The static checks are every check of ``zr4 validate`` except ``resolve`` (needs the package
    index) and ``build`` (runs an engine: `zr4 build` is about to do that for real).
    """
    from zr4.validate import CHECK_IDS, Options, validate_directory

    static = [check for check in CHECK_IDS if check not in ("resolve", "build")]
    report = validate_directory(context_dir, Options(resolve=False, build=False), only=static)
    problems: list[str] = []
    for result in report.results:
        if result.failed:
            problems.extend(f"{result.check}: {finding}" for finding in result.findings)
            if not result.findings:
                problems.append(f"{result.check}: {result.title} failed")
    return problems


def ensure_valid(context_dir: Path) -> None:
    problems = static_problems(context_dir)
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise ValidationFailed(
            f"`zr4 validate` found {len(problems)} problem(s) in {context_dir}: {shown}. "
            "Fix them, or build anyway with --no-validate"
        )
