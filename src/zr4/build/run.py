"""Run a build: stream the engine's output, time the stages, summarise or explain the failure."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from zr4.build.command import BuildOptions, build_command, describe, push_command, size_command
from zr4.build.display import BuildDisplay
from zr4.build.engine import Engine
from zr4.build.progress import PodmanProgress, Timings, progress_for
from zr4.core.sizes import human_bytes
from zr4.errors import Zr4Error

Echo = Callable[[str], None]
Clock = Callable[[], float]


class BuildFailed(Zr4Error):
    """The engine failed; ``exit_code`` is the engine's own."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 1


@dataclass(frozen=True)
class BuildResult:
    image: str
    size: str | None  # human-readable; None when the image is not in the local store (--push)
    timings: Timings
    total_s: float
    digest: str | None = None
    pushed: bool = False


def parse_size(engine: str, output: str) -> str | None:
    """The size from :func:`size_command`'s output (bytes, or buildah's JSON listing)."""
    text = output.strip()
    if not text:
        return None
    if engine == "buildah":
        try:
            listing = json.loads(text)
            size = listing[0]["size"]
        except (ValueError, LookupError, TypeError):
            return None
        return str(size)
    try:
        return human_bytes(int(text.splitlines()[0]), decimals=2)
    except ValueError:
        return None


def _stream(argv: Sequence[str], echo: Echo, feed: Callable[[str, float], None], clock: Clock) -> int:
    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )
    assert process.stdout is not None
    for line in process.stdout:
        echo(line.rstrip("\n"))
        feed(line, clock())
    return process.wait()


def _read(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def run_build(
    engine: Engine,
    options: BuildOptions,
    echo: Echo = print,
    clock: Clock = time.monotonic,
    display: BuildDisplay | None = None,
) -> BuildResult:
    """Build (and push when asked); raise :class:`BuildFailed` with the engine's exit code.

    ``display`` (a started :class:`BuildDisplay`) is redrawn after each line of the build."""
    started = clock()
    with tempfile.TemporaryDirectory(prefix="zr4-build-") as scratch:
        if engine.name == "docker" and options.push:
            options = replace(options, metadata_file=Path(scratch) / "metadata.json")
        argv = build_command(engine.name, engine.binary, options)
        echo(f"$ {describe(argv)}")
        progress = progress_for(engine.name)

        def feed(line: str, now: float) -> None:
            progress.feed(line, now)
            if display is not None:
                display.update(progress.all_steps())

        code = _stream(argv, echo, feed, clock)
        if isinstance(progress, PodmanProgress):
            progress.finish(clock())
        if display is not None:
            display.update(progress.all_steps())
        if code != 0:
            failure = progress.failure()
            where = failure.describe() if failure is not None else "see the output above"
            tail = ""
            if failure is not None and failure.output_tail:
                tail = " | last output: " + " / ".join(failure.output_tail[-3:])
            raise BuildFailed(f"{engine.name} build exited with code {code}: {where}{tail}", code)
        digest = None
        if options.metadata_file is not None and options.metadata_file.is_file():
            try:
                digest = json.loads(options.metadata_file.read_text()).get("containerimage.digest")
            except ValueError:
                digest = None
    pushed = options.push
    push = push_command(engine.name, engine.binary, options)
    if push is not None:
        echo(f"$ {describe(push)}")
        code = _stream(push, echo, lambda _line, _now: None, clock)
        if code != 0:
            raise BuildFailed(f"{engine.name} push of {options.tag} exited with code {code}", code)
    size = None
    if engine.name != "docker" or not options.push:
        size = parse_size(engine.name, _read(size_command(engine.name, engine.binary, options.tag)))
    return BuildResult(
        image=options.tag,
        size=size,
        timings=progress.timings(),
        total_s=clock() - started,
        digest=digest,
        pushed=pushed,
    )


def summary_lines(result: BuildResult) -> list[str]:
    """What `zr4 build` prints at the end of a successful build."""
    lines = [f"image: {result.image}" + (" (pushed)" if result.pushed else "")]
    if result.digest:
        lines.append(f"digest: {result.digest}")
    lines.append(f"size: {result.size or 'n/a (not in the local image store)'}")
    lines.append("time per stage:")
    width = max((len(name) for name, _ in result.timings.stages), default=5)
    for name, seconds in result.timings.stages:
        lines.append(f"  {name:<{width}}  {seconds:8.1f} s")
    lines.append(
        f"total: {result.total_s:.1f} s ({result.timings.steps} steps, {result.timings.cached_steps} cached)"
    )
    return lines
