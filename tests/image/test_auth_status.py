"""The boot's status page, served by the auth proxy itself: behind the same login, read by a cookie
only from the proxy's own pages, in place of ComfyUI's pages until ComfyUI and the models are ready.

The real proxy process in front of a backend that records what reaches it
(tests/support/recording_backend.py); the status file written by the boot's own writer
(zr4.image.boot_report), as `zr4 start` writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from image.test_auth_attacks import call, log_in, session_cookie
from support.auth_stack import TOKEN, AuthProxy
from support.recording_backend import RecordingBackend
from zr4.image.boot_report import BootReport, FileProgress

BEARER = {"Authorization": f"Bearer {TOKEN}"}
PAGE = {"Accept": "text/html,application/xhtml+xml"}
FILES = [("vae/Wan2_1_VAE_bf16.safetensors", 254_000), ("diffusion_models/<model>.gguf", 10_900_000)]


@pytest.fixture
def comfy() -> Iterator[RecordingBackend]:
    with RecordingBackend("comfyui") as backend:
        yield backend


@pytest.fixture
def boot(tmp_path: Path) -> BootReport:
    report = BootReport(tmp_path / "boot" / "status.json", process_started=time.time())
    report.write()
    return report


@pytest.fixture
def proxy(comfy: RecordingBackend, boot: BootReport, tmp_path: Path) -> Iterator[AuthProxy]:
    with AuthProxy(tmp_path / "proxy", comfy.port, extra_env={"ZR4_BOOT_STATUS": str(boot.path)}) as running:
        boot.set_ports([running.public_port])
        boot.models_planned("/workspace/models", "gguf", [FileProgress(rel, size) for rel, size in FILES])
        boot.file_started(FILES[0][0], FILES[0][1], 0)
        boot.file_bytes(FILES[0][0], 100_000)
        boot.write()
        yield running


def cookie_of(proxy: AuthProxy) -> dict[str, str]:
    return {"Cookie": session_cookie(log_in(proxy))}


def targets(comfy: RecordingBackend) -> list[str]:
    return [seen.target for seen in comfy.requests()]


def test_without_a_login_there_is_the_login_page_and_nothing_of_the_boot(
    proxy: AuthProxy, comfy: RecordingBackend
) -> None:
    for path in ("/", "/zr4/status"):
        status, headers, body = call(proxy, "GET", path, PAGE)
        assert status == 302 and headers["location"].startswith("/zr4/login?next="), (path, status)
        assert b"vae/" not in body
    status, headers, body = call(proxy, "GET", "/zr4/status.json")
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="zr4"'
    assert b"vae" not in body and b"models" not in body
    status, _, body = call(
        proxy, "GET", "/zr4/status.json", {"Authorization": "Bearer wrong-token-0123456789"}
    )
    assert status == 401 and b"vae" not in body
    assert targets(comfy) == []


def test_a_page_shows_the_status_until_comfyui_and_the_models_are_ready(
    proxy: AuthProxy, comfy: RecordingBackend, boot: BootReport
) -> None:
    cookie = cookie_of(proxy)
    # ComfyUI not answering yet: every page of ComfyUI's gets the status page, at its own address.
    status, headers, body = call(proxy, "GET", "/?workflow=a", {**cookie, **PAGE})
    page = body.decode()
    assert status == 503 and headers["retry-after"] == "5", status
    assert "Downloading the models" in page and "vae/Wan2_1_VAE_bf16.safetensors" in page
    assert "100.0 KB of 254.0 KB (39 %), downloading" in page
    assert (
        headers["cache-control"] == "no-store" and "script-src 'sha256-" in headers["content-security-policy"]
    )
    assert 'id="open" hidden' in page
    # What is not a page passes on as before (the API, ComfyUI's assets).
    assert call(proxy, "GET", "/system_stats", cookie)[0] == 200
    assert targets(comfy) == ["/system_stats"]

    boot.comfyui_answers(proxy.public_port)
    boot.write()
    status, _, body = call(proxy, "GET", "/?workflow=a", {**cookie, **PAGE})
    page = body.decode()
    assert (
        status == 200
        and "ComfyUI is ready" in page
        and 'id="open"><a href="/?workflow=a&amp;zr4=comfyui"' in page
    )
    assert call(proxy, "GET", "/?workflow=a&zr4=comfyui", {**cookie, **PAGE})[0] == 200
    assert targets(comfy)[-1] == "/?workflow=a&zr4=comfyui"  # "Open ComfyUI now" reaches ComfyUI

    boot.models_complete()
    boot.write()
    status, _, body = call(proxy, "GET", "/", {**cookie, **PAGE})
    assert status == 200 and b'"served_by": "comfyui"' in body  # the page is ComfyUI's now
    # /zr4/status still shows the boot, and the JSON says the page may give way.
    status, _, body = call(proxy, "GET", "/zr4/status", {**cookie, **PAGE})
    assert status == 200 and b"all 2 files in place" in body
    view = json.loads(call(proxy, "GET", "/zr4/status.json", BEARER)[2])["view"]
    assert view == {**view, "public_port": proxy.public_port, "comfyui_ready": True, "page_ready": True}


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "none"}, True),  # typed into the address bar
        ({}, True),
        ({"Sec-Fetch-Site": "same-site"}, False),  # another pod of proxy.runpod.net
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": "http://pod-b.proxy.test"}, False),
    ],
)
def test_a_cookie_reads_the_status_only_from_the_proxys_own_pages(
    proxy: AuthProxy, headers: dict[str, str], allowed: bool
) -> None:
    cookie = cookie_of(proxy)
    status, answer, body = call(proxy, "GET", "/zr4/status.json", {**cookie, **headers})
    if allowed:
        assert status == 200 and json.loads(body)["models"]["files"][0]["done"] == 100_000
        assert answer["cross-origin-resource-policy"] == "same-origin"
        assert answer["x-content-type-options"] == "nosniff" and answer["cache-control"] == "no-store"
    else:
        assert status == 403 and b"vae" not in body, (status, body)
    # A bearer token is no browser's: the same headers do not matter to it.
    assert call(proxy, "GET", "/zr4/status.json", {**BEARER, **headers})[0] == 200


def test_the_status_is_read_only(proxy: AuthProxy, comfy: RecordingBackend) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert call(proxy, method, "/zr4/status.json", BEARER, b"{}")[0] == 405
    assert targets(comfy) == []


def test_without_a_boot_status_the_proxy_passes_pages_on(comfy: RecordingBackend, tmp_path: Path) -> None:
    with AuthProxy(tmp_path / "proxy", comfy.port) as plain:
        cookie = cookie_of(plain)
        status, _, body = call(plain, "GET", "/", {**cookie, **PAGE})
        assert status == 200 and b'"served_by": "comfyui"' in body
        assert call(plain, "GET", "/zr4/status.json", BEARER)[2] == b"null"
