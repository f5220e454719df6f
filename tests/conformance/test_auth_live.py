"""zr4's auth proxy in front of the real ComfyUI v0.7.0 and its real frontend, driven by Chromium.

A browser is sent to the login page, logs in, and ComfyUI's own frontend loads through the proxy
(its assets, its ``/api`` calls, its websocket); the frontend then queues a workflow with its own
``app.queuePrompt`` and the execution messages arrive over its websocket through the proxy; the
saved image downloads through ``/view``, and the frontend's web-app manifest loads with no 401 in
the console. A page on another pod of the same site can neither queue a workflow nor read ``/ws``
with that session, and a ``//host`` link serves nothing from that host. Without a token,
ComfyUI's real routes and websocket are refused; with the bearer token, API calls work; wrong
tokens lock the guessing client out. Last, `zr4 start` itself runs the real ComfyUI: on loopback
only, with the proxy on the public port.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from image.test_auth_browser import (
    ATTACKER_MARK,
    ELSEWHERE,
    POD,
    SAME_SITE_HOSTS,
    attack_page,
    wait_for_response,
)
from image.test_auth_start import outside_address
from image.test_start_sequence import Pod
from support.auth_stack import TOKEN, AuthProxy
from support.browser import Browser
from support.hub_server import FakeHub
from support.real_comfyui import ComfySources, ComfyUIServer, copy_comfyui, spawn
from support.recording_backend import RecordingBackend
from zr4.core.auth_settings import TOKEN_PREFIX

pytestmark = pytest.mark.slow

# Runs on the CPU in well under a second: no model is needed.
WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF0000},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "zr4auth"}},
}
EVENTS = (
    "execution_start",
    "executing",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
)


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
    for path in (
        "/",
        "/object_info",
        "/system_stats",
        "/queue",
        "/history",
        "/api/userdata?dir=workflows",
        "/extensions",
        "/view?filename=x.png",
        "/api/settings",
    ):
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


def test_browser_logs_in_and_the_real_frontend_queues_a_workflow(
    chromium: str, proxy: AuthProxy, tmp_path: Path
) -> None:

    async def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Browser(tmp_path / "chromium", chromium) as browser:
            page = await browser.new_page()
            await page.goto(proxy.url + "/")
            seen["login"] = await page.evaluate("location.pathname")
            await page.send("Network.enable")
            await page.send("Log.enable")
            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
                "document.getElementById('login').click(); true"
            )
            await page.wait_for(
                "!!document.querySelector('#graph-canvas') && !!window.app && !!window.app.api",
                "ComfyUI's frontend to load",
                timeout_s=180,
            )
            # The frontend's index.html links its web-app manifest, fetched without cookies.
            seen["manifest"] = await wait_for_response(page, "/assets/manifest-")
            await page.wait_for(
                "window.app.api.socket && window.app.api.socket.readyState === 1", "its websocket"
            )
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
            seen["console"] = [event["entry"]["text"] for event in page.events("Log.entryAdded")]
        return seen

    seen = asyncio.run(session())
    assert seen["login"] == "/zr4/login"
    assert seen["manifest"] == 200
    assert not [line for line in seen["console"] if "401" in line], seen["console"]
    events = json.loads(seen["events"])
    names = [name for name, _detail in events]
    assert "execution_error" not in names, events
    assert names.index("execution_start") < names.index("execution_success")
    assert any(name == "progress_state" and detail["nodes"] for name, detail in events)
    status, magic = seen["view"]
    assert status == 200 and bytes(magic) == b"\x89PNG\r\n\x1a\n"
    assert [c["name"] for c in seen["cookies"]] == ["zr4_session"] and seen["cookies"][0]["httpOnly"]
    assert TOKEN not in proxy.output()


def comfyui_holds(comfyui: ComfyUIServer, mark: str) -> bool:
    """Whether ComfyUI's queue or history holds a prompt naming ``mark`` (asked directly, not via the proxy)."""
    texts = []
    for path in ("/queue", "/history"):
        with urllib.request.urlopen(comfyui.url + path, timeout=30) as response:
            texts.append(response.read().decode())
    return any(mark in text for text in texts)


