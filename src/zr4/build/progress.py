"""Reading the engine's streamed output: time per stage, and the step that failed.

BuildKit's plain progress (``docker buildx build --progress=plain``) numbers each step ("vertex")
and reports its own durations::

    #8 [builder 3/6] RUN apt-get update
    #8 0.321 Get:1 http://archive.ubuntu.com ...
    #8 DONE 12.3s            (or: #8 CACHED / #8 ERROR: <why> / #8 CANCELED)
    Dockerfile:20            (after a failure: the Dockerfile line of the failing instruction)

Steps run in parallel, so a stage's time is the sum of its steps' own durations.

podman and buildah print ``[2/7] STEP 3/5: RUN ...`` (no ``[i/n]`` for a one-stage file) and
``Error: building at STEP "RUN ...": <why>`` on failure, with no durations: a step lasts until the
next step or COMMIT line (their stages run one after another).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

_VERTEX = re.compile(r"^#(?P<id>\d+) (?P<rest>.*)$")
_BRACKET = re.compile(r"^\[(?P<label>[^\]]+)\] (?P<command>.*)$")
_STAGE_STEP = re.compile(r"^(?P<stage>.+?) (?P<index>\d+)/(?P<count>\d+)$")
_DONE = re.compile(r"^DONE (?P<seconds>\d+(?:\.\d+)?)s$")
_DOCKERFILE_LINE = re.compile(r"^(?:\S*Dockerfile):(?P<line>\d+)$")
_PODMAN_STEP = re.compile(
    r"^(?:\[(?P<stage>\d+)/(?P<stages>\d+)\] )?STEP (?P<index>\d+)/(?P<count>\d+): (?P<command>.*)$"
)
_PODMAN_COMMIT = re.compile(r"^(?:\[(?P<stage>\d+)/(?P<stages>\d+)\] )?COMMIT\b")
_PODMAN_ERROR = re.compile(r'^Error: building at STEP "(?P<step>.*?)": (?P<why>.*)$')
_FROM_AS = re.compile(r"^FROM\s+\S+\s+AS\s+(?P<name>\S+)", re.I)
_TAIL_LINES = 15


def _without_platform(label: str) -> str:
    """ "linux/amd64 builder 3/7" (with --platform) -> "builder 3/7"."""
    first, _, remainder = label.partition(" ")
    return remainder if "/" in first and remainder else label


@dataclass
class Step:
    label: str  # "[builder 3/6] RUN apt-get update" as the engine shows it
    stage: str
    seconds: float = 0.0
    status: str = "running"  # running, done, cached, error, canceled
    output: list[str] = field(default_factory=list)
    command: str = ""  # "RUN apt-get update"
    count: int | None = None  # steps in its stage (6), when the engine says


@dataclass(frozen=True)
class Failure:
    step: str
    reason: str
    dockerfile_line: int | None
    output_tail: tuple[str, ...]

    def describe(self) -> str:
        where = f" (Dockerfile line {self.dockerfile_line})" if self.dockerfile_line else ""
        return f"failed at {self.step}{where}: {self.reason}"


@dataclass(frozen=True)
class Timings:
    stages: tuple[tuple[str, float], ...]  # in first-seen order
    cached_steps: int
    steps: int


class BuildKitProgress:
    """Feed it lines of ``--progress=plain`` output."""

    def __init__(self) -> None:
        self.steps: OrderedDict[str, Step] = OrderedDict()
        self.failed: str | None = None
        self.error_reason = ""
        self.dockerfile_line: int | None = None
        self.final_error: str | None = None

    @staticmethod
    def _stage_of(rest: str) -> str:
        match = _BRACKET.match(rest)
        if match is None:
            return (
                "export" if rest.startswith(("exporting", "naming", "writing image", "pushing")) else "other"
            )
        label = _without_platform(match.group("label"))
        stage = _STAGE_STEP.match(label)
        if stage is not None:
            return stage.group("stage")
        return label.split(" ", 1)[0]  # "internal", "context", "auth"

    @staticmethod
    def _position(rest: str) -> tuple[str, int | None]:
        """The command and the stage's step count of "[builder 3/6] RUN ..." (none for housekeeping)."""
        match = _BRACKET.match(rest)
        if match is None:
            return rest, None
        stage = _STAGE_STEP.match(_without_platform(match.group("label")))
        count = int(stage.group("count")) if stage is not None else None
        return match.group("command"), count

    def all_steps(self) -> list[Step]:
        return list(self.steps.values())

    def feed(self, line: str, _now: float = 0.0) -> None:
        line = line.rstrip("\n")
        if line.startswith("ERROR: ") and self.final_error is None:
            self.final_error = line[len("ERROR: ") :]
        dockerfile = _DOCKERFILE_LINE.match(line.strip())
        if dockerfile is not None and self.failed is not None and self.dockerfile_line is None:
            self.dockerfile_line = int(dockerfile.group("line"))
        match = _VERTEX.match(line)
        if match is None:
            return
        vertex, rest = match.group("id"), match.group("rest")
        step = self.steps.get(vertex)
        if step is None:
            command, count = self._position(rest)
            self.steps[vertex] = Step(rest, self._stage_of(rest), command=command, count=count)
            return
        done = _DONE.match(rest)
        if done is not None:
            step.seconds, step.status = float(done.group("seconds")), "done"
        elif rest == "CACHED":
            step.status = "cached"
        elif rest.startswith("ERROR"):
            step.status = "error"
            if self.failed is None:
                self.failed = vertex
                self.error_reason = rest.partition(":")[2].strip() or rest
        elif rest.startswith("CANCELED"):
            step.status = "canceled"
        else:
            step.output.append(rest)
            del step.output[:-_TAIL_LINES]

    def timings(self) -> Timings:
        stages: OrderedDict[str, float] = OrderedDict()
        for step in self.steps.values():
            if step.stage == "other" and step.seconds == 0:
                continue  # "#0 building with ... instance": no work of its own
            stages[step.stage] = stages.get(step.stage, 0.0) + step.seconds
        cached = sum(1 for step in self.steps.values() if step.status == "cached")
        return Timings(tuple(stages.items()), cached, len(self.steps))

    def failure(self) -> Failure | None:
        if self.failed is None:
            if self.final_error is None:
                return None
            return Failure("the build", self.final_error, None, ())
        step = self.steps[self.failed]
        tail = tuple(re.sub(r"^\d+\.\d+ ", "", text) for text in step.output)
        return Failure(step.label, self.error_reason, self.dockerfile_line, tail)


