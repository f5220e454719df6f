"""A Dockerfile as instructions and stages, on top of BuildKit's own parser (the `dockerfile` package).

The package wraps `github.com/moby/buildkit/frontend/dockerfile/parser`, which splits lines and
flags but leaves instruction semantics (argument counts, known flags, stage names) to BuildKit's
`instructions` package; the few of those rules that matter here are re-checked in `checks_parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile

# BuildKit `instructions/parse.go`: stage names are lower-case; `FROM x AS Name` is lowered.
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
_ARG_REF = re.compile(r"\$(\{([A-Za-z_][A-Za-z0-9_]*)(:?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction as BuildKit's parser sees it."""

    cmd: str  # upper case
    args: tuple[str, ...]
    flags: tuple[str, ...]
    line: int
    end_line: int
    original: str
    json: bool
    heredocs: tuple[str, ...] = ()

    def flag(self, name: str) -> str | None:
        """The value of ``--name=value`` (last one wins), ``""`` for a bare ``--name``, else None."""
        found: str | None = None
        for raw in self.flags:
            key, _, value = raw[2:].partition("=")
            if key.lower() == name:
                found = value
        return found

    def flag_names(self) -> list[str]:
        return [raw[2:].partition("=")[0].lower() for raw in self.flags]

    @property
    def shell_text(self) -> str:
        """The command of a shell-form RUN/CMD (continuations already joined by the parser)."""
        return " ".join(self.args)


@dataclass
class Stage:
    """A `FROM` and the instructions up to the next one."""

    index: int
    base: str  # after expanding global ARGs
    name: str | None
    line: int
    platform: str | None = None
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or str(self.index)


@dataclass
class DockerfileModel:
    """Global ARGs, every instruction in order, and the stages."""

    instructions: list[Instruction]
    global_args: dict[str, str]
    stages: list[Stage]

    def stage_named(self, name: str) -> Stage | None:
        lowered = name.lower()
        if lowered.isdigit():
            index = int(lowered)
            return self.stages[index] if index < len(self.stages) else None
        return next((stage for stage in self.stages if stage.name == lowered), None)


def expand_args(text: str, values: dict[str, str]) -> str:
    """`$NAME` / `${NAME}` / `${NAME:-default}` as BuildKit expands them in `FROM` (unknown -> empty)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2) or match.group(4)
        modifier = match.group(3) or ""
        value = values.get(name, "")
        if modifier.startswith((":-", "-")):
            default = modifier.split("-", 1)[1]
            return value if (value or (modifier.startswith("-") and name in values)) else default
        if modifier.startswith((":+", "+")):
            return modifier.split("+", 1)[1] if value else ""
        return value

    return _ARG_REF.sub(replace, text)


def parse_text(text: str) -> list[Instruction]:
    """BuildKit's parser; raises `dockerfile.GoParseError` on syntax errors."""
    return [
        Instruction(
            cmd=command.cmd.upper(),
            args=tuple(command.value),
            flags=tuple(command.flags),
            line=command.start_line,
            end_line=command.end_line,
            original=command.original,
            json=command.json,
            heredocs=tuple(doc.content for doc in command.heredocs),
        )
        for command in dockerfile.parse_string(text)
    ]


def locate_parse_error(text: str, message: str) -> int | None:
    """The first line at which BuildKit's parser fails with ``message`` (it reports no line itself):
    the shortest prefix of the file that fails the same way."""
    lines = text.splitlines(keepends=True)
    for end in range(1, len(lines) + 1):
        try:
            dockerfile.parse_string("".join(lines[:end]))
        except dockerfile.GoParseError as error:
            if str(error) == message:
                return end
    return None


def build_model(instructions: list[Instruction]) -> DockerfileModel:
    """Group instructions into stages; `FROM` bases are expanded with the global ARG defaults."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            args = instruction.args
            base = expand_args(args[0], global_args) if args else ""
            name = args[2].lower() if len(args) == 3 and args[1].lower() == "as" else None
            stages.append(Stage(len(stages), base, name, instruction.line, instruction.flag("platform")))
        elif not stages:
            if instruction.cmd == "ARG":
                for arg in instruction.args:
                    key, _, value = arg.partition("=")
                    global_args[key] = value.strip('"')
            continue
        if stages:
            stages[-1].instructions.append(instruction)
    return DockerfileModel(instructions, global_args, stages)


@dataclass(frozen=True)
class ImageRef:
    """`[registry/]repository[:tag][@digest]` split into parts."""

    repository: str  # without registry when it is Docker Hub
    tag: str | None
    digest: str | None
    registry: str | None

    @property
    def is_nvidia_cuda(self) -> bool:
        return self.repository == "nvidia/cuda"  # Docker Hub or nvcr.io


def parse_image(reference: str) -> ImageRef:
    """Split an image reference the way Docker's reference grammar does."""
    digest: str | None = None
    if "@" in reference:
        reference, digest = reference.split("@", 1)
    tag: str | None = None
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        reference, tag = reference.rsplit(":", 1)
    registry: str | None = None
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, reference = first, rest
    if registry in ("docker.io", "index.docker.io"):
        registry = None
        reference = reference.removeprefix("library/")
    return ImageRef(reference, tag, digest, registry)
