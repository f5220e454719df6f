"""The exact engine command lines for a build: pure functions of the engine and the options.

- docker: ``docker buildx build --progress=plain ... (--push | --load)``;
  ``--load`` puts the image into the local image store (needed with the docker-container driver,
  harmless with the default driver) so its size can be read afterwards.
- podman / buildah: ``<engine> build --layers --format docker ...``; they have no ``--push`` on build,
  so a separate ``<engine> push <tag>`` follows. ``--format docker`` because their default, OCI, has no
  place for ``SHELL`` and ``HEALTHCHECK``: buildah drops both with only a warning, so the image would
  lose ``pipefail`` in its RUN steps and its health check.

The rendered context is self-contained (zr4's wheel is rendered into it): no named build contexts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zr4.errors import UsageError

_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=.*$", re.S)
_STAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for; validated by :func:`check_options`."""

    context_dir: Path
    tag: str
    push: bool = False
    platform: str | None = None
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    build_args: tuple[str, ...] = ()
    target: str | None = None
    metadata_file: Path | None = None  # docker only: where buildx writes the pushed digest

    @property
    def dockerfile(self) -> Path:
        return self.context_dir / "Dockerfile"

    @property
    def platforms(self) -> list[str]:
        return [part.strip() for part in (self.platform or "").split(",") if part.strip()]


def check_options(options: BuildOptions) -> None:
    """Raise a UsageError naming the option that cannot work."""
    for arg in options.build_args:
        if not _BUILD_ARG.match(arg):
            raise UsageError(f"--build-arg {arg!r}: write NAME=value (NAME of letters, digits, _)")
        if "\n" in arg:
            raise UsageError(f"--build-arg {arg.split('=', 1)[0]}: the value contains a newline")
    if options.target is not None and not _STAGE.match(options.target):
        raise UsageError(f"--target {options.target!r} is not a stage name")
    for platform in options.platforms:
        if not _PLATFORM.match(platform):
            raise UsageError(f"--platform {platform!r}: write os/arch, e.g. linux/amd64")
    if len(options.platforms) > 1 and not options.push:
        raise UsageError(
            f"--platform {options.platform}: a multi-platform image cannot be loaded locally; add --push"
        )


def _common(options: BuildOptions) -> list[str]:
    argv = [
        "--file",
        str(options.dockerfile),
        "--tag",
        options.tag,
    ]
    if options.platform:
        argv += ["--platform", ",".join(options.platforms)]
    for source in options.cache_from:
        argv += ["--cache-from", source]
    for destination in options.cache_to:
        argv += ["--cache-to", destination]
    for arg in options.build_args:
        argv += ["--build-arg", arg]
    if options.target:
        argv += ["--target", options.target]
    return argv


def build_command(engine: str, binary: str, options: BuildOptions) -> list[str]:
    """The build command line for ``engine`` (docker, podman or buildah)."""
    check_options(options)
    if engine == "docker":
        argv = [binary, "buildx", "build", "--progress=plain", *_common(options)]
        argv.append("--push" if options.push else "--load")
        if options.metadata_file is not None:
            argv += ["--metadata-file", str(options.metadata_file)]
    elif engine in ("podman", "buildah"):
        argv = [binary, "build", "--layers", "--format", "docker", *_common(options)]
    else:
        raise UsageError(f"unknown engine {engine!r}")
    argv.append(str(options.context_dir))
    return argv


def push_command(engine: str, binary: str, options: BuildOptions) -> list[str] | None:
    """The separate push for podman/buildah; None for docker (``--push`` is part of the build)."""
    if not options.push or engine == "docker":
        return None
    return [binary, "push", options.tag]


def size_command(engine: str, binary: str, tag: str) -> list[str]:
    """A command printing the local image's size: bytes (docker, podman) or buildah's JSON listing."""
    if engine == "buildah":
        return [binary, "images", "--json", tag]
    return [binary, "image", "inspect", "--format", "{{.Size}}", tag]


def describe(argv: Sequence[str]) -> str:
    """The command as a shell would need it typed."""
    return shlex.join(argv)
