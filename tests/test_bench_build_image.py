"""bench/build_image.py reads what it must stand in for out of the rendered Dockerfile itself.

The real build (bench/results/build.md, and the zr4-venv stage in CI) depends on the script finding
the base images, the uv image, the managed-Python pin and its switches in every render; a template
change that moves one of them must fail here, in seconds, rather than an hour into a build.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RENDERS = [ROOT / "docker", *sorted(p for p in (ROOT / "tests" / "golden").iterdir() if p.is_dir())]


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


standins = _load("build_standins")
build_image = _load("build_image")


@pytest.mark.parametrize("render", RENDERS, ids=lambda p: p.name)
def test_every_render_names_what_the_stand_ins_replace(render: Path) -> None:
    profile = (render / "profile.json").read_text()
    wanted = standins.read_dockerfile(render / "Dockerfile")
    assert wanted.uv_image.startswith("ghcr.io/astral-sh/uv:")
    assert wanted.devel_image.startswith("nvidia/cuda:") and "-devel-" in wanted.devel_image
    assert wanted.runtime_image.startswith("nvidia/cuda:") and "-base-" in wanted.runtime_image
    assert wanted.devel_image in profile and wanted.runtime_image in profile
    assert wanted.python.count(".") == 2, "the managed Python is pinned to a patch release"
    assert wanted.python_dir == "/opt/python"
    if "FLASH_ATTN_SOURCE=release" in (render / "Dockerfile").read_text():
        assert wanted.flash_attn_url and wanted.flash_attn_url.endswith(".whl"), (
            "the stand-in needs the wheel's name"
        )


def test_the_pinned_python_needs_no_switch() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    wanted = standins.read_dockerfile(ROOT / "docker" / "Dockerfile")
    local = standins.LocalPython(Path("python-local"), wanted.python)
    args, note = build_image.python_switches(dockerfile, wanted, local)
    assert args == {"PYTHON_SOURCE": "local"}
    assert f"asks for {wanted.python}" in note


def test_another_python_is_passed_and_said() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    wanted = standins.read_dockerfile(ROOT / "docker" / "Dockerfile")
    local = standins.LocalPython(Path("python-local"), "3.11.2")
    args, note = build_image.python_switches(dockerfile, wanted, local)
    assert args == {"PYTHON_SOURCE": "local", "PYTHON_VERSION": "3.11.2"}
    assert f"not the pinned {wanted.python}" in note


def test_a_dockerfile_without_the_switch_refuses_another_python() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    wanted = standins.read_dockerfile(ROOT / "docker" / "Dockerfile")
    without = dockerfile.replace("ARG PYTHON_VERSION=", "ARG SOMETHING_ELSE=")
    with pytest.raises(SystemExit, match="no PYTHON_VERSION build ARG"):
        build_image.python_switches(without, wanted, standins.LocalPython(Path("x"), "3.11.2"))


def test_a_stage_built_inside_another_steps_copy_is_not_counted_twice(tmp_path: Path) -> None:
    # buildah builds venv when runtime's COPY --from=venv first needs it: the COPY's own time is
    # what remains after venv's steps, and FROM steps (no "-->" line) end at the next STEP.
    log = tmp_path / "build.log"
    log.write_text(
        "     0.0 [2/3] STEP 1/2: FROM base AS runtime\n"
        "     0.0 [2/3] STEP 2/2: COPY --from=venv /opt/venv /opt/venv\n"
        "     0.0 [1/3] STEP 1/2: FROM base AS venv\n"
        "     0.0 [1/3] STEP 2/2: RUN install\n"
        "   100.0 --> aaa\n"
        "   130.0 --> bbb\n"
        "   130.0 [3/3] STEP 1/2: FROM base AS other\n"
        "   130.0 [3/3] STEP 2/2: RUN cached\n"
        "   130.5 --> Using cache ccc\n"
        "   130.5 --> ccc\n"
    )
    stages = build_image.read_build_log(log)
    assert stages.stages() == [("runtime", 30.0, 2, 0), ("venv", 100.0, 2, 0), ("other", 0.5, 2, 1)]


@pytest.mark.parametrize("render", RENDERS, ids=lambda p: p.name)
def test_the_runtime_head_is_the_runtime_stage_up_to_its_first_copy(render: Path) -> None:
    """CI builds this head on a stand-in of the runtime base's release: it must hold the stage's OS
    packages and user, and nothing that needs another stage or the build context."""
    build_image = _load("build_image")
    text = (render / "Dockerfile").read_text()
    head = build_image.stage_head(text, "runtime")
    lines = head.splitlines()
    assert lines[0] == "# syntax=docker/dockerfile:1.7"
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 1 and froms[0].endswith(" AS runtime") and "-base-ubuntu" in froms[0]
    assert not any(line.startswith(("COPY", "ADD")) for line in lines)
    assert "apt-get install" in head and "useradd --uid 1000" in head
    # After the directive, the head is the Dockerfile's runtime stage itself (comments aside), cut
    # right before its first COPY.
    body = text.splitlines()
    own = [line for line in body[body.index(froms[0]) :] if not line.lstrip().startswith("#")]
    assert lines[1:] == own[: len(lines) - 1]
    assert own[len(lines) - 1].startswith("COPY --from=")


def test_a_missing_stage_has_no_head() -> None:
    build_image = _load("build_image")
    with pytest.raises(SystemExit, match="no stage 'nowhere'"):
        build_image.stage_head((ROOT / "docker" / "Dockerfile").read_text(), "nowhere")
