"""zr4's auth proxy in front of the real ComfyUI v0.7.0 and its real frontend, driven by Chromium.

A browser is sent to the login page, logs in, and ComfyUI's own frontend loads through the proxy
(its assets, its ``/api`` calls, its websocket); the frontend then queues a workflow with its own
``app.queuePrompt`` and the execution messages arrive over its websocket through the proxy; the
saved image downloads through ``/view``. Without a token, ComfyUI's real routes and websocket are
refused; with the bearer token, API calls work.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.auth_stack import TOKEN, AuthProxy
from support.browser import Browser, chromium_or_skip_reason
from support.real_comfyui import ComfyUIServer

pytestmark = pytest.mark.slow

# Runs on the CPU in well under a second: no model is needed.
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF0000}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "zr4auth"}},
}
EVENTS = ("execution_start", "executing", "progress_state", "executed", "execution_success", "execution_error")


@pytest.fixture(scope="module")
def proxy(comfyui: ComfyUIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProxy]:
    with AuthProxy(tmp_path_factory.mktemp("auth-proxy"), comfyui.port) as running:
        yield running


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_real_routes_and_websocket_need_the_token(proxy: AuthProxy, comfyui: ComfyUIServer) -> None:
    for path in ("/", "/object_info", "/system_stats", "/queue", "/history", "/api/userdata?dir=workflows",
                 "/extensions", "/view?filename=x.png", "/api/settings"):
        assert status_of(proxy.url + path) == 401, path
        assert status_of(comfyui.url + path) != 401, path  # the refusal is the proxy's, not ComfyUI's
    assert status_of(proxy.url + "/object_info", {"Authorization": f"Bearer {TOKEN}"}) == 200

    async def websocket(headers: dict[str, str]) -> Any:
        async with aiohttp.ClientSession() as client:
            try:
                socket = await client.ws_connect(proxy.url + "/ws?clientId=conformance", headers=headers)
            except aiohttp.WSServerHandshakeError as error:
                return error.status
            first = json.loads((await socket.receive(timeout=30)).data)
            await socket.close()
            return first["type"]

    assert asyncio.run(websocket({})) == 401
    assert asyncio.run(websocket({"Authorization": f"Bearer {TOKEN}"})) == "status"
    assert TOKEN not in proxy.output()


def test_browser_logs_in_and_the_real_frontend_queues_a_workflow(proxy: AuthProxy, tmp_path: Path) -> None:
    binary, reason = chromium_or_skip_reason()
    if binary is None:
        pytest.skip(reason)

    async def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Browser(tmp_path / "chromium", binary) as browser:
            page = await browser.new_page()
            await page.goto(proxy.url + "/")
            seen["login"] = await page.evaluate("location.pathname")
            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
                "document.getElementById('login').click(); true"
            )
            await page.wait_for(
                "!!document.querySelector('#graph-canvas') && !!window.app && !!window.app.api",
                "ComfyUI's frontend to load",
                timeout_s=180,
            )
            await page.wait_for("window.app.api.socket && window.app.api.socket.readyState === 1", "its websocket")
            await page.evaluate(
                "window.__zr4 = []; for (const name of " + json.dumps(list(EVENTS)) + ") "
                "window.app.api.addEventListener(name, (e) => window.__zr4.push([name, e.detail])); true"
            )
            await page.evaluate(
                f"(async () => {{ await window.app.loadApiJson({json.dumps(WORKFLOW)}, 'zr4-auth.json'); "
                "await window.app.queuePrompt(0); return true; })()"
            )
            await page.wait_for(
                "window.__zr4.some(([name]) => name === 'execution_success' || name === 'execution_error')",
                "the workflow to finish",
                timeout_s=120,
            )
            seen["events"] = await page.evaluate("JSON.stringify(window.__zr4)")
            executed = [e for e in json.loads(seen["events"]) if e[0] == "executed"]
            image = executed[0][1]["output"]["images"][0] if executed else {"filename": "missing"}
            seen["view"] = await page.evaluate(
                f"(async () => {{ const r = await fetch('/view?filename={image['filename']}&type=output'); "
                "const b = new Uint8Array(await r.arrayBuffer()); return [r.status, Array.from(b.slice(0, 8))]; })()"
            )
            seen["cookies"] = await browser.cookies()
        return seen

    seen = asyncio.run(session())
    assert seen["login"] == "/zr4/login"
    events = json.loads(seen["events"])
    names = [name for name, _detail in events]
    assert "execution_error" not in names, events
    assert names.index("execution_start") < names.index("execution_success")
    assert any(name == "progress_state" and detail["nodes"] for name, detail in events)
    status, magic = seen["view"]
    assert status == 200 and bytes(magic) == b"\x89PNG\r\n\x1a\n"
    assert [c["name"] for c in seen["cookies"]] == ["zr4_session"] and seen["cookies"][0]["httpOnly"]
    assert TOKEN not in proxy.output()
