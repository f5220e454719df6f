"""A real browser (headless Chromium over CDP) logs in through the auth proxy to the stand-in ComfyUI.

The stand-in's page does what ComfyUI's frontend does at the seam that matters here: it opens
``/ws`` from the page and queues a prompt with ``fetch('/prompt')``, both carried by the session
cookie the login page set. The same flow against the real ComfyUI frontend is in
tests/conformance/test_auth_live.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from support.auth_stack import TOKEN, ComfyBehindProxy
from support.browser import Browser, Page, chromium_or_skip_reason
from support.recording_backend import RecordingBackend

CHROMIUM, SKIP_REASON = chromium_or_skip_reason()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)


async def log_in(page: Page, base_url: str, token: str) -> None:
    """Fill the login page's one field and submit it, as a user would."""
    await page.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)}; "
        "document.getElementById('login').click(); true"
    )


async def wait_for_response(page: Page, part: str, timeout_s: float = 15) -> int:
    """The status of the first response whose URL holds ``part`` (Network events must be on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in page.events("Network.responseReceived"):
            if part in event["response"]["url"]:
                return int(event["response"]["status"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no response for {part} within {timeout_s} s")


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

        await page.send("Network.enable")
        await page.send("Log.enable")
        await log_in(page, stack.url, TOKEN)
        await page.wait_for("location.pathname === '/' && document.title === 'ComfyUI'", "ComfyUI's page")
        seen["returned_to"] = await page.evaluate("location.pathname + location.search")
        await page.wait_for("document.getElementById('ws').textContent === 'open'", "the websocket to open")
        # The page links its web-app manifest, which the browser fetches without cookies.
        seen["manifest"] = await wait_for_response(page, "/assets/manifest-")
        seen["console"] = [event["entry"]["text"] for event in page.events("Log.entryAdded")]
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
    assert seen["manifest"] == 200
    assert not [line for line in seen["console"] if "401" in line], seen["console"]  # type: ignore[union-attr]
    assert seen["second_tab"] == "/"
    assert seen["after_logout"] == "/zr4/login"
    assert TOKEN not in proxy_log and "login failed from 127.0.0.1" in proxy_log


# Two pods of one provider: separate origins of the same site (proxy.test, like proxy.runpod.net,
# which is not on the Public Suffix List), so the browser sends a SameSite=Lax cookie of one on
# requests from a page of the other.
POD = "pod-a.proxy.test"
ELSEWHERE = "pod-b.proxy.test"
SAME_SITE_HOSTS = f"--host-resolver-rules=MAP {POD} 127.0.0.1, MAP {ELSEWHERE} 127.0.0.1"
ATTACKER_MARK = "served by the attacker"


STAND_IN_PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def attack_page(pod_url: str, attacker_port: int, workflow: dict[str, object] = STAND_IN_PROMPT) -> str:
    """A page on another pod: queue ``workflow`` (fetch and a form), guess tokens, open the websocket."""
    prompt = json.dumps({"prompt": workflow, "client_id": "zr4-attack"})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>elsewhere</title></head><body>
<form id="form" method="post" action="{pod_url}/prompt?attack=form" enctype="text/plain" target="sink">
<input type="hidden" name='{prompt[:-1]}, "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<a id="link" href="{pod_url}//127.0.0.1:{attacker_port}/page.html">a link</a>
<script>
const pod = {json.dumps(pod_url)};
const result = window.__attack = {{ws: "connecting", messages: []}};
(async () => {{
  await fetch(pod + "/prompt?attack=fetch", {{method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(prompt)}}}).catch((e) => {{}});
  for (let i = 0; i < 8; i++) {{
    await fetch(pod + "/zr4/login", {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "application/x-www-form-urlencoded"}},
      body: "next=/&token=wrong-token-" + i + "-0123456789"}}).catch((e) => {{}});
  }}
  result.posted = true;
  document.getElementById("form").submit();
  const socket = new WebSocket(pod.replace("http:", "ws:") + "/ws?clientId=attack");
  socket.onopen = () => {{ result.ws = "open"; }};
  socket.onmessage = (event) => {{ result.messages.push(event.data); }};
  socket.onclose = () => {{ if (result.ws !== "open") result.ws = "refused"; }};
}})();
</script></body></html>"""


