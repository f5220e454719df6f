"""Checks 4, 5 and 13: hadolint, shellcheck and a real buildah build, run on broken contexts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.validate_context import REPO, context_of, messages
from zr4.validate import BuildContext
from zr4.validate.check_build import check_build, offline_stages
from zr4.validate.check_lint import check_hadolint, check_shellcheck, hadolint_config

needs_buildah = pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed")


# ---- check 4: hadolint --------------------------------------------------------------------------


def test_committed_config_lists_a_reason_for_every_ignored_rule() -> None:
    assert REPO is not None
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    ignored = [i for i, line in enumerate(lines) if line.strip().startswith("- DL")]
    assert ignored, "the config ignores no rule"
    for index in ignored:
        assert lines[index - 1].strip().startswith("#"), f"{lines[index].strip()} has no reason above it"


def test_hadolint_uses_the_committed_config_and_passes_the_render(ctx: Path) -> None:
    context = context_of(ctx)
    assert REPO is not None and hadolint_config(context) == REPO / ".hadolint.yaml"
    result = check_hadolint(context)
    assert result.status == "pass", messages(result)


def test_hadolint_reports_unpinned_pip_and_cd(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "RUN ln -s /opt/zr4/bin/zr4 /usr/local/bin/zr4",
            "RUN cd /opt && pip install xformers>=0.0.28 || true",
            1,
        )
    )
    report = messages(check_hadolint(context_of(ctx)))
    assert "DL3003" in report  # use WORKDIR to switch to a directory
    assert "DL3013" in report  # pin versions in pip


def test_inline_ignore_pragmas_are_disabled(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "RUN ln -s /opt/zr4/bin/zr4 /usr/local/bin/zr4",
            "# hadolint ignore=DL3003\nRUN cd /opt && ln -s /opt/zr4/bin/zr4 /usr/local/bin/zr4",
            1,
        )
    )
    assert "DL3003" in messages(check_hadolint(context_of(ctx)))


# ---- check 5: shellcheck ------------------------------------------------------------------------


def test_shellcheck_passes_the_rendered_start_script(ctx: Path) -> None:
    result = check_shellcheck(context_of(ctx))
    assert result.status == "pass", messages(result)
    assert result.notes == ("checked start.sh",)


def test_shellcheck_finds_problems_in_every_script(ctx: Path) -> None:
    (ctx / "start.sh").write_text(
        '#!/usr/bin/env bash\nset -euo pipefail\nCOMFYUI_ARGS="--lowvram"\ncd $COMFYUI_DIR\nexec python main.py $COMFYUI_ARGS\n'
    )
    (ctx / "helper").write_text("#!/bin/sh\nfor f in $(ls *.json); do echo $f; done\n")
    result = check_shellcheck(context_of(ctx))
    report = messages(result)
    assert result.status == "fail"
    assert "start.sh:4: SC2086" in report  # double quote to prevent globbing and word splitting
    assert "helper:2: SC2045" in report  # iterating over ls output is fragile


# ---- check 13: buildah --------------------------------------------------------------------------


def test_offline_stages_of_the_render(ctx: Path) -> None:
    context = context_of(ctx)
    assert context.model is not None
    assert [s.name for s in offline_stages(context.model, context.named_contexts)] == ["context-files"]


@needs_buildah
def test_buildah_builds_the_rendered_network_free_stages(ctx: Path) -> None:
    result = check_build(context_of(ctx))
    if result.status == "skip":
        pytest.skip(result.notes[0])
    assert result.status == "pass", messages(result)
    assert "built stage context-files (5 instructions)" in result.notes
    assert not any("COPY --from=" in note for note in result.notes)  # no named context any more


@needs_buildah
def test_buildah_fails_on_a_workflows_dir_a_dockerignore_drops(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("*.txt\n*.md\nworkflows/\n")
    result = check_build(context_of(ctx))
    if result.status == "skip":
        pytest.skip(result.notes[0])
    (finding,) = result.findings
    assert (
        finding.line
        == (ctx / "Dockerfile").read_text().splitlines().index("COPY workflows /opt/zr4/workflows") + 1
    )
    assert finding.message.startswith("stage context-files fails:")
    assert "workflows" in finding.message


@needs_buildah
def test_buildah_replays_named_context_copies_with_that_contexts_ignore_file(
    ctx: Path, tmp_path: Path
) -> None:
    root = tmp_path / "zr4-root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "x.py").write_text("")
    for folder in ("profiles", "templates", "data"):
        (root / folder).mkdir()
        (root / folder / "f").write_text("")
    (root / "pyproject.toml").write_text("")
    (root / "README.md").write_text("")
    (root / ".dockerignore").write_text("templates\n")
    # The rendered Dockerfile needs no named context; one a user (or a build switch) adds is replayed.
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "WORKDIR /tmp/zr4\n",
            "WORKDIR /tmp/zr4\nCOPY --from=zr4 src /tmp/zr4-src/src\n"
            "COPY --from=zr4 templates /tmp/zr4-src/templates\n",
            1,
        )
    )
    result = check_build(BuildContext(ctx, named_contexts={"zr4": root}))
    if result.status == "skip":
        pytest.skip(result.notes[0])
    (finding,) = result.findings
    assert finding.message.startswith("COPY --from=zr4 (replayed against")
    assert (
        finding.line
        == (ctx / "Dockerfile")
        .read_text()
        .splitlines()
        .index("COPY --from=zr4 templates /tmp/zr4-src/templates")
        + 1
    )


@needs_buildah
def test_buildah_replays_every_context_copy_of_a_render_anywhere(tmp_path: Path) -> None:
    from zr4.profile import load_profile
    from zr4.render import render_files, write_context

    out = tmp_path / "somewhere" / "else" / "my-4080"
    write_context(render_files(load_profile("4080super")), out)
    result = check_build(context_of(out))
    if result.status == "skip":
        pytest.skip(result.notes[0])
    assert result.status == "pass", messages(result)
    copies = [note for note in result.notes if note.startswith("built every COPY from the build context")]
    assert copies and str(out) in copies[0], result.notes

    # A context missing a file the zr4-venv stage copies (behind a RUN, so not built for real) fails.
    (out / "zr4-runtime.lock").unlink()
    result = check_build(context_of(out))
    (finding,) = result.findings
    assert finding.message.startswith("COPY from the build context (replayed) fails:")
    assert "zr4-runtime.lock" in finding.message
    dockerfile = (out / "Dockerfile").read_text().splitlines()
    assert dockerfile[finding.line - 1].startswith("COPY zr4-runtime.lock")


@needs_buildah
def test_a_wheel_that_does_not_match_its_sha256_file_is_found(ctx: Path) -> None:
    from zr4.render.wheel import SHA256_NAME, WHEEL_NAME

    with (ctx / WHEEL_NAME).open("ab") as wheel:
        wheel.write(b"\0")
    result = check_build(context_of(ctx))
    if result.status == "skip":
        pytest.skip(result.notes[0])
    (finding,) = result.findings
    assert finding.message == f"{SHA256_NAME} does not match {WHEEL_NAME} (sha256sum --check would fail)"
