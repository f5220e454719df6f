"""Which container engine builds the image: ``docker buildx`` (BuildKit), ``podman`` or ``buildah``.

``docker`` alone is not enough: the Dockerfile uses BuildKit features (``RUN --mount=type=cache``,
``COPY --from=<named context>``), which the classic builder lacks, so a docker without its buildx
plugin is reported with what to install rather than silently falling back.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zr4.errors import Zr4Error

ENGINES = ("docker", "podman", "buildah")

Which = Callable[[str], str | None]
# Runs a short probe command; returns (exit code, combined output).
Probe = Callable[[Sequence[str]], tuple[int, str]]

BUILDX_HELP = (
    "install Docker's buildx plugin (package docker-buildx-plugin from Docker's apt/dnf repository, or "
    "the binary from https://github.com/docker/buildx/releases saved as ~/.docker/cli-plugins/docker-buildx), "
    "or build with --engine podman"
)


class EngineError(Zr4Error):
    """No usable container engine."""


@dataclass(frozen=True)
class Engine:
    """A usable engine: its name and the binary that runs it."""

    name: str
    binary: str
    version: str = ""


def run_probe(argv: Sequence[str]) -> tuple[int, str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return 127, str(error)
    return result.returncode, (result.stdout + result.stderr).strip()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no output"


def _check(name: str, binary: str, probe: Probe) -> tuple[Engine | None, str]:
    """The engine if usable, else why not."""
    if name == "docker":
        code, output = probe([binary, "buildx", "version"])
        if code != 0:
            return None, (
                f"docker is installed ({binary}) but its buildx plugin is missing: `docker buildx version` "
                f"said {_first_line(output)!r}; {BUILDX_HELP}"
            )
        return Engine(name, binary, _first_line(output)), ""
    code, output = probe([binary, "version"] if name == "buildah" else [binary, "--version"])
    if code != 0:
        return None, f"{name} ({binary}) does not run: {_first_line(output)}"
    return Engine(name, binary, _first_line(output)), ""


def detect_engine(
    preferred: str | None = None, which: Which = shutil.which, probe: Probe = run_probe
) -> Engine:
    """``preferred`` if given and usable; otherwise the first usable of docker buildx, podman, buildah."""
    if preferred is not None and preferred not in ENGINES:
        raise EngineError(f"--engine {preferred!r} is not one of: {', '.join(ENGINES)}")
    candidates = (preferred,) if preferred else ENGINES
    problems: list[str] = []
    for name in candidates:
        binary = which(name)
        if binary is None:
            continue
        engine, problem = _check(name, binary, probe)
        if engine is not None:
            return engine
        problems.append(problem)
    if problems:
        raise EngineError("; ".join(problems))
    if preferred:
        raise EngineError(f"--engine {preferred}: `{preferred}` is not on PATH")
    raise EngineError(
        "no container engine found: looked for docker (with the buildx plugin), podman and buildah on PATH"
    )
