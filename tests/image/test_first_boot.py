"""The first boot as a user meets it: the status page from the first seconds, the models arriving
while ComfyUI starts, a failure with its fix, and a stop in the middle of the download.

`python -m zr4.image.start` runs as the container runs it, with the stand-in ComfyUI
(tests/support/fake_comfyui.py), the real auth proxy, and the local Hub (tests/support/hub_server.py)
serving the models slowly (a per-connection rate), so the download lasts long enough to be seen.
The browser tests drive headless Chromium (tests/support/browser.py).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from image.test_auth_browser import log_in
from image.test_start_sequence import Pod, stop, wait_for
from support.auth_stack import TOKEN
from support.browser import Browser, chromium_or_skip_reason
from support.hub_server import FakeHub

CHROMIUM, SKIP_REASON = chromium_or_skip_reason()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# The 8 files of the pod's boot (2.7 MB) at this rate per connection, 3 files at a time: ~20 s.
SLOW = 45_000
PRIVATE_REPO = "Kijai/WanVideo_comfy"  # the VAE's, the text encoder's and the LoRA's


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def get(pod: Pod, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", pod.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def status_json(pod: Pod) -> dict[str, Any] | None:
    """The boot's status through the proxy, as `zr4 dance` reads it; None until it answers so."""
    try:
        status, headers, body = get(pod, "/zr4/status.json", BEARER)
    except OSError:
        return None
    if status != 200 or not headers.get("content-type", "").startswith("application/json"):
        return None
    document = json.loads(body)
    return document if isinstance(document, dict) else None


