"""The UI-format workflows open in ComfyUI v0.7.0's real frontend (1.35.9), clicked in the sidebar.

What a user does: open ComfyUI, close the templates dialog, click *Workflows*, click the file.
Each bundled profile's UI-format workflow (``workflows/steadydancer-<variant>.ui.json``, what
`zr4 start` installs as ``user/default/workflows/steadydancer-<variant>.json``) is put in that
folder and opened. The canvas must then hold every node and link of the file and its groups,
show no error, and the frontend's own ``graphToPrompt`` (what *Run* would send) must give back
the API-format twin exactly, so the two formats cannot disagree.

The API format alone opened this way showed an empty canvas and "Workflow does not contain a
valid version. Zod error: Required at "version"" (the bug this guards); the first test keeps that
observation, so the check is known to see it.

Screenshots go to ``tmp_path``; with ``ZR4_CONFORMANCE_OUT`` set (``bench/conformance.py`` sets
it) the 4080super one is also copied there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import Browser
from support.comfy_frontend import VIEWPORT, click_workflow, open_sidebar, pan_clear_of_the_sidebar
from support.real_comfyui import ComfyUIServer
from zr4.core.workflow.install import WORKFLOWS_SUBDIR
from zr4.core.workflow.ui import is_ui_workflow

pytestmark = pytest.mark.slow

SCREENSHOT_PROFILE = "4080super"


def rendered_ui_workflows() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Sidebar file name -> (profile, UI workflow, API twin) for every bundled profile."""
    from zr4.profile import bundled_profile_names, load_profile
    from zr4.render import render_files

    found = {}
    for name in bundled_profile_names():
        files = {
            r.path: json.loads(r.content)
            for r in render_files(load_profile(name))
            if r.path.endswith(".json")
        }
        for path, document in files.items():
            if path.startswith("workflows/") and path.endswith(".ui.json"):
                assert is_ui_workflow(document), path
                twin = files[path.removesuffix(".ui.json") + ".json"]
                stem = Path(path.removesuffix(".ui.json")).name
                found[f"{name}-{stem}.json"] = (name, document, twin)
    return found


@pytest.fixture(scope="module")
def workflows_folder(comfy_tree: Path, comfyui: ComfyUIServer) -> Iterator[Path]:
    """ComfyUI's user workflows folder (what the sidebar lists); emptied afterwards."""
    folder = comfy_tree / WORKFLOWS_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    shutil.rmtree(folder)


def run_browser(chromium: str, profile_dir: Path, url: str, names: list[str], shots: Path) -> dict[str, Any]:
    """Open each file in turn from one page's sidebar; a screenshot after each."""

    async def session() -> dict[str, Any]:
        seen = {}
        async with Browser(profile_dir, chromium) as browser:
            page = await browser.new_page()
            await page.set_viewport(*VIEWPORT)
            try:
                await open_sidebar(page, url)
                for name in names:
                    seen[name] = await click_workflow(page, name)
                    if seen[name]["nodes"]:
                        await pan_clear_of_the_sidebar(page)
                    await page.screenshot(shots / f"{Path(name).stem}.png")
            except AssertionError:
                await page.screenshot(shots / "failure.png")
                raise
        return seen

    return asyncio.run(session())


@pytest.mark.timeout(900)
def test_api_format_alone_opens_as_an_empty_canvas_with_a_zod_error(
    chromium: str, comfyui: ComfyUIServer, workflows_folder: Path, tmp_path: Path
) -> None:
    """The reported bug, kept observable: the sidebar refuses the API format."""
    _profile, _ui, api = rendered_ui_workflows()[f"{SCREENSHOT_PROFILE}-steadydancer-gguf.json"]
    (workflows_folder / "api-format.json").write_text(json.dumps(api), encoding="utf-8")
    try:
        seen = run_browser(chromium, tmp_path / "chromium", comfyui.url, ["api-format.json"], tmp_path)
    finally:
        (workflows_folder / "api-format.json").unlink()
    state = seen["api-format.json"]
    assert state["nodes"] == []
    assert any("valid version" in alert and 'Required at "version"' in alert for alert in state["alerts"]), (
        state
    )


@pytest.mark.timeout(1200)
def test_ui_workflows_open_from_the_sidebar_with_every_node_link_and_group(
    chromium: str, comfyui: ComfyUIServer, workflows_folder: Path, tmp_path: Path
) -> None:
    workflows = rendered_ui_workflows()
    for name, (_profile, ui, _api) in workflows.items():
        (workflows_folder / name).write_text(json.dumps(ui, indent=2), encoding="utf-8")
    seen = run_browser(chromium, tmp_path / "chromium", comfyui.url, sorted(workflows), tmp_path)

    out = os.environ.get("ZR4_CONFORMANCE_OUT")
    if out:
        shutil.copy(
            tmp_path / f"{SCREENSHOT_PROFILE}-steadydancer-gguf.png", Path(out) / "comfyui-ui-workflow.png"
        )
    failures = []
    for name, (_profile, ui, api) in sorted(workflows.items()):
        state = seen[name]
        expected_nodes = sorted([n["id"], n["type"]] for n in ui["nodes"])
        checks = {
            "frontend 1.35.9": state["version"] == "1.35.9",
            "every node": sorted(state["nodes"]) == expected_nodes,
            "every link": sorted(state["links"]) == sorted(ui["links"]),
            "the groups": state["groups"] == [g["title"] for g in ui["groups"]],
            "no alert": state["alerts"] == [],
            "graphToPrompt is the API twin": state["prompt"] == api,
        }
        failures += [f"{name}: {what} failed" for what, ok in checks.items() if not ok]
        if not checks["every link"]:
            shown, written = {tuple(x) for x in state["links"]}, {tuple(x) for x in ui["links"]}
            failures.append(f"  canvas only: {sorted(shown - written)}; file only: {sorted(written - shown)}")
    assert not failures, (
        "\n".join(failures)
        + "\n"
        + json.dumps(
            {name: {k: v for k, v in state.items() if k != "prompt"} for name, state in seen.items()},
            indent=1,
        )[:6000]
    )
