"""`zr4 build`: render the profile, run the static checks, build with the container engine."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from zr4.cli.common import PROFILE_OPTION, SET_OPTION


def build(
    profile: str = PROFILE_OPTION,
    overrides: list[str] = SET_OPTION,
    engine: str | None = typer.Option(
        None, "--engine", help="docker (buildx), podman or buildah; default: the first one installed."
    ),
    tag: str | None = typer.Option(
        None, "--tag", "-t", help="Image reference; default <image.name>:<profile>-zr4-<version>."
    ),
    push: bool = typer.Option(False, "--push", help="Push the image after building it."),
    platform: str | None = typer.Option(None, "--platform", help="Target platform(s), e.g. linux/amd64."),
    cache_from: list[str] = typer.Option(
        [], "--cache-from", help="Cache source, passed to the engine (repeatable)."
    ),
    cache_to: list[str] = typer.Option(
        [], "--cache-to", help="Cache destination, passed to the engine (repeatable)."
    ),
    build_arg: list[str] = typer.Option([], "--build-arg", help="NAME=value build argument (repeatable)."),
    target: str | None = typer.Option(None, "--target", help="Build only up to this stage, e.g. runtime."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help=(
            "Folder to render the build context into and keep (as `zr4 render --out`); default: a"
            " temporary folder, removed after the build."
        ),
    ),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip `zr4 validate`'s static checks."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Render, then print the engine command; build nothing."
    ),
) -> None:
    """Render the profile, validate the context, and build the image (docker buildx, podman or buildah)."""
    from zr4.build import (
        BuildOptions,
        Engine,
        EngineError,
        build_command,
        describe,
        detect_engine,
        push_command,
        run_build,
        summary_lines,
    )
    from zr4.build.display import BuildDisplay
    from zr4.build.validation import ensure_valid
    from zr4.profile import load_profile
    from zr4.render import render_files, write_context

    resolved = load_profile(profile, overrides)
    files = render_files(resolved)
    # The engine is found before anything is written: a machine without one is told so at once.
    try:
        chosen = detect_engine(engine)
    except EngineError as error:
        if not dry_run:
            raise
        # A dry run still shows the command, for the engine asked for (or docker) as if installed.
        chosen = Engine(engine or "docker", engine or "docker", f"not usable here: {error}")
    with context_folder(out, resolved.name) as context_dir:
        write_context(files, context_dir)
        options = BuildOptions(
            context_dir=context_dir.resolve(),
            tag=tag or f"{resolved.image.name}:{resolved.image_tag}",
            push=push,
            platform=platform,
            cache_from=tuple(cache_from),
            cache_to=tuple(cache_to),
            build_args=tuple(build_arg),
            target=target,
        )
        if dry_run:
            kept = (
                "" if out is not None else "; a temporary folder, removed when zr4 exits: --out DIR keeps it"
            )
            typer.echo(
                f"context: {options.context_dir} (rendered from profile {resolved.name}, "
                f"{len(files)} files{kept})"
            )
            typer.echo(f"engine: {chosen.name} ({chosen.version})")
            typer.echo(describe(build_command(chosen.name, chosen.binary, options)))
            push_argv = push_command(chosen.name, chosen.binary, options)
            if push_argv is not None:
                typer.echo(describe(push_argv))
            return
        if no_validate:
            typer.echo("static checks skipped (--no-validate)")
        else:
            ensure_valid(options.context_dir)
            typer.echo(f"static checks passed for {context_dir}")
        with BuildDisplay() as display:
            result = run_build(chosen, options, echo=display.echo, display=display)
    for line in summary_lines(result):
        typer.echo(line)


@contextmanager
def context_folder(out: Path | None, profile_name: str) -> Iterator[Path]:
    """Where the build context is rendered: ``--out`` (kept, with `zr4 render`'s rules for what it may
    replace), else a new temporary folder, removed when the build ends. Never the checkout's docker/:
    that is the committed 4080super context and holds the user's ``.env``.
    """
    if out is not None:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix=f"zr4-build-{profile_name}-") as folder:
        yield Path(folder)
