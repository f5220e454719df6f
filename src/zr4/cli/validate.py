"""`zr4 validate`: check a build context before spending an hour on a GPU build.

`zr4 validate --profile P` renders P into a temporary directory and checks it;
`zr4 validate DIR` checks an existing context (e.g. `docker/`). Exit 0 when every check passes,
1 when any fails, 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zr4.cli.common import SET_OPTION
from zr4.errors import UsageError, Zr4Error


class ValidationFailed(Zr4Error):
    """At least one check failed (the table above says which and why)."""


def _named_contexts(values: list[str]) -> dict[str, Path] | None:
    if not values:
        return None
    contexts: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--build-context takes NAME=PATH (e.g. zr4=.), not {value!r}")
        contexts[name] = Path(path).resolve()
    return contexts


def validate(
    directory: Path | None = typer.Argument(
        None, help="An existing build context to check (e.g. docker/). Omit it and give --profile instead."
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        "-p",
        help="Render this profile (name or YAML path) to a temporary folder and check it.",
    ),
    overrides: list[str] = SET_OPTION,
    resolve: bool = typer.Option(
        False, "--resolve", help="Also resolve the locks against the package index (network; uv)."
    ),
    build: bool = typer.Option(
        True, "--build/--no-build", help="Build the network-free stages with buildah when it is installed."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show each check's notes, not only failures."
    ),
    build_context: list[str] = typer.Option(
        [],
        "--build-context",
        help="A named context NAME=PATH, for a Dockerfile that uses one (default: none for --profile, "
        "the compose file's additional_contexts for DIR).",
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Run only these checks (the ids in the table's first column, e.g. parse, build)."
    ),
) -> None:
    """Check a build context: Dockerfile, .dockerignore, lint, compose, secrets, pins, flags, workflow, budget."""
    # Imported here: the checks pull in their tools (Dockerfile parser, jsonschema), which the image's
    # lean zr4 venv does not carry; the in-image commands never import them.
    from zr4.validate import (
        CHECK_IDS,
        Options,
        format_json,
        format_table,
        validate_directory,
        validate_profile,
    )

    if (directory is None) == (profile is None):
        raise UsageError("give either a context directory or --profile, e.g. `zr4 validate docker/`")
    if overrides and profile is None:
        raise UsageError("--set needs --profile")
    unknown = sorted(set(only) - set(CHECK_IDS))
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; choose from {', '.join(CHECK_IDS)}")
    options = Options(resolve=resolve, build=build)
    contexts = _named_contexts(build_context)
    if profile is not None:
        report = validate_profile(profile, overrides, options, contexts, only)
    else:
        assert directory is not None
        if not directory.is_dir():
            raise UsageError(
                f"{directory} is not a directory; render one with `zr4 render --out {directory}`"
            )
        report = validate_directory(directory, options, contexts, only)
    typer.echo(format_json(report) if as_json else format_table(report, verbose=verbose))
    failed = [result.check for result in report.results if result.failed]
    if failed:
        raise ValidationFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}; fix the findings above")
