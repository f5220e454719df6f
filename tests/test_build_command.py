"""`zr4 build`'s decisions: engine detection, the command per engine and option set, output parsing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from zr4.build import (
    BuildKitProgress,
    BuildOptions,
    EngineError,
    PodmanProgress,
    build_command,
    detect_engine,
    push_command,
    size_command,
)
from zr4.build.run import parse_size, summary_lines
from zr4.errors import UsageError

CONTEXT = Path("/src/docker")


def options(**changes: object) -> BuildOptions:
    base: dict[str, object] = {"context_dir": CONTEXT, "tag": "zr4:4080super-zr4-0.1.0"}
    base.update(changes)
    return BuildOptions(**base)  # type: ignore[arg-type]


# --- commands ------------------------------------------------------------------------------------


def test_docker_default_loads_into_the_local_store() -> None:
    assert build_command("docker", "/usr/bin/docker", options()) == [
        "/usr/bin/docker", "buildx", "build", "--progress=plain",
        "--file", "/src/docker/Dockerfile", "--tag", "zr4:4080super-zr4-0.1.0",
        "--load", "/src/docker",
    ]  # fmt: skip


def test_docker_with_every_option() -> None:
    argv = build_command(
        "docker",
        "docker",
        options(
            push=True,
            platform="linux/amd64",
            cache_from=("type=registry,ref=ghcr.io/me/zr4:cache",),
            cache_to=("type=registry,ref=ghcr.io/me/zr4:cache,mode=max",),
            build_args=("MAX_JOBS=8", "EMPTY="),
            target="runtime",
            tag="ghcr.io/me/zr4:dev",
            metadata_file=Path("/tmp/m.json"),
        ),
    )
    assert argv == [
        "docker", "buildx", "build", "--progress=plain",
        "--file", "/src/docker/Dockerfile", "--tag", "ghcr.io/me/zr4:dev",
        "--platform", "linux/amd64",
        "--cache-from", "type=registry,ref=ghcr.io/me/zr4:cache",
        "--cache-to", "type=registry,ref=ghcr.io/me/zr4:cache,mode=max",
        "--build-arg", "MAX_JOBS=8", "--build-arg", "EMPTY=",
        "--target", "runtime",
        "--push", "--metadata-file", "/tmp/m.json",
        "/src/docker",
    ]  # fmt: skip
    assert push_command("docker", "docker", options(push=True)) is None


@pytest.mark.parametrize("engine", ["podman", "buildah"])
def test_podman_and_buildah_build_then_push(engine: str) -> None:
    opts = options(
        push=True, platform="linux/amd64", build_args=("A=1",), target="venv", cache_from=("reg/c",)
    )
    assert build_command(engine, engine, opts) == [
        # OCI format (their default) silently drops SHELL and HEALTHCHECK.
        engine, "build", "--layers", "--format", "docker",
        "--file", "/src/docker/Dockerfile", "--tag", "zr4:4080super-zr4-0.1.0",
        "--platform", "linux/amd64", "--cache-from", "reg/c", "--build-arg", "A=1", "--target", "venv",
        "/src/docker",
    ]  # fmt: skip
    assert push_command(engine, engine, opts) == [engine, "push", "zr4:4080super-zr4-0.1.0"]
    assert push_command(engine, engine, options()) is None


def test_size_commands() -> None:
    assert size_command("docker", "docker", "t") == [
        "docker",
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        "t",
    ]
    assert size_command("podman", "podman", "t") == [
        "podman",
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        "t",
    ]
    assert size_command("buildah", "buildah", "t") == ["buildah", "images", "--json", "t"]
    assert parse_size("docker", "21474836480\n") == "21.47 GB"
    assert parse_size("buildah", '[{"id": "ef78", "size": "6.29 KB"}]') == "6.29 KB"
    assert parse_size("podman", "") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"build_args": ("1BAD=x",)}, "--build-arg '1BAD=x'"),
        ({"build_args": ("NOVALUE",)}, "NAME=value"),
        ({"build_args": ("A=line\nbreak",)}, "newline"),
        ({"target": "run time"}, "--target"),
        ({"platform": "amd64"}, "os/arch"),
        ({"platform": "linux/amd64,linux/arm64"}, "add --push"),
    ],
)
def test_impossible_options_are_refused_with_the_option_named(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("?", r"\?")):
        build_command("docker", "docker", options(**changes))


def test_multi_platform_push_is_fine() -> None:
    argv = build_command("docker", "docker", options(platform="linux/amd64, linux/arm64", push=True))
    assert argv[argv.index("--platform") + 1] == "linux/amd64,linux/arm64"


# --- engine detection ---------------------------------------------------------------------------


def fake_tools(installed: dict[str, tuple[int, str]]):  # type: ignore[no-untyped-def]
    """which() and probe() over a table: binary -> (exit code, output) of its probe command."""

    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if name in installed else None

    calls: list[list[str]] = []

    def probe(argv: Sequence[str]) -> tuple[int, str]:
        calls.append(list(argv))
        return installed[Path(argv[0]).name]

    return which, probe, calls


def test_docker_with_buildx_is_preferred() -> None:
    which, probe, calls = fake_tools(
        {"docker": (0, "github.com/docker/buildx v0.24.0 d0e5e86"), "podman": (0, "podman version 4.9.3")}
    )
    engine = detect_engine(which=which, probe=probe)
    assert (engine.name, engine.binary) == ("docker", "/usr/bin/docker")
    assert calls == [["/usr/bin/docker", "buildx", "version"]]


def test_docker_without_buildx_falls_through_to_podman() -> None:
    which, probe, _ = fake_tools(
        {"docker": (1, "docker: unknown command: docker buildx"), "podman": (0, "podman version 4.9.3")}
    )
    assert detect_engine(which=which, probe=probe).name == "podman"


def test_docker_without_buildx_alone_is_explained() -> None:
    which, probe, _ = fake_tools(
        {"docker": (1, "docker: unknown command: docker buildx\n\nRun 'docker --help'")}
    )
    with pytest.raises(EngineError) as caught:
        detect_engine(which=which, probe=probe)
    message = str(caught.value)
    assert "buildx plugin is missing" in message
    assert "docker: unknown command: docker buildx" in message
    assert "docker-buildx-plugin" in message and "--engine podman" in message


def test_no_engine_names_what_was_looked_for() -> None:
    which, probe, _ = fake_tools({})
    with pytest.raises(
        EngineError,
        match=r"^no container engine found: looked for docker \(with the buildx plugin\), podman and buildah on PATH$",
    ):
        detect_engine(which=which, probe=probe)


def test_explicit_engine() -> None:
    which, probe, _ = fake_tools({"docker": (0, "buildx"), "buildah": (0, "Version: 1.28.2")})
    assert detect_engine("buildah", which=which, probe=probe).name == "buildah"
    with pytest.raises(EngineError, match="`podman` is not on PATH"):
        detect_engine("podman", which=which, probe=probe)
    with pytest.raises(EngineError, match="not one of"):
        detect_engine("kaniko", which=which, probe=probe)


def test_real_docker_here_lacks_buildx_or_works() -> None:
    """On this machine docker's CLI exists without the buildx plugin: the real probe says so."""
    import shutil

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    try:
        engine = detect_engine("docker")
    except EngineError as error:
        assert "buildx plugin is missing" in str(error)
    else:
        assert engine.name == "docker"


