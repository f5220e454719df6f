"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for the login-page tests.

No npm package is needed: Chromium's ``--remote-debugging-port`` serves CDP over a websocket, which
aiohttp speaks. :func:`chromium_or_skip_reason` finds Debian's ``chromium`` (or ``$ZR4_CHROMIUM``).

Used as ``async with Browser(profile_dir) as browser: page = await browser.new_page()``; a page
navigates, evaluates JavaScript (awaiting promises) and waits for a condition to hold. Events the
browser sends (``Network.responseReceived``, ``Log.entryAdded``, ...) are kept per page
(:meth:`Page.events`) once their domain is enabled with :meth:`Page.send`. ``extra_args`` adds
command-line switches, e.g. ``--host-resolver-rules=MAP *.proxy.test 127.0.0.1`` to give local
servers the host names of separate sites.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("ZR4_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip_reason() -> tuple[str | None, str]:
    found = find_chromium()
    if found is None:
        return None, "needs headless Chromium: apt-get install chromium (or set ZR4_CHROMIUM to its binary)"
    return found, ""


class CDPError(RuntimeError):
    pass


class Page:
    """One tab, attached through the browser's websocket (flat sessions)."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session_id=self.session_id, **params)

    def events(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every ``method`` event this page has sent so far, oldest first."""
        return [
            event.get("params", {})
            for event in self.browser.events
            if event.get("method") == method and event.get("sessionId") == self.session_id
        ]

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript error in {expression[:80]!r}: {text}")
        return answer.get("result", {}).get("value")

    async def goto(self, url: str) -> None:
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CDPError(f"navigating to {url}: {answer['errorText']}")
        await self.wait_for("document.readyState === 'complete'", f"{url} to load")

    async def set_viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def click(self, selector: str, timeout_s: float = 30.0) -> None:
        """A real left click (mouse pressed and released) at the centre of the first match."""
        centre = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
            "const r = e.getBoundingClientRect(); "
            "return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()",
            f"{selector} to be shown",
            timeout_s,
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=centre[0], y=centre[1], button="left", clickCount=1
            )

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def wait_for(self, condition: str, what: str, timeout_s: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy (navigations in between are tolerated)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(CDPError):
                last = await self.evaluate(condition)
                if last:
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last value {last!r})")


class Browser:
    def __init__(self, profile_dir: Path, binary: str | None = None, extra_args: Sequence[str] = ()) -> None:
        self.profile_dir = profile_dir
        self.binary = binary or find_chromium() or "chromium"
        self.extra_args = list(extra_args)
        self.events: list[dict[str, Any]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--headless=new",
                "--no-sandbox",  # tests may run as root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile_dir}",
                *self.extra_args,
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.profile_dir / "chromium.log").open("wb"),
        )
        deadline = time.monotonic() + 30
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.profile_dir / "chromium.log").read_text(errors="replace")[-2000:]
                raise CDPError(f"Chromium did not open its DevTools port: {log}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._http = aiohttp.ClientSession()
        self._socket = await self._http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "method" in data:
                self.events.append(data)
                continue
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, session_id: str | None = None, **params: Any) -> dict[str, Any]:
        assert self._socket is not None
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._socket.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout=60)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        return dict(answer.get("result", {}))

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    async def cookies(self) -> list[dict[str, Any]]:
        return list((await self.send("Storage.getCookies")).get("cookies", []))

    async def __aexit__(self, *_exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()
        if self._http is not None:
            await self._http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
