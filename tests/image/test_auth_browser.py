"""A real browser (headless Chromium over CDP) logs in through the auth proxy to the stand-in ComfyUI.

The stand-in's page does what ComfyUI's frontend does at the seam that matters here: it opens
``/ws`` from the page and queues a prompt with ``fetch('/prompt')``, both carried by the session
cookie the login page set. The same flow against the real ComfyUI frontend is in
tests/conformance/test_auth_live.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from support.auth_stack import TOKEN, ComfyBehindProxy
from support.browser import Browser, Page, chromium_or_skip_reason

CHROMIUM, SKIP_REASON = chromium_or_skip_reason()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)


async def log_in(page: Page, base_url: str, token: str) -> None:
    """Fill the login page's one field and submit it, as a user would."""
    await page.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)}; "
        "document.getElementById('login').click(); true"
    )


async def browse(stack: ComfyBehindProxy, profile: Path) -> dict[str, object]:
    seen: dict[str, object] = {}
    async with Browser(profile, CHROMIUM) as browser:
        page = await browser.new_page()
        await page.goto(stack.url + "/?workflow=a&b=%2Fc")
        seen["redirected_to"] = await page.evaluate("location.pathname + location.search")
        seen["login_field"] = await page.evaluate("document.getElementById('token').type")

        await log_in(page, stack.url, "not-the-token-0123456789")
        await page.wait_for(
            "document.getElementById('message').textContent.length > 0", "the wrong-token message"
        )
        seen["wrong_message"] = await page.evaluate("document.getElementById('message').textContent")
        seen["cookies_after_wrong"] = await browser.cookies()

        await log_in(page, stack.url, TOKEN)
        await page.wait_for("location.pathname === '/' && document.title === 'ComfyUI'", "ComfyUI's page")
        seen["returned_to"] = await page.evaluate("location.pathname + location.search")
        await page.wait_for("document.getElementById('ws').textContent === 'open'", "the websocket to open")
        seen["cookies"] = await browser.cookies()
        seen["script_sees_cookie"] = await page.evaluate("document.cookie")

        await page.evaluate("document.getElementById('queue').click(); true")
        await page.wait_for(
            "document.getElementById('log').textContent.includes('execution_success')", "the prompt to finish"
        )
        seen["log"] = await page.evaluate("document.getElementById('log').textContent")

        # A fresh tab of the same browser is logged in; a logout ends it.
        other = await browser.new_page()
        await other.goto(stack.url + "/")
        seen["second_tab"] = await other.evaluate("location.pathname")
        await other.goto(stack.url + "/zr4/logout")
        await other.goto(stack.url + "/")
        seen["after_logout"] = await other.evaluate("location.pathname")
    return seen


def test_browser_logs_in_then_comfyui_loads_and_a_prompt_runs(tmp_path: Path) -> None:
    with ComfyBehindProxy(tmp_path / "stack") as stack:
        seen = asyncio.run(browse(stack, tmp_path / "chromium"))
        proxy_log = stack.proxy_output()

    assert seen["redirected_to"] == "/zr4/login?next=/?workflow%3Da%26b%3D%252Fc"
    assert seen["returned_to"] == "/?workflow=a&b=%2Fc"  # back where the browser was going
    assert seen["login_field"] == "password"
    assert seen["wrong_message"] == "Wrong token."
    assert seen["cookies_after_wrong"] == []
    cookies = seen["cookies"]
    assert isinstance(cookies, list) and [c["name"] for c in cookies] == ["zr4_session"]
    cookie = cookies[0]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert cookie["secure"] is False  # plain http here; behind https the proxy adds Secure
    assert TOKEN not in cookie["value"]
    assert seen["script_sees_cookie"] == ""  # HttpOnly: page scripts cannot read the session
    log = str(seen["log"])
    assert "queued 200" in log
    assert "progress 1/3" in log and "progress 3/3" in log and "execution_success" in log
    assert seen["second_tab"] == "/"
    assert seen["after_logout"] == "/zr4/login"
    assert TOKEN not in proxy_log and "login failed from 127.0.0.1" in proxy_log