# --- BuildKit plain progress --------------------------------------------------------------------

# The shape BuildKit's plain printer writes (`docker buildx build --progress=plain`): vertex lines,
# "#N DONE <s>s" / "#N CACHED" / "#N ERROR: ...", then the error box with the Dockerfile line.
BUILDKIT_OK = """\
#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 6.12kB done
#1 DONE 0.0s

#2 [internal] load metadata for docker.io/nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
#2 DONE 1.2s

#5 [context zr4] load .dockerignore
#5 DONE 0.1s

#7 [builder 1/6] FROM docker.io/nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04@sha256:0a1b
#7 resolve docker.io/nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04@sha256:0a1b done
#7 DONE 95.5s

#8 [builder 2/6] RUN apt-get update && apt-get install -y build-essential
#8 0.512 Get:1 http://archive.ubuntu.com/ubuntu jammy InRelease [270 kB]
#8 DONE 41.0s

#9 [linux/amd64 runtime 1/9] FROM docker.io/nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
#9 CACHED

#10 [runtime 9/9] RUN zr4 doctor --build-time
#10 DONE 12.5s

#11 exporting to image
#11 exporting layers 30.1s done
#11 DONE 30.2s
"""

BUILDKIT_FAIL = """\
#8 [builder 2/6] RUN apt-get update && apt-get install -y build-essential
#8 0.190 Hit:1 http://archive.ubuntu.com/ubuntu jammy InRelease
#8 0.823 E: Unable to locate package build-essentail
#8 ERROR: process "/bin/bash -o pipefail -c apt-get update && apt-get install -y build-essentail" did not complete successfully: exit code: 100
------
 > [builder 2/6] RUN apt-get update && apt-get install -y build-essentail:
0.823 E: Unable to locate package build-essentail
------
Dockerfile:19
--------------------
  18 |     ENV DEBIAN_FRONTEND=noninteractive
  19 | >>> RUN apt-get update && apt-get install -y build-essentail
--------------------
ERROR: failed to solve: process "/bin/bash -o pipefail -c apt-get update && apt-get install -y build-essentail" did not complete successfully: exit code: 100
"""


def feed(progress: BuildKitProgress | PodmanProgress, text: str, step_s: float = 0.0) -> None:
    for number, line in enumerate(text.splitlines()):
        progress.feed(line, number * step_s)


def test_buildkit_time_per_stage() -> None:
    progress = BuildKitProgress()
    feed(progress, BUILDKIT_OK)
    timings = progress.timings()
    assert dict(timings.stages) == pytest.approx(
        {"internal": 1.2, "context": 0.1, "builder": 136.5, "runtime": 12.5, "export": 30.2}
    )
    assert [name for name, _ in timings.stages] == ["internal", "context", "builder", "runtime", "export"]
    assert timings.cached_steps == 1
    assert progress.failure() is None


