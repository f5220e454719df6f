"""Every workflow every bundled profile renders, against the live ComfyUI v0.7.0 + pinned nodes.

Two independent judges: zr4's own checker fed the LIVE ``/object_info`` (node types, inputs, choices,
with file-name choices checked against the placeholder files), and ComfyUI's ``POST /prompt``
validation (``node_errors`` must be empty).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from support.real_comfyui import ComfySources, ComfyUIServer
from zr4.core.workflow.check import check_workflow
from zr4.paths import data_dir

pytestmark = pytest.mark.slow


def _names(workflows: dict[tuple[str, str], Any]) -> list[str]:
    return [f"{profile}:{path}" for profile, path in sorted(workflows)]


def test_every_profile_renders_a_workflow(bundled_workflows: dict[tuple[str, str], Any]) -> None:
    from zr4.profile import bundled_profile_names

    rendered_by = {profile for profile, _path in bundled_workflows}
    assert rendered_by == set(bundled_profile_names())


def test_workflows_match_live_object_info(
    comfyui: ComfyUIServer, bundled_workflows: dict[tuple[str, str], Any]
) -> None:
    info = comfyui.object_info()
    assert len(info) > 900, (
        f"only {len(info)} node types: a node pack failed to load\n{comfyui.log()[-3000:]}"
    )
    failures = []
    for (profile, path), workflow in sorted(bundled_workflows.items()):
        problems = check_workflow(workflow, info, strict_files=True)
        failures += [f"{profile}:{path}: {problem}" for problem in problems]
    assert not failures, "\n".join(failures)


def test_live_object_info_lists_the_placeholder_models(
    comfyui: ComfyUIServer, model_files: list[str]
) -> None:
    """Guard for the strict check above: file choices really come from the placeholder files."""
    info = comfyui.object_info()
    loader_choices = info["WanVideoVAELoader"]["input"]["required"]["model_name"][0]
    vae_files = [rel.split("/", 1)[1] for rel in model_files if rel.startswith("vae/")]
    assert vae_files and set(vae_files) <= set(loader_choices)


def test_prompt_validates_without_node_errors(
    comfyui: ComfyUIServer, bundled_workflows: dict[tuple[str, str], Any]
) -> None:
    answers = {}
    for key, workflow in sorted(bundled_workflows.items()):
        status, body = comfyui.post_json("/prompt", {"prompt": workflow, "client_id": "zr4-conformance"})
        answers[key] = (status, body)
        # The prompt was valid and queued; its run fails on placeholder weights. Drop it.
        comfyui.post_json("/queue", {"clear": True})
        comfyui.post_json("/interrupt", {})
    bad = {
        f"{profile}:{path}": answer
        for (profile, path), answer in answers.items()
        if answer[0] != 200 or not isinstance(answer[1], dict) or answer[1].get("node_errors")
    }
    assert not bad, bad
    assert all("prompt_id" in body for _status, body in answers.values())


@pytest.mark.timeout(900)
def test_node_definitions_are_what_the_generator_captures(comfy_sources: ComfySources) -> None:
    """data/comfyui/ (object_info and the workflow's node subset) is generated from the pinned
    sources, not typed: a fresh capture from ComfyUI must give the same bytes."""
    result = subprocess.run(
        [
            sys.executable,
            str(data_dir() / "comfyui" / "gen_object_info.py"),
            "--check",
            "--comfyui",
            str(comfy_sources.comfyui),
            "--python",
            str(comfy_sources.python),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