async def attack(stack: ComfyBehindProxy, attacker: RecordingBackend, profile: Path) -> dict[str, object]:
    pod_url = f"http://{POD}:{stack.public_port}"
    seen: dict[str, object] = {}
    async with Browser(profile, CHROMIUM, [SAME_SITE_HOSTS]) as browser:
        page = await browser.new_page()
        await page.goto(pod_url + "/")
        await log_in(page, pod_url, TOKEN)
        await page.wait_for("document.getElementById('ws').textContent === 'open'", "the owner's websocket")
        await page.evaluate("document.getElementById('queue').click(); true")
        await page.wait_for(
            "document.getElementById('log').textContent.includes('queued')", "the owner's prompt"
        )
        seen["owner_queued"] = await page.evaluate("document.getElementById('log').textContent")

        await page.goto(f"http://{ELSEWHERE}:{attacker.port}/attack.html")
        await page.wait_for("window.__attack.posted && window.__attack.ws !== 'connecting'", "the attack")
        await asyncio.sleep(1)  # the form's post lands in its frame; a websocket message would arrive
        seen["attack"] = await page.evaluate("window.__attack")
        await page.evaluate("document.getElementById('link').click(); true")
        await page.wait_for(f"location.host === '{POD}:{stack.public_port}'", "the //host link to open")
        await page.wait_for("document.readyState === 'complete'", "the linked page")
        seen["link_page"] = await page.evaluate("document.documentElement.outerHTML")
        await page.goto(f"{pod_url}/zr4/login?next=/.//127.0.0.1:{attacker.port}/page.html")
        seen["after_login_redirect"] = await page.evaluate("location.href + ' ' + document.title")

        # The wrong tokens posted from elsewhere locked nobody out: the owner logs in again.
        await page.goto(pod_url + "/zr4/logout")
        await page.goto(pod_url + "/")
        await log_in(page, pod_url, TOKEN)
        await page.wait_for(
            "document.title === 'ComfyUI' || document.getElementById('message')?.textContent",
            "the second login",
        )
        seen["second_login"] = await page.evaluate("location.pathname + ' ' + document.title")
    return seen


def test_a_page_on_another_origin_cannot_use_the_owners_session(tmp_path: Path) -> None:
    with ComfyBehindProxy(tmp_path / "stack") as stack, RecordingBackend("attacker") as attacker:
        attacker.pages["/attack.html"] = attack_page(f"http://{POD}:{stack.public_port}", attacker.port)
        attacker.pages["/page.html"] = f"<!doctype html><title>{ATTACKER_MARK}</title><p>{ATTACKER_MARK}</p>"
        seen = asyncio.run(attack(stack, attacker, tmp_path / "chromium"))
        reached = [request["target"] for request in stack.comfyui_requests()]
        # The browser asks for pod-b.proxy.test; a request for 127.0.0.1 came through the proxy.
        fetched_by_proxy = [
            s.target for s in attacker.requests() if ELSEWHERE not in s.headers.get("host", "")
        ]

    assert "queued 200" in str(seen["owner_queued"])  # the owner's own page works on that host
    assert not [target for target in reached if "attack" in target], reached  # nothing queued from elsewhere
    result = seen["attack"]
    assert isinstance(result, dict) and result["ws"] == "refused" and result["messages"] == [], result
    assert fetched_by_proxy == []  # the //host link made the proxy fetch nothing from that host
    assert ATTACKER_MARK not in str(seen["link_page"])
    assert f"//127.0.0.1:{stack.public_port}" not in str(seen["after_login_redirect"])
    assert ATTACKER_MARK not in str(seen["after_login_redirect"])
    assert seen["second_login"] == "/ ComfyUI", seen