def test_buildkit_failure_points_at_the_step_and_line() -> None:
    progress = BuildKitProgress()
    feed(progress, BUILDKIT_FAIL)
    failure = progress.failure()
    assert failure is not None
    assert failure.step == "[builder 2/6] RUN apt-get update && apt-get install -y build-essential"
    assert failure.dockerfile_line == 19
    assert failure.reason.endswith("did not complete successfully: exit code: 100")
    assert failure.output_tail[-1] == "E: Unable to locate package build-essentail"
    assert failure.describe().startswith("failed at [builder 2/6] RUN apt-get update")


# --- podman / buildah ----------------------------------------------------------------------------

# Recorded here: buildah 1.28.2, second `buildah build --layers` of a two-stage file (FROM scratch).
PODMAN_OUTPUT = """\
[1/2] STEP 1/3: FROM scratch AS base
[1/2] STEP 2/3: COPY a.txt /a.txt
--> Using cache fe14b8902f139405b881d14eee933bcd8de2d40f5610fd08ed9f449c8d2aeb91
--> fe14b8902f1
[1/2] STEP 3/3: COPY a.txt /b.txt
--> Using cache e8c007d31f73874da7f095cbbd91f1aea7d6e772ab36db61b6831e7c5d82e810
--> e8c007d31f7
[2/2] STEP 1/2: FROM scratch AS context-files
[2/2] STEP 2/2: COPY --from=base /a.txt /a.txt
--> Using cache fe14b8902f139405b881d14eee933bcd8de2d40f5610fd08ed9f449c8d2aeb91
[2/2] COMMIT zr4:dev
--> fe14b8902f1
Successfully tagged localhost/zr4:dev
fe14b8902f139405b881d14eee933bcd8de2d40f5610fd08ed9f449c8d2aeb91
"""


def test_podman_time_per_stage_from_line_arrival() -> None:
    progress = PodmanProgress()
    feed(progress, PODMAN_OUTPUT, step_s=1.0)
    progress.finish(99.0)
    timings = progress.timings()
    # One second per line: a step lasts until the next STEP or COMMIT line.
    assert dict(timings.stages) == {"base": 7.0, "context-files": 3.0}
    assert timings.cached_steps == 3 and timings.steps == 5


def test_podman_failure() -> None:
    progress = PodmanProgress()
    feed(
        progress,
        "STEP 1/2: FROM scratch AS files\nSTEP 2/2: COPY missing.txt /missing.txt\n"
        'Error: building at STEP "COPY missing.txt /missing.txt": checking on sources under "/ctx": '
        'copier: stat: "/missing.txt": no such file or directory\n',
    )
    failure = progress.failure()
    assert failure is not None
    assert failure.step == "STEP 2/2: COPY missing.txt /missing.txt"
    assert "no such file or directory" in failure.reason


def test_summary_lines() -> None:
    from zr4.build import BuildResult, Timings

    result = BuildResult(
        image="zr4:x",
        size="21.47 GB",
        timings=Timings((("builder", 136.5), ("runtime", 12.5)), 1, 9),
        total_s=180.2,
    )
    assert summary_lines(result) == [
        "image: zr4:x",
        "size: 21.47 GB",
        "time per stage:",
        "  builder     136.5 s",
        "  runtime      12.5 s",
        "total: 180.2 s (9 steps, 1 cached)",
    ]


# --- what a terminal shows while building -----------------------------------------------------------


def _shown(progress: BuildKitProgress | PodmanProgress, text: str, tty: bool) -> str:
    import io
    import re

    from zr4.build.display import BuildDisplay

    stream = io.StringIO()
    with BuildDisplay(stream, tty=tty) as display:
        for number, line in enumerate(text.splitlines()):
            display.echo(line)
            progress.feed(line, float(number))
            display.update(progress.all_steps())
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())


def test_a_terminal_gets_a_row_per_stage_under_the_engine_output() -> None:
    shown = _shown(PodmanProgress(), PODMAN_OUTPUT, tty=True)
    final = shown.splitlines()[-2:]  # the rows as rich leaves them when the build ends
    assert final[0].split()[:3] == ["✓", "base", "3/3"] and final[0].rstrip().endswith("COPY a.txt /b.txt")
    assert final[1].split()[1:3] == ["context-files", "2/2"]
    assert "Successfully tagged localhost/zr4:dev" in shown  # the engine's lines still scroll
    buildkit = _shown(BuildKitProgress(), BUILDKIT_OK, tty=True).splitlines()[-2:]
    assert [row.split()[1:3] for row in buildkit] == [["builder", "2/6"], ["runtime", "2/9"]]


def test_a_log_gets_the_engine_lines_and_nothing_drawn() -> None:
    assert _shown(PodmanProgress(), PODMAN_OUTPUT, tty=False) == PODMAN_OUTPUT