def health_json(pod: Pod) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "zr4.image.health", "--json"],
        env={**pod.env, "ZR4_AUTH_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def total_bytes(hub: FakeHub, pod: Pod) -> int:
    return sum(item["size"] for item in (status_json(pod) or {}).get("models", {}).get("files", []))


def test_the_status_page_answers_within_5_s_while_a_slow_hub_serves_the_models(
    tmp_path: Path, hub: FakeHub
) -> None:
    pod = Pod(tmp_path, hub)
    hub.rate_bytes_per_s = SLOW
    began = time.monotonic()
    process = pod.start(ZR4_AUTH_TOKEN=TOKEN)
    try:
        first = wait_for(lambda: status_json(pod), 30, "the proxy to answer /zr4/status.json")
        answered_s = time.monotonic() - began
        served_then = hub.total_served
        assert isinstance(first, dict)
        assert first["models"]["state"] in ("planning", "downloading"), first

        # Without the token: the login page and nothing of the boot.
        code, headers, _ = get(pod, "/", {"Accept": "text/html"})
        assert code == 302 and headers["location"].startswith("/zr4/login"), (code, headers)
        code, _, body = get(pod, "/zr4/status.json")
        assert code == 401 and b"models" not in body and b"diffusion_models" not in body

        # ComfyUI answers while the models still arrive; `zr4 health --json` shows the download.
        ready = wait_for(
            lambda: (s := status_json(pod)) and s["view"]["comfyui_ready"] and s, 30, "ComfyUI to answer"
        )
        assert isinstance(ready, dict) and ready["models"]["state"] == "downloading", ready["models"]
        code, health = health_json(pod)
        models = next(check for check in health["checks"] if check["name"] == "models")
        assert code == 0 and models["ok"] and models["detail"].startswith("downloading: "), health
        files = health["boot"]["models"]["files"]
        assert len(files) == 8 and all(
            isinstance(f["size"], int) and 0 <= f["done"] <= f["size"] for f in files
        )
        assert any(f["state"] != "done" for f in files)

        done = wait_for(
            lambda: (s := status_json(pod)) and s["models"]["state"] == "complete" and s, 120, "the models"
        )
        assert isinstance(done, dict) and done["phase"] == "ready" and done["view"]["page_ready"]
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    # The proxy answered long before the Hub had sent the models (the old order: after all of them).
    assert served_then < total_bytes(hub, pod) or served_then < hub.total_served, output
    assert answered_s < 5.0, f"the status page answered {answered_s:.1f} s after the start began\n{output}"
    timings = done["timings"]
    assert timings["proxy_answering_s"] < timings["comfyui_ready_s"] < timings["models_complete_s"], timings
    assert re.search(r"the status page on port \d+ answers, [\d.]+ s after the process started", output)


async def watch_the_boot(url: str, profile: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with Browser(profile, CHROMIUM) as browser:
        page = await browser.new_page()
        await page.send("Network.enable")
        await page.send("Log.enable")
        await page.goto(url + "/")
        seen["login"] = await page.evaluate("location.pathname")
        await log_in(page, url, TOKEN)
        await page.wait_for("document.title === 'zr4 · the pod is starting'", "the status page")
        seen["first"] = await page.evaluate(
            "({path: location.pathname, headline: document.getElementById('headline').textContent})"
        )
        await page.evaluate("window.__still_this_page = true")
        # Bytes move, with a rate and a time left, while the page stays (its script polls the JSON).
        progress = await page.wait_for(
            "(() => { const s = document.getElementById('summary').textContent;"
            " return s.includes('/s') && s.includes('left') && s; })()",
            "a rate and a time left",
            60,
        )
        seen["summary"] = progress
        seen["rows"] = await page.evaluate(
            "[...document.querySelectorAll('#files tr')].map(r => r.textContent)"
        )
        seen["polled_in_place"] = await page.evaluate("window.__still_this_page === true")
        await page.wait_for("document.title === 'ComfyUI'", "the page to turn into ComfyUI", 120)
        seen["after"] = await page.evaluate(
            "location.pathname + ' ' + (window.__still_this_page === undefined)"
        )
        await page.wait_for("document.getElementById('ws').textContent === 'open'", "ComfyUI's websocket")
        seen["polls"] = [
            event["response"]["status"]
            for event in page.events("Network.responseReceived")
            if event["response"]["url"].endswith("/zr4/status.json")
        ]
        seen["console"] = [event["entry"]["text"] for event in page.events("Log.entryAdded")]
    return seen


@needs_chromium
def test_a_browser_follows_the_download_then_the_page_turns_into_comfyui(
    tmp_path: Path, hub: FakeHub
) -> None:
    pod = Pod(tmp_path, hub)
    hub.rate_bytes_per_s = SLOW
    process = pod.start(ZR4_AUTH_TOKEN=TOKEN)
    try:
        wait_for(lambda: status_json(pod), 30, "the status page")
        seen = asyncio.run(watch_the_boot(f"http://127.0.0.1:{pod.port}", tmp_path / "chromium"))
    finally:
        output = stop(process)
    assert seen["login"] == "/zr4/login", seen
    assert seen["first"]["path"] == "/", seen  # the status page in place of ComfyUI's, at its address
    assert "Downloading the models" in seen["first"]["headline"] or "Looking up" in seen["first"]["headline"]
    assert re.search(r"[\d.]+ [KM]B of [\d.]+ MB \(\d+ %\), [\d.]+ [KM]B/s, \d+s left", seen["summary"]), seen
    rows = seen["rows"]
    assert len(rows) == 8 and any("diffusion_models/" in row for row in rows), rows
    assert any(re.search(r"of [\d.]+ KB \(\d+ %\), (downloading|waiting)", row) for row in rows), rows
    assert seen["polled_in_place"] is True
    assert seen["polls"] and set(seen["polls"]) == {200}, seen["polls"]
    assert seen["after"] == "/ true", seen  # reloaded into ComfyUI's own page
    assert not [line for line in seen["console"] if "Content Security Policy" in line], seen["console"]
    assert process.returncode == 0, output


async def see_the_failure(url: str, profile: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with Browser(profile, CHROMIUM) as browser:
        page = await browser.new_page()
        await page.goto(url + "/")
        await log_in(page, url, TOKEN)
        await page.wait_for("document.title === 'zr4 · the pod is starting'", "the status page")
        await page.wait_for(
            "!document.getElementById('failure').hidden && !document.getElementById('open').hidden",
            "the failure and the way to ComfyUI",
            60,
        )
        seen["error"] = await page.evaluate("document.getElementById('error').textContent")
        seen["fix"] = await page.evaluate("document.getElementById('fix').textContent")
        await page.evaluate("document.querySelector('#open a').scrollIntoView(); true")
        await page.click("#open a")
        await page.wait_for("document.title === 'ComfyUI'", "ComfyUI's page")
        seen["opened"] = await page.evaluate("location.pathname + location.search")
    return seen


@needs_chromium
def test_a_401_from_the_hub_says_set_hf_token_and_comfyui_starts_anyway(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    hub.add_repo(PRIVATE_REPO, token="hf_private_0123456789")
    process = pod.start(ZR4_AUTH_TOKEN=TOKEN)
    try:
        wait_for(lambda: (s := status_json(pod)) and s["view"]["comfyui_ready"], 60, "ComfyUI to answer")
        seen = asyncio.run(see_the_failure(f"http://127.0.0.1:{pod.port}", tmp_path / "chromium"))
        code, health = health_json(pod)
    finally:
        output = stop(process)
    assert "HTTP 401" in seen["error"] and PRIVATE_REPO in seen["error"], seen
    assert seen["fix"].startswith("set HF_TOKEN to a Hugging Face token"), seen
    assert seen["opened"] == "/?zr4=comfyui", seen
    models = next(check for check in health["checks"] if check["name"] == "models")
    assert code == 1 and not models["ok"] and "fix: set HF_TOKEN" in models["detail"], health
    assert health["boot"]["models"]["state"] == "failed"
    assert "ERROR: models: fix: set HF_TOKEN" in output and "hf_private" not in output
    assert process.returncode == 0, output  # ComfyUI ran and was stopped: the failure did not end the boot


def partials(models: Path) -> list[Path]:
    return sorted(models.rglob("*.partial"))


def test_a_stop_during_the_download_ends_the_boot_promptly_and_the_next_boot_resumes(
    tmp_path: Path, hub: FakeHub
) -> None:
    pod = Pod(tmp_path, hub)
    hub.rate_bytes_per_s = 20_000
    process = pod.start(ZR4_AUTH_TOKEN=TOKEN)
    wait_for(
        lambda: (s := status_json(pod)) and s["view"]["comfyui_ready"] and s["models"]["done_bytes"] > 0,
        60,
        "ComfyUI up and bytes arriving",
    )
    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    stop_s = time.monotonic() - stopped
    assert process.returncode == 0, output
    assert stop_s < 15, f"the stop took {stop_s:.1f} s\n{output}"
    assert (pod.state / "sigterm").read_text() == str(int(signal.SIGTERM)), output
    kept = partials(pod.models)
    assert kept, "the files in flight stay resumable"

    hub.rate_bytes_per_s = None
    served_before = hub.total_served
    second = pod.start(ZR4_AUTH_TOKEN=TOKEN)
    try:
        done = wait_for(
            lambda: (s := status_json(pod)) and s["models"]["state"] == "complete" and s, 60, "the models"
        )
    finally:
        output = stop(second)
    assert isinstance(done, dict) and partials(pod.models) == []
    total = sum(item["size"] for item in done["models"]["files"])
    assert hub.total_served - served_before < total, "the second boot fetched only what was missing"