def test_a_page_on_another_origin_cannot_use_the_session_on_the_real_comfyui(
    chromium: str, proxy: AuthProxy, comfyui: ComfyUIServer, tmp_path: Path
) -> None:
    """What tests/runtime/test_auth_browser.py does with the stand-in, against ComfyUI v0.7.0: a page
    on another pod of the same site tries to queue a workflow ComfyUI would run and to read /ws."""
    attack_workflow = json.loads(json.dumps(WORKFLOW).replace("zr4auth", "zr4attack"))
    pod_url = f"http://{POD}:{proxy.public_port}"

    async def session(attacker: RecordingBackend) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Browser(tmp_path / "chromium", chromium, [SAME_SITE_HOSTS]) as browser:
            page = await browser.new_page()
            await page.goto(pod_url + "/")
            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
                "document.getElementById('login').click(); true"
            )
            await page.wait_for("document.title === 'ComfyUI'", "ComfyUI's page", timeout_s=120)
            await page.goto(f"http://{ELSEWHERE}:{attacker.port}/attack.html")
            await page.wait_for(
                "window.__attack.posted && window.__attack.ws !== 'connecting'", "the attack", 60
            )
            await asyncio.sleep(3)  # time for a queued prompt to show in the queue or history
            seen["attack"] = await page.evaluate("window.__attack")
            await page.evaluate("document.getElementById('link').click(); true")
            await page.wait_for(f"location.host === '{POD}:{proxy.public_port}'", "the //host link to open")
            await page.wait_for("document.readyState === 'complete'", "the linked page")
            seen["link_page"] = await page.evaluate("document.documentElement.outerHTML")
            await page.goto(f"{pod_url}/zr4/login?next=/.//127.0.0.1:{attacker.port}/page.html")
            seen["after_login_redirect"] = await page.evaluate("location.href + ' ' + document.title")
        return seen

    with RecordingBackend("attacker") as attacker:
        attacker.pages["/attack.html"] = attack_page(pod_url, attacker.port, attack_workflow)
        attacker.pages["/page.html"] = f"<!doctype html><title>{ATTACKER_MARK}</title><p>{ATTACKER_MARK}</p>"
        seen = asyncio.run(session(attacker))
        fetched_by_proxy = [
            s.target for s in attacker.requests() if ELSEWHERE not in s.headers.get("host", "")
        ]
    assert not comfyui_holds(comfyui, "zr4attack")  # neither the fetch nor the form queued it
    assert seen["attack"]["ws"] == "refused" and seen["attack"]["messages"] == [], seen["attack"]
    assert fetched_by_proxy == []
    assert ATTACKER_MARK not in seen["link_page"] and ATTACKER_MARK not in seen["after_login_redirect"]


def test_guessing_the_token_locks_the_client_out(comfyui: ComfyUIServer, tmp_path: Path) -> None:
    """Against the real ComfyUI: five wrong tokens are free, then even the right one waits (429)."""

    async def attempt(kind: str, token: str, local: str = "127.0.0.1") -> tuple[int, str]:
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=connector) as client:
            if kind == "login":
                request = client.post(
                    guard.url + "/zr4/login", data={"token": token, "next": "/"}, allow_redirects=False
                )
            elif kind == "bearer":
                request = client.get(guard.url + "/object_info", headers={"Authorization": f"Bearer {token}"})
            else:  # the websocket ComfyUI's frontend opens
                try:
                    socket_ = await client.ws_connect(
                        guard.url + "/ws?clientId=guess", headers={"Authorization": f"Bearer {token}"}
                    )
                except aiohttp.WSServerHandshakeError as error:
                    return error.status, error.headers.get("Retry-After", "") if error.headers else ""
                await socket_.close()
                return 101, ""
            async with request as answer:
                return answer.status, answer.headers.get("Retry-After", "")

    guesses = [f"guess-{n:02d}-abcdefghijklmnop" for n in range(6)]
    with AuthProxy(tmp_path / "guarded", comfyui.port) as guard:
        kinds = ["login", "bearer", "websocket", "login", "bearer", "login"]
        statuses = [asyncio.run(attempt(kind, guess))[0] for kind, guess in zip(kinds, guesses, strict=True)]
        locked = {kind: asyncio.run(attempt(kind, TOKEN)) for kind in ("login", "bearer", "websocket")}
        other_client = asyncio.run(attempt("bearer", TOKEN, local="127.0.0.2"))
        log = guard.output()
    assert statuses == [401] * 6  # the sixth wrong token starts the lock-out
    assert {kind: status for kind, (status, _) in locked.items()} == {
        "login": 429,
        "bearer": 429,
        "websocket": 429,
    }
    assert 1 <= int(locked["bearer"][1]) <= 2
    assert other_client[0] == 200  # another address is not slowed by the first one's guessing
    assert "locked out for 2 s" in log and "bearer token failed from 127.0.0.1" in log
    assert TOKEN not in log and not any(guess in log for guess in guesses)


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: TCP_LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four host-order 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def status_or_unreachable(url: str, headers: dict[str, str] | None = None) -> int | str:
    try:
        return status_of(url, headers)
    except OSError as error:
        return f"unreachable: {getattr(error, 'reason', error)}"


