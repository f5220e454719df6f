"""The auth proxy in front of the stand-in ComfyUI, both real processes, spoken to over real sockets.

Without credentials every path (HTTP and the websocket) answers 401 or a redirect to the login
page; the bearer token and the login cookie both work; uploads, downloads and websocket progress
pass through; failed attempts lock a client out while another client is unaffected; no token
reaches the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from support.auth_stack import TOKEN, ComfyBehindProxy

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyBehindProxy]:
    with ComfyBehindProxy(tmp_path_factory.mktemp("auth")) as running:
        yield running


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def session(**options: object) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), **options)  # type: ignore[arg-type]


PATHS = [
    ("GET", "/"),
    ("GET", "/system_stats"),
    ("GET", "/object_info"),
    ("GET", "/view?filename=ComfyUI_00001_.png&type=output"),
    ("POST", "/prompt"),
    ("POST", "/upload/image"),
    ("GET", "/api/userdata?dir=workflows"),
    ("GET", "/zr4/login/../system_stats"),
    ("GET", "/%2e%2e/system_stats"),
    ("DELETE", "/queue"),
]


def test_without_credentials_every_path_is_refused(stack: ComfyBehindProxy) -> None:
    async def probe() -> list[tuple[str, str, int, str]]:
        seen = []
        async with session() as client:
            for method, path in PATHS:
                for headers in ({}, {"Accept": "text/html"}, {"Authorization": "Basic eDp5"}):
                    async with client.request(
                        method, stack.url + path, headers=headers, allow_redirects=False, data=b"{}"
                    ) as answer:
                        seen.append((method, path, answer.status, answer.headers.get("Location", "")))
            # A forged or stale cookie is no session.
            async with client.get(
                stack.url + "/system_stats", headers={"Cookie": "zr4_session=v1.1700000000.00ff"}
            ) as answer:
                seen.append(("GET", "cookie", answer.status, ""))
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(stack.url + "/ws?clientId=x")
            seen.append(("WS", "/ws", refused.value.status, ""))
        return seen

    for method, path, status, location in run(probe()):
        if status == 302:
            assert method == "GET" and location.startswith("/zr4/login?next="), (method, path, location)
        else:
            assert status == 401, (method, path, status)
    assert TOKEN not in stack.proxy_output()


def test_bearer_token_reaches_comfyui_and_a_wrong_one_does_not(stack: ComfyBehindProxy) -> None:
    async def calls() -> tuple[int, dict[str, object], int, int]:
        async with session() as client:
            async with client.get(stack.url + "/system_stats", headers=BEARER) as answer:
                ok, stats = answer.status, await answer.json()
            async with client.get(
                stack.url + "/system_stats", headers={"Authorization": "Bearer wrong-token-0123456789"}
            ) as answer:
                wrong = answer.status
            async with client.post(
                stack.url + "/prompt", headers=BEARER, json={"prompt": {"1": {"class_type": "EmptyImage"}}}
            ) as answer:
                queued = answer.status
        return ok, stats, wrong, queued

    ok, stats, wrong, queued = run(calls())
    assert ok == 200 and stats["system"]["comfyui_version"] == "0.7.0"  # type: ignore[index]
    assert wrong == 401
    assert queued == 200


def test_upload_and_large_download_stream_through(stack: ComfyBehindProxy, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    big = stack.output_dir / "big.mp4"
    big.write_bytes(os.urandom(64 * 1024 * 1024))

    async def transfer() -> tuple[dict[str, str], bytes, str, int]:
        async with session() as client:
            form = aiohttp.FormData()
            form.add_field("image", payload, filename="dancer.png", content_type="image/png")
            async with client.post(stack.url + "/upload/image", headers=BEARER, data=form) as answer:
                assert answer.status == 200, await answer.text()
                uploaded = await answer.json()
            async with client.get(
                stack.url + "/view", params={"filename": "dancer.png", "type": "input"}, headers=BEARER
            ) as answer:
                back = await answer.read()
            digest = hashlib.sha256()
            async with client.get(
                stack.url + "/view", params={"filename": "big.mp4", "type": "output"}, headers=BEARER
            ) as answer:
                length = int(answer.headers["Content-Length"])
                async for chunk in answer.content.iter_chunked(1 << 20):
                    digest.update(chunk)
        return uploaded, back, digest.hexdigest(), length

    uploaded, back, digest, length = run(transfer())
    assert uploaded["name"] == "dancer.png"
    assert back == payload
    assert length == big.stat().st_size
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()


def test_websocket_carries_progress_through_the_proxy(stack: ComfyBehindProxy) -> None:
    async def watch() -> tuple[str, list[dict[str, object]]]:
        async with session() as client:
            socket = await client.ws_connect(stack.url + "/ws?clientId=test-client", headers=BEARER)
            first = json.loads((await socket.receive(timeout=10)).data)
            async with client.post(
                stack.url + "/prompt", headers=BEARER, json={"prompt": {"1": {"class_type": "EmptyImage"}}}
            ) as answer:
                prompt_id = (await answer.json())["prompt_id"]
            messages = []
            while True:
                message = json.loads((await socket.receive(timeout=10)).data)
                messages.append(message)
                if message["type"] == "execution_success":
                    break
            await socket.close()
        assert first["type"] == "status" and first["data"]["sid"] == "test-client"
        return prompt_id, messages

    prompt_id, messages = run(watch())
    kinds = [m["type"] for m in messages]
    assert kinds == [
        "execution_start",
        "executing",
        "progress",
        "progress",
        "progress",
        "executed",
        "execution_success",
    ]
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]  # type: ignore[index]
    assert all(m["data"]["prompt_id"] == prompt_id for m in messages)  # type: ignore[index]


def test_login_sets_a_hardened_cookie_that_opens_http_and_websocket(stack: ComfyBehindProxy) -> None:
    async def login(headers: dict[str, str], next_path: str) -> tuple[int, str, str]:
        async with (
            session(cookie_jar=aiohttp.DummyCookieJar()) as client,
            client.post(
                stack.url + "/zr4/login",
                data={"token": TOKEN, "next": next_path},
                headers=headers,
                allow_redirects=False,
            ) as answer,
        ):
            return answer.status, answer.headers["Location"], answer.headers["Set-Cookie"]

    status, location, cookie = run(login({}, "/?workflow=a"))
    assert status == 303 and location == "/?workflow=a"
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes
    assert TOKEN not in cookie
    # X-Forwarded-Proto counts only from a trusted proxy in front (test_auth_attacks.py has that case).
    _, _, claimed_https = run(login({"X-Forwarded-Proto": "https"}, "/"))
    assert "secure" not in [part.strip().lower() for part in claimed_https.split(";")]
    _, elsewhere, _ = run(login({}, "//evil.example/"))
    assert elsewhere == "/"

    value = cookie.split(";")[0].split("=", 1)[1]

    async def browse() -> tuple[int, str, str]:
        async with session() as client:
            # A browser sends its page's Origin on the websocket handshake; the proxy requires it.
            headers = {"Cookie": f"zr4_session={value}", "Accept": "text/html", "Origin": stack.url}
            async with client.get(stack.url + "/", headers=headers) as answer:
                page_status, page = answer.status, await answer.text()
            socket = await client.ws_connect(stack.url + "/ws", headers=headers)
            first = json.loads((await socket.receive(timeout=10)).data)
            await socket.close()
        return page_status, page, first["type"]

    page_status, page, first = run(browse())
    assert page_status == 200 and "<title>ComfyUI</title>" in page
    assert first == "status"


def test_failed_attempts_lock_out_one_client_only(tmp_path: Path) -> None:
    with ComfyBehindProxy(tmp_path) as stack:

        async def attempt(token: str, local: str = "127.0.0.1") -> tuple[int, str]:
            connector = aiohttp.TCPConnector(local_addr=(local, 0))
            async with (
                session(connector=connector) as client,
                client.post(
                    stack.url + "/zr4/login", data={"token": token, "next": "/"}, allow_redirects=False
                ) as answer,
            ):
                return answer.status, answer.headers.get("Retry-After", "")

        async def bearer(token: str) -> int:
            async with (
                session() as client,
                client.get(
                    stack.url + "/system_stats", headers={"Authorization": f"Bearer {token}"}
                ) as answer,
            ):
                return answer.status

        guesses = [f"guess-{n:02d}-abcdefghijklmnop" for n in range(6)]
        statuses = [run(attempt(guess))[0] for guess in guesses[:4]]
        statuses.append(run(bearer(guesses[4])))
        statuses.append(run(attempt(guesses[5]))[0])
        assert statuses == [401] * 6  # five free failures, the sixth starts a lock-out
        locked, retry_after = run(attempt(TOKEN))
        assert locked == 429 and 1 <= int(retry_after) <= 2, "even the right token waits out the lock-out"
        assert run(bearer(TOKEN)) == 429
        # Another client address (Linux routes all of 127/8 to loopback) is not slowed by the first.
        assert run(attempt(TOKEN, local="127.0.0.2"))[0] == 303
        time.sleep(int(retry_after) + 0.2)
        assert run(attempt(TOKEN))[0] == 303
        log = stack.proxy_output()
    assert "locked out for 2 s" in log
    assert TOKEN not in log and not any(guess in log for guess in guesses)
