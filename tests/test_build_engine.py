"""`zr4 build` with a real engine where one is installed (buildah here; skipped cleanly otherwise).

Only stages that need no network are built: ``context-files`` (FROM scratch + the rendered files)
of the real rendered Dockerfile, and a one-stage file whose COPY source is missing (the failure path).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zr4.build import BuildFailed, BuildOptions, detect_engine, run_build, summary_lines
from zr4.build.engine import EngineError
from zr4.cli.build import build
from zr4.profile import load_profile
from zr4.render import render_files, write_context


def _usable_engine():  # type: ignore[no-untyped-def]
    # Only daemonless buildah/podman: a docker CLI may be present without a daemon to build with.
    for name in ("buildah", "podman"):
        if shutil.which(name) is None:
            continue
        try:
            return detect_engine(name)
        except EngineError:
            continue
    return None


ENGINE = _usable_engine()
needs_engine = pytest.mark.skipif(ENGINE is None, reason="no buildah or podman on this machine")


@pytest.fixture
def tag() -> Iterator[str]:
    name = f"localhost/zr4-test:{uuid.uuid4().hex[:10]}"
    yield name
    if ENGINE is not None:
        subprocess.run([ENGINE.binary, "rmi", "-f", name], capture_output=True, check=False)


@needs_engine
@pytest.mark.slow
def test_context_files_stage_of_the_rendered_dockerfile_builds(tmp_path: Path, tag: str) -> None:
    assert ENGINE is not None
    context = tmp_path / "docker"
    write_context(render_files(load_profile("4080super")), context)
    lines: list[str] = []
    result = run_build(
        ENGINE,
        BuildOptions(context_dir=context, tag=tag, target="context-files"),
        echo=lines.append,
    )
    assert result.image == tag
    assert result.size is not None and result.size[0].isdigit()
    assert [name for name, _ in result.timings.stages] == ["context-files"]
    assert result.timings.steps == 5  # FROM scratch + four COPYs
    summary = summary_lines(result)
    assert summary[0] == f"image: {tag}" and summary[-1].startswith("total: ")
    assert any(line.startswith("$ ") and "--target context-files" in line for line in lines)


@needs_engine
def test_a_failing_step_exits_with_the_engines_code_and_names_the_step(tmp_path: Path, tag: str) -> None:
    assert ENGINE is not None
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch AS files\nCOPY missing.txt /missing.txt\n")
    with pytest.raises(BuildFailed) as caught:
        run_build(ENGINE, BuildOptions(context_dir=context, tag=tag), echo=lambda _l: None)
    assert caught.value.exit_code == 125  # buildah's and podman's exit code for a failed build
    message = str(caught.value)
    assert "failed at STEP 2/2: COPY missing.txt /missing.txt" in message
    assert "no such file or directory" in message


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(build)
    app.command("noop")(lambda: None)  # two commands: Typer keeps `build` as a subcommand
    return app


def test_dry_run_prints_the_command_and_context(tmp_path: Path) -> None:
    out = tmp_path / "docker"
    result = CliRunner().invoke(
        _cli(),
        ["build", "--profile", "4080super", "--out", str(out), "--engine", "podman", "--dry-run",
         "--build-arg", "MAX_JOBS=2", "--tag", "ghcr.io/me/zr4:test", "--push"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    count = len(render_files(load_profile("4080super")))
    assert lines[0] == f"context: {out.resolve()} (rendered from profile 4080super, {count} files)"
    command = next(line for line in lines if " build --layers " in line)
    assert command.endswith(f"--build-arg MAX_JOBS=2 {out.resolve()}")
    assert "--build-context" not in command  # the rendered context is self-contained
    assert " build --layers --format docker " in command
    assert lines[-1].endswith("push ghcr.io/me/zr4:test")
    assert (out / "Dockerfile").is_file()


def test_default_tag_comes_from_the_profile(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["build", "--profile", "4090", "--out", str(tmp_path / "d"), "--engine", "buildah", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    profile = load_profile("4090")
    assert f"--tag {profile.image.name}:{profile.image_tag} " in result.output


@needs_engine
@pytest.mark.slow
def test_build_command_validates_then_builds(tmp_path: Path, tag: str) -> None:
    assert ENGINE is not None
    result = CliRunner().invoke(
        _cli(),
        ["build", "--profile", "4080super", "--out", str(tmp_path / "docker"), "--engine", ENGINE.name,
         "--target", "context-files", "--tag", tag],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"static checks passed for {tmp_path / 'docker'}" in result.output
    assert f"image: {tag}" in result.output and "total: " in result.output


def test_a_context_failing_the_static_checks_stops_the_build(tmp_path: Path) -> None:
    from zr4.build.validation import ValidationFailed, ensure_valid

    context = tmp_path / "docker"
    write_context(render_files(load_profile("4080super")), context)
    (context / "models.yaml").unlink()  # a COPY source of the Dockerfile
    with pytest.raises(ValidationFailed) as caught:
        ensure_valid(context)
    assert "models.yaml" in str(caught.value) and "--no-validate" in str(caught.value)


@needs_engine
def test_a_terminal_shows_each_stage_of_a_real_build_and_the_failing_step(tmp_path: Path, tag: str) -> None:
    import io
    import re

    from zr4.build.display import BuildDisplay

    assert ENGINE is not None
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "f.txt").write_text("f\n")
    (context / "Dockerfile").write_text(
        "FROM scratch AS one\nCOPY f.txt /f.txt\nCOPY f.txt /g.txt\n"
        "FROM scratch AS two\nCOPY --from=one /f.txt /f.txt\nCOPY missing.txt /missing.txt\n"
    )
    stream = io.StringIO()
    with pytest.raises(BuildFailed), BuildDisplay(stream, tty=True) as display:
        run_build(
            ENGINE,
            BuildOptions(context_dir=context, tag=tag),
            echo=display.echo,
            display=display,
        )
    rows = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue()).splitlines()[-2:]
    assert rows[0].split()[:3] == ["✓", "one", "3/3"]
    assert rows[1].split()[1:3] == ["two", "2/3"]
    assert rows[1].rstrip().endswith("failed: COPY missing.txt /missing.txt")


def test_default_context_is_a_temporary_folder_not_docker_or_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the checkout's docker/ (the committed 4080super context, which holds the user's .env) and not
    # ./docker: a folder of its own, gone when the command ends.
    checkout_docker = Path(__file__).resolve().parents[1] / "docker"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(
        _cli(), ["build", "--profile", "4080super", "--engine", "buildah", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("context: ") and not first.startswith(f"context: {checkout_docker} ")
    assert "a temporary folder, removed when zr4 exits" in first
    assert not Path(first.split()[1]).exists()
    assert list(elsewhere.iterdir()) == []
