"""Fixtures for the conformance suite: zr4 against the real, pinned ComfyUI on the CPU.

Every test here skips unless ``ZR4_COMFYUI_SOURCES`` and ``ZR4_COMFYUI_PYTHON`` are set (see
``tests/support/real_comfyui.py``); the skip reason names them. Fixtures, for other checks to reuse:

- ``comfy_sources`` (session): the :class:`ComfySources` (tree + python + commits);
- ``comfy_tree`` (session): a private copy of ComfyUI with placeholder model files for every file
  any bundled profile's workflow loads, and the workflows' input image/video (read-only by
  convention: copy it with ``copy_comfyui`` when a test must write into ComfyUI's folder);
- ``comfyui`` (session): that copy served on a free port with ``--cpu``
  (a :class:`ComfyUIServer`: ``.url``, ``.object_info()``, ``.post_json()``, ``.log()``);
- ``bundled_workflows`` (session): ``{(profile, path): workflow}`` for every API-format
  ``workflows/*.json`` that every bundled profile renders;
- ``model_files`` (session): the ``folder/name`` paths the placeholders cover.

To start another ComfyUI (other flags, ``zr4 start``), use ``start_comfyui`` / ``spawn`` from
``support.real_comfyui`` on a ``copy_comfyui`` of ``comfy_sources``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from support.browser import chromium_or_skip_reason
from support.real_comfyui import (
    ComfySources,
    ComfyUIServer,
    copy_comfyui,
    place_placeholder_models,
    sources_or_skip_reason,
    start_comfyui,
)

# A 1x1 PNG: LoadImage's validation only checks the file exists, but keep it a real image.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def is_api_workflow(document: Any) -> bool:
    """API format: node id -> {class_type, inputs}; the UI format has "nodes" and "links" lists."""
    return (
        isinstance(document, dict)
        and bool(document)
        and all(isinstance(node, dict) and "class_type" in node for node in document.values())
    )


def render_workflows() -> dict[tuple[str, str], dict[str, Any]]:
    """Every API-format workflow of every bundled profile's render, keyed by (profile, path)."""
    from zr4.profile import bundled_profile_names, load_profile
    from zr4.render import render_files

    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in bundled_profile_names():
        for rendered in render_files(load_profile(name)):
            if rendered.path.startswith("workflows/") and rendered.path.endswith(".json"):
                document = json.loads(rendered.content)
                if is_api_workflow(document):
                    found[(name, rendered.path)] = document
    return found


def profile_model_files() -> list[str]:
    """``folder/name`` of every model file the bundled profiles' default settings resolve to."""
    from zr4.profile import bundled_profile_names, load_profile
    from zr4.render.extras import default_targets

    return sorted({t.rel for name in bundled_profile_names() for t in default_targets(load_profile(name))})


T = TypeVar("T")


def _found_or_skip(found: tuple[T | None, str]) -> T:
    """The thing a ``*_or_skip_reason`` helper found; without it, skip the test naming what is missing."""
    thing, reason = found
    if thing is None:
        pytest.skip(reason)
    return thing


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless Chromium for the browser checks; skips, naming what is missing, without one."""
    return _found_or_skip(chromium_or_skip_reason())


@pytest.fixture(scope="session")
def comfy_sources() -> ComfySources:
    return _found_or_skip(sources_or_skip_reason())


@pytest.fixture(scope="session")
def bundled_workflows() -> dict[tuple[str, str], dict[str, Any]]:
    return render_workflows()


@pytest.fixture(scope="session")
def model_files() -> list[str]:
    return profile_model_files()


def input_files(workflows: dict[tuple[str, str], dict[str, Any]]) -> dict[str, bytes]:
    """The reference images and driving videos the workflows name, as small placeholder files."""
    files: dict[str, bytes] = {}
    for workflow in workflows.values():
        for node in workflow.values():
            inputs = node.get("inputs", {})
            if node["class_type"] == "LoadImage":
                files[inputs["image"]] = PNG_1X1
            elif node["class_type"].startswith("VHS_LoadVideo"):
                files[inputs["video"]] = b"\0" * 64
    return files


@pytest.fixture(scope="session")
def comfy_tree(
    comfy_sources: ComfySources,
    tmp_path_factory: pytest.TempPathFactory,
    bundled_workflows: dict[tuple[str, str], dict[str, Any]],
    model_files: list[str],
) -> Path:
    comfy = copy_comfyui(comfy_sources, tmp_path_factory.mktemp("comfyui"))
    place_placeholder_models(comfy / "models", model_files)
    for name, content in input_files(bundled_workflows).items():
        target = comfy / "input" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return comfy


@pytest.fixture(scope="session")
def comfyui(comfy_tree: Path, comfy_sources: ComfySources) -> Iterator[ComfyUIServer]:
    server = start_comfyui(comfy_tree, comfy_sources.python, ("--cpu",), log_path=comfy_tree / "comfyui.log")
    try:
        yield server
    finally:
        server.stop()
