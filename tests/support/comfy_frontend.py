"""The real ComfyUI frontend (comfyui-frontend-package 1.35.9) driven as a user drives it.

Shared by the conformance tests that open workflows: load the page, close the templates dialog a
new user gets, open the Workflows sidebar, click a file, and read back what the canvas holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from support.browser import Page

# The frontend's own selectors (comfyui-frontend-package 1.35.9): sidebar tabs are
# `<id>-tab-button`, the Browse tree lists `user/default/workflows` as PrimeVue tree nodes.
WORKFLOWS_TAB = ".workflows-tab-button"
TEMPLATES_CLOSE = ".global-dialog button:has(> i.pi-times)"
ALERTS = ".p-toast-message, .p-dialog"
VIEWPORT = (2720, 1200)  # the whole graph at the opening zoom, right of the open sidebar


def entry(file_name: str) -> str:
    return f'.comfyui-workflows-browse li.p-tree-node[aria-label="{file_name}"] .p-tree-node-content'


async def open_sidebar(page: Page, url: str) -> None:
    """Load the frontend and open its Workflows sidebar, as a new user does."""
    await page.goto(url + "/")
    await page.wait_for("!!window.app?.graph && !!window.app?.extensionManager", "the frontend", 240)
    # For a new user the frontend opens its templates dialog over the sidebar, a moment after it
    # loads; it comes once per user, so it is looked for only for a while.
    await page.wait_for(f"!!document.querySelector({json.dumps(WORKFLOWS_TAB)})", "the sidebar", 60)
    with contextlib.suppress(AssertionError):
        await page.wait_for(f"!!document.querySelector({json.dumps(TEMPLATES_CLOSE)})", "templates", 15)
        await page.click(TEMPLATES_CLOSE)
        await page.wait_for("!document.querySelector('.global-dialog')", "the templates dialog to close")
    for _attempt in range(3):  # a click while the dialog's closing animation runs can be lost
        await page.click(WORKFLOWS_TAB)
        with contextlib.suppress(AssertionError):
            await page.wait_for("!!document.querySelector('.comfyui-workflows-browse')", "the sidebar", 10)
            return
    raise AssertionError("the Workflows sidebar did not open")


async def click_workflow(page: Page, file_name: str) -> dict[str, Any]:
    """Click the file in the open sidebar; what the canvas then holds."""
    await page.click(entry(file_name), timeout_s=60)
    await page.wait_for(
        f"(window.app.extensionManager.workflow.activeWorkflow?.path ?? '') === 'workflows/{file_name}'",
        f"{file_name} to become the active workflow",
        60,
    )
    await asyncio.sleep(2)  # node extensions (VideoHelperSuite previews) finish; an error toast shows
    state: dict[str, Any] = await page.evaluate(
        """(async () => {
        const graph = window.app.graph;
        const prompt = graph.nodes.length ? (await window.app.graphToPrompt()).output : {};
        return {
          version: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
          nodes: graph.nodes.map((n) => [n.id, n.type]),
          links: [...graph.links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id,
                                                      l.target_slot, l.type]),
          groups: graph.groups.map((g) => g.title),
          prompt,
          alerts: [...document.querySelectorAll(ALERTS)].map((e) => e.textContent.trim()).filter(Boolean),
        };
      })()""".replace("ALERTS", json.dumps(ALERTS))
    )
    return state


async def pan_clear_of_the_sidebar(page: Page) -> None:
    """Move the canvas so the graph's left edge sits right of the open sidebar (for screenshots)."""
    await page.evaluate(
        """(() => {
        const sidebar = document.querySelector('.comfyui-workflows-browse')?.closest('.side-bar-panel, .p-splitter-panel')
          ?? document.querySelector('.comfyui-workflows-panel');
        const right = sidebar ? sidebar.getBoundingClientRect().right : 0;
        const ds = window.app.canvas.ds;
        const left = Math.min(...window.app.graph.groups.map((g) => g._bounding[0]));
        ds.offset[0] = (right + 24) / ds.scale - left;
        ds.offset[1] = 72 / ds.scale;
        window.app.canvas.setDirty(true, true);
        return true;
      })()"""
    )
    await asyncio.sleep(0.5)