def test_zr4_start_puts_the_real_comfyui_on_loopback_behind_the_proxy(
    comfy_sources: ComfySources, tmp_path: Path
) -> None:
    with FakeHub() as hub:
        pod = Pod(tmp_path / "pod", hub)  # folders and environment of a container; no model is fetched
        comfy = copy_comfyui(comfy_sources, tmp_path / "real")
        env = {
            **pod.env,
            "COMFYUI_DIR": str(comfy),
            "COMFYUI_PYTHON": str(comfy_sources.python),
            "SKIP_MODEL_DOWNLOAD": "true",
        }
        server = spawn(
            [sys.executable, "-m", "zr4.image.start"],
            tmp_path,
            pod.backend_port,
            tmp_path / "start.log",
            env=env,
        )
        public = f"http://127.0.0.1:{pod.port}"
        try:
            token = (pod.workspace / ".zr4" / "auth" / "token").read_text().strip()
            bearer = {"Authorization": f"Bearer {token}"}
            seen = {
                "listen_comfyui": listening_addresses(pod.backend_port),
                "listen_proxy": listening_addresses(pod.port),
                "no_token": status_of(public + "/system_stats"),
                "with_token": status_of(public + "/object_info", bearer),
            }
            health = subprocess.run(
                [sys.executable, "-m", "zr4.image.health"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

            async def websocket(headers: dict[str, str]) -> Any:
                async with aiohttp.ClientSession() as client:
                    try:
                        socket_ = await client.ws_connect(public + "/ws?clientId=start", headers=headers)
                    except aiohttp.WSServerHandshakeError as error:
                        return error.status
                    first = json.loads((await socket_.receive(timeout=30)).data)
                    await socket_.close()
                    return first["type"]

            seen["ws_no_token"] = asyncio.run(websocket({}))
            seen["ws_token"] = asyncio.run(websocket(bearer))
            address = outside_address()
            if address is not None:
                seen["outside_proxy"] = status_or_unreachable(f"http://{address}:{pod.port}/system_stats")
                seen["outside_comfyui"] = status_or_unreachable(
                    f"http://{address}:{pod.backend_port}/system_stats"
                )
        finally:
            server.process.send_signal(signal.SIGTERM)  # zr4 start passes it on to ComfyUI, stops the proxy
            try:
                server.process.wait(60)
            except subprocess.TimeoutExpired:
                server.stop()
        log = server.log()
        seen["listen_after_stop"] = listening_addresses(pod.port) | listening_addresses(pod.backend_port)
    assert seen["listen_comfyui"] == {"127.0.0.1"}, seen
    assert seen["listen_proxy"] == {"0.0.0.0"}, seen
    assert (seen["no_token"], seen["with_token"]) == (401, 200)
    assert (seen["ws_no_token"], seen["ws_token"]) == (401, "status")
    assert health.returncode == 0 and "ComfyUI 0.7.0" in health.stdout, health.stdout + health.stderr
    if "outside_proxy" in seen:
        assert seen["outside_proxy"] == 401
        assert str(seen["outside_comfyui"]).startswith("unreachable"), seen
    assert token.startswith(TOKEN_PREFIX) and token not in log and token[len(TOKEN_PREFIX) :] not in log
    assert f"--listen 127.0.0.1 --port {pod.backend_port}" in log
    assert "generated a token and saved it to" in log
    assert seen["listen_after_stop"] == set(), log[-3000:]  # the proxy ended with ComfyUI