class PodmanProgress:
    """Feed it lines of ``podman build`` / ``buildah build`` output with the time each arrived."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.stage_names: dict[str, str] = {}
        self._open: Step | None = None
        self._started = 0.0
        self.error: tuple[str, str] | None = None
        self._output: list[str] = []

    def _close_running(self, now: float) -> None:
        if self._open is not None:
            self._open.seconds = max(0.0, now - self._started)
            if self._open.status == "running":
                self._open.status = "done"
            self._open = None

    def feed(self, line: str, now: float) -> None:
        line = line.rstrip("\n")
        error = _PODMAN_ERROR.match(line)
        if error is not None:
            self.error = (error.group("step"), error.group("why"))
            if self._open is not None:
                self._open.status = "error"
            return
        step = _PODMAN_STEP.match(line)
        if step is not None:
            self._close_running(now)
            stage_key = step.group("stage") or "1"
            command = step.group("command")
            named = _FROM_AS.match(command)
            if named is not None:
                self.stage_names[stage_key] = named.group("name")
            stage = self.stage_names.get(stage_key, f"stage {stage_key}")
            self.steps.append(Step(label=line, stage=stage, command=command, count=int(step.group("count"))))
            self._open, self._started = self.steps[-1], now
            return
        if _PODMAN_COMMIT.match(line):
            self._close_running(now)
            return
        if line.startswith("--> Using cache") and self.steps:
            self.steps[-1].status = "cached"
        elif self.steps:
            self.steps[-1].output.append(line)
            del self.steps[-1].output[:-_TAIL_LINES]

    def all_steps(self) -> list[Step]:
        return list(self.steps)

    def finish(self, now: float) -> None:
        self._close_running(now)

    def timings(self) -> Timings:
        stages: OrderedDict[str, float] = OrderedDict()
        for step in self.steps:
            stages[step.stage] = stages.get(step.stage, 0.0) + step.seconds
        cached = sum(1 for step in self.steps if step.status == "cached")
        return Timings(tuple(stages.items()), cached, len(self.steps))

    def failure(self) -> Failure | None:
        if self.error is None:
            return None
        failing, reason = self.error
        for step in reversed(self.steps):
            if failing and failing in step.label:
                return Failure(step.label, reason, None, tuple(step.output))
        return Failure(failing or "the build", reason, None, ())


def progress_for(engine: str) -> BuildKitProgress | PodmanProgress:
    return BuildKitProgress() if engine == "docker" else PodmanProgress()
