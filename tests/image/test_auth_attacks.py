"""Attacks on the auth proxy: the real proxy process in front of a backend that records what gets past.

The backend (tests/support/recording_backend.py) plays ComfyUI and records every request it gets; a
second one plays another service on the machine (or the attacker's host), which must never be
reached. After every test the fixture checks that nothing reached that other service and that no
request marked as an attack (the word ``attack`` in its target, or an ``X-Attack`` header) reached
ComfyUI. Requests are written byte for byte where a client library would tidy them up (``//host``
paths, absolute-form targets, malformed headers).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import select
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from support.auth_stack import TOKEN, AuthProxy
from support.recording_backend import MANIFEST, MANIFEST_PATH, RecordingBackend

BEARER = {"Authorization": f"Bearer {TOKEN}"}
Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def comfy() -> Iterator[RecordingBackend]:
    with RecordingBackend("comfyui") as backend:
        yield backend


@pytest.fixture(scope="module")
def other() -> Iterator[RecordingBackend]:
    with RecordingBackend("other") as backend:
        yield backend


@pytest.fixture(scope="module")
def proxy(comfy: RecordingBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProxy]:
    with AuthProxy(tmp_path_factory.mktemp("proxy"), comfy.port) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_leaks(comfy: RecordingBackend, other: RecordingBackend) -> Iterator[None]:
    comfy.clear()
    other.clear()
    yield
    assert other.requests() == [], "the proxy reached another service"
    assert comfy.attacks == [], "an attack reached ComfyUI"


def call(
    proxy: AuthProxy,
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request with exactly this target and these headers (http.client adds only Host)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.public_port, timeout=20)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw(proxy: AuthProxy, data: bytes, timeout_s: float = 10) -> bytes:
    """Send ``data`` as it is; everything the proxy answers until it closes (or ``timeout_s``)."""
    with socket.create_connection(("127.0.0.1", proxy.public_port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def origin_of(proxy: AuthProxy) -> dict[str, str]:
    """The ``Origin`` a browser on the proxy's own page sends."""
    return {"Origin": f"http://127.0.0.1:{proxy.public_port}"}


def log_in(proxy: AuthProxy, next_path: str = "/", headers: Mapping[str, str] | None = None) -> Answer:
    form = f"token={TOKEN}&next={next_path}".encode()
    sent = {"Content-Type": "application/x-www-form-urlencoded", **origin_of(proxy), **(headers or {})}
    return call(proxy, "POST", "/zr4/login", sent, form)


def session_cookie(answer: Answer) -> str:
    """``name=value`` of the session cookie a login answer set."""
    return answer[1]["set-cookie"].split(";", 1)[0]


# --- 1. the upstream URL: //host paths and absolute-form targets (SSRF) ------------------------


def test_a_double_slash_path_stays_on_comfyui(
    proxy: AuthProxy, comfy: RecordingBackend, other: RecordingBackend
) -> None:
    paths = [f"//127.0.0.1:{other.port}/page.html?q=1", "//localhost:1/x", f"///127.0.0.1:{other.port}/"]
    for path in paths:
        status, _, body = call(proxy, "GET", path, BEARER)
        assert status == 200 and b'"served_by": "comfyui"' in body, (path, body)
    assert [seen.target for seen in comfy.requests()] == paths  # ComfyUI gets the path as sent


def test_an_absolute_form_target_is_refused(
    proxy: AuthProxy, comfy: RecordingBackend, other: RecordingBackend
) -> None:
    for target in (f"http://127.0.0.1:{other.port}/x", f"HTTP://127.0.0.1:{other.port}/x", "*"):
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        answer = raw(proxy, (request + "Connection: close\r\n\r\n").encode())
        assert status_line(answer).split(" ")[1] == "400", (target, answer[:200])
    assert comfy.requests() == []


def test_after_login_the_browser_never_lands_off_site(proxy: AuthProxy, other: RecordingBackend) -> None:
    for next_path in (
        f"/.//127.0.0.1:{other.port}/redir",
        f"/x/..//127.0.0.1:{other.port}/redir",
        f"/%2e//127.0.0.1:{other.port}/redir",
        f"/./%2F127.0.0.1:{other.port}/redir",
    ):
        answer = log_in(proxy, next_path.replace("%", "%25"))
        assert answer[0] == 303, next_path
        # Follow the redirect as a browser does (RFC 3986 reference resolution, dot segments removed).
        landing = urljoin(f"http://127.0.0.1:{proxy.public_port}/zr4/login", answer[1]["location"])
        parts = urlsplit(landing)
        assert parts.port == proxy.public_port, landing
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        call(proxy, "GET", target, {"Cookie": session_cookie(answer)})


# --- 2. a session used from another origin ------------------------------------------------------


def websocket(proxy: AuthProxy, headers: Mapping[str, str], target: str = "/ws?clientId=x") -> object:
    """The first message of a websocket opened with these headers, or the refusal's status."""

    async def connect() -> object:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            try:
                socket_ = await client.ws_connect(proxy.url + target, headers=dict(headers))
            except aiohttp.WSServerHandshakeError as error:
                return error.status
            message = await socket_.receive(timeout=10)
            await socket_.close()
            return json.loads(message.data)["type"]

    return asyncio.run(connect())


PROMPT = json.dumps({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}).encode()
ELSEWHERE = {"Origin": "http://pod-b.proxy.test:8188"}  # another pod: the same site, another origin


def test_a_session_from_another_origin_changes_nothing_and_opens_no_websocket(
    proxy: AuthProxy, comfy: RecordingBackend
) -> None:
    cookie = {"Cookie": session_cookie(log_in(proxy))}
    plain = {"Content-Type": "text/plain"}  # what a page may POST to another origin without a preflight
    refused = {
        "another origin": call(
            proxy, "POST", "/prompt?attack=origin", {**cookie, **plain, **ELSEWHERE}, PROMPT
        ),
        "an opaque origin": call(
            proxy, "POST", "/prompt?attack=null", {**cookie, **plain, "Origin": "null"}, PROMPT
        ),
        "the same site": call(
            proxy, "POST", "/prompt?attack=site", {**cookie, **plain, "Sec-Fetch-Site": "same-site"}, PROMPT
        ),
        "no origin at all": call(proxy, "POST", "/prompt?attack=none", {**cookie, **plain}, PROMPT),
        "a delete": call(proxy, "DELETE", "/api/userdata/x?attack=delete", {**cookie, **ELSEWHERE}),
    }
    assert {what: answer[0] for what, answer in refused.items()} == dict.fromkeys(refused, 403)
    assert websocket(proxy, {**cookie, **ELSEWHERE}, "/ws?clientId=attack") == 403
    assert websocket(proxy, {**cookie, "Origin": "null"}, "/ws?clientId=attack") == 403

    # The owner's own page, a link from elsewhere (a GET), and API clients with the token still work.
    assert call(proxy, "POST", "/prompt", {**cookie, **plain, **origin_of(proxy)}, PROMPT)[0] == 200
    assert (
        call(proxy, "POST", "/prompt", {**cookie, **plain, "Sec-Fetch-Site": "same-origin"}, PROMPT)[0] == 200
    )
    assert websocket(proxy, {**cookie, **origin_of(proxy)}) == "status"
    assert (
        call(proxy, "GET", "/system_stats", {**cookie, **ELSEWHERE, "Sec-Fetch-Site": "same-site"})[0] == 200
    )
    assert call(proxy, "POST", "/prompt", {**BEARER, **ELSEWHERE}, PROMPT)[0] == 200
    assert websocket(proxy, {**BEARER, **ELSEWHERE}) == "status"
    owner = ["/prompt", "/prompt", "/ws?clientId=x", "/system_stats", "/prompt", "/ws?clientId=x"]
    assert [seen.target for seen in comfy.requests()] == owner


def test_over_https_the_session_cookie_is_host_prefixed(tmp_path: Path, comfy: RecordingBackend) -> None:
    with AuthProxy(tmp_path, comfy.port, extra_env={"ZR4_AUTH_TRUST_FORWARDED": "true"}) as secure:
        https = {"X-Forwarded-Proto": "https", "Origin": f"https://127.0.0.1:{secure.public_port}"}
        answer = log_in(secure, headers=https)
        name, value = session_cookie(answer).split("=", 1)
        attributes = [part.strip().lower() for part in answer[1]["set-cookie"].split(";")[1:]]
        plain_name = call(secure, "GET", "/system_stats", {"Cookie": f"zr4_session={value}", **https})[0]
        prefixed = call(secure, "GET", "/system_stats", {"Cookie": f"{name}={value}", **https})[0]
    assert name == "__Host-zr4_session"
    assert (
        "secure" in attributes
        and "path=/" in attributes
        and not any(a.startswith("domain") for a in attributes)
    )
    # A cookie another pod of the same site set for the parent domain has the plain name: not taken.
    assert (plain_name, prefixed) == (401, 200)


# --- 3. the lock-out: whose address, how many guesses, and who waits ------------------------------


def behind_a_front_proxy(root: Path, comfy: RecordingBackend) -> AuthProxy:
    """The proxy as on RunPod: trusting the X-Forwarded-For that the proxy in front appends to."""
    return AuthProxy(root, comfy.port, extra_env={"ZR4_AUTH_TRUST_FORWARDED": "true"})


def wrong_login(proxy: AuthProxy, headers: Mapping[str, str] | None = None) -> int:
    form = b"token=wrong-token-0123456789&next=/"
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return call(proxy, "POST", "/zr4/login", sent, form)[0]


def test_a_rotating_forwarded_address_does_not_give_unlimited_guesses(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    owner = {"X-Forwarded-For": "192.0.2.10"}
    with behind_a_front_proxy(tmp_path, comfy) as proxy:
        assert log_in(proxy, headers=owner)[0] == 303  # the owner, earlier
        started = time.monotonic()
        guesses = [
            wrong_login(proxy, {"X-Forwarded-For": f"198.51.{n // 200}.{n % 200 + 1}"}) for n in range(200)
        ]
        refilled = int(time.monotonic() - started) + 1  # the limit's steady rate: one a second
        right = log_in(proxy, headers={"X-Forwarded-For": "192.0.2.77"})
        owner_again = log_in(proxy, headers=owner)[0]
        local = call(proxy, "GET", "/system_stats", BEARER)[0]  # zr4 health: from inside the container
        log = proxy.output()
    # No header splits the limit on failed attempts of all clients together...
    assert guesses.count(401) <= 60 + refilled and guesses.count(429) >= 140 - refilled, guesses
    assert right[0] == 429 and 1 <= int(right[1]["retry-after"]) <= 2
    # ...which holds back neither the owner's address, which showed the token before, nor a
    # process inside the container, and is logged once, not per attempt.
    assert owner_again == 303
    assert local == 200
    assert log.count("failed attempts of all clients together") == 1, log[-2000:]


def test_a_forged_forwarded_address_locks_out_neither_local_clients_nor_the_owner(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    with behind_a_front_proxy(tmp_path, comfy) as proxy:
        forged = [wrong_login(proxy, {"X-Forwarded-For": "127.0.0.1"}) for _ in range(7)]
        health = call(proxy, "GET", "/system_stats", BEARER)[0]
        owner = log_in(proxy, headers={"X-Forwarded-For": "192.0.2.10, 198.51.100.7"})[0]
        guesser = wrong_login(proxy, {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"})
    assert forged == [401] * 6 + [429]  # the guessing (forwarded) client is locked out...
    assert health == 200  # ...not zr4 health, which connects from 127.0.0.1 itself
    assert owner == 303  # the owner's address is the last hop, where the proxy in front put it
    assert guesser == 429  # and "127.0.0.1" as the last hop is that same locked-out client


def test_an_oversized_or_invalid_forwarded_address_is_no_key(tmp_path: Path, comfy: RecordingBackend) -> None:
    huge = "7" * 60_000
    with behind_a_front_proxy(tmp_path, comfy) as proxy:
        statuses = [wrong_login(proxy, {"X-Forwarded-For": f"{n}{huge}"}) for n in range(6)]
        statuses += [wrong_login(proxy, {"X-Forwarded-For": f"not-an-address-{n}"}) for n in range(2)]
        log = proxy.output()
    assert statuses == [401] * 6 + [429] * 2  # each fell back to the connecting address: one client
    assert huge[:100] not in log and "not-an-address" not in log and len(log) < 4000, len(log)


def test_wrong_tokens_posted_from_another_site_lock_nobody_out(proxy: AuthProxy) -> None:
    refused = [wrong_login(proxy, ELSEWHERE) for _ in range(10)]
    assert refused == [403] * 10
    assert log_in(proxy)[0] == 303


# --- 4. connections: idle, slow, and more than the open-file limit allows -------------------------


def owner_status(proxy: AuthProxy) -> int | str:
    try:
        return call(proxy, "GET", "/system_stats", BEARER)[0]
    except OSError as error:
        return f"failed: {error!r}"


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the proxy closed ``sock`` (reading and dropping what it sent), or None."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def open_connections(proxy: AuthProxy, count: int, timeout_s: float = 15) -> list[socket.socket]:
    """``count`` connections to the proxy that send nothing, opened all at once (not one by one:
    those the listen queue cannot take wait out TCP's 1 s retry together)."""
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(proxy.address)
        pending.append(sock)
    deadline = time.monotonic() + timeout_s
    waiting = list(pending)
    while waiting and time.monotonic() < deadline:
        _, writable, _ = select.select([], waiting, [], 0.5)
        waiting = [sock for sock in waiting if sock not in writable]
    return pending


def test_idle_connections_past_the_open_file_limit_do_not_shut_the_owner_out(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    with AuthProxy(tmp_path, comfy.port, open_files=128) as proxy:
        idle = open_connections(proxy, 200)
        try:
            owner = owner_status(proxy)
        finally:
            for sock in idle:
                sock.close()
        again = owner_status(proxy)
        log = proxy.output()
    assert (owner, again) == (200, 200), log[-3000:]
    assert "Too many open files" not in log and "Traceback" not in log, log[-3000:]
    assert log.count("connections open") == 1, log[-3000:]  # said once, not per connection


def test_a_request_whose_headers_never_end_is_closed(tmp_path: Path, comfy: RecordingBackend) -> None:
    with AuthProxy(tmp_path, comfy.port, extra_env={"ZR4_PROXY_HEADER_TIMEOUT_S": "1"}) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.public_port)) as silent:
            silent_closed = closed_within(silent, 5)  # never sends a byte
        with socket.create_connection(("127.0.0.1", proxy.public_port)) as drip:
            started = time.monotonic()
            drip.sendall(b"GET /system_stats HTTP/1.1\r\nHost: x\r\n")
            dripped_until = None
            try:
                for n in range(40):  # one header line every 0.1 s, never the blank line
                    drip.sendall(f"X-Drip-{n}: y\r\n".encode())
                    time.sleep(0.1)
            except OSError:
                dripped_until = time.monotonic() - started
    assert silent_closed is not None and silent_closed < 3, silent_closed
    assert dripped_until is not None and dripped_until < 3, dripped_until


def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path, comfy: RecordingBackend) -> None:
    env = {"ZR4_PROXY_IDLE_TIMEOUT_S": "1"}
    with (
        AuthProxy(tmp_path, comfy.port, extra_env=env) as proxy,
        socket.create_connection(proxy.address) as sock,
    ):
        sock.sendall(
            f"GET /system_stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        first = sock.recv(65536)
        closed = closed_within(sock, 5)
    assert first.startswith(b"HTTP/1.1 200")
    assert closed is not None and closed < 3, closed


def test_when_every_connection_is_busy_new_ones_are_refused_and_said_once(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    async def crowd(proxy: AuthProxy) -> tuple[list[bytes], int]:
        async with aiohttp.ClientSession() as client:
            busy = [
                await client.ws_connect(proxy.url + "/ws?clientId=busy", headers=BEARER) for _ in range(4)
            ]
            answers = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.public_port)
                writer.write(
                    f"GET /system_stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
                )
                answers.append(await asyncio.wait_for(reader.read(), 10))  # until the proxy closes it
                writer.close()
            for socket_ in busy:
                await socket_.close()
        return answers, 0

    env = {"ZR4_PROXY_MAX_CONNECTIONS": "4"}
    with AuthProxy(tmp_path, comfy.port, extra_env=env) as proxy:
        answers, _ = asyncio.run(crowd(proxy))
        after = owner_status(proxy)
        log = proxy.output()
    assert all(answer.startswith(b"HTTP/1.1 503") for answer in answers), answers[:2]
    assert after == 200
    assert log.count("connections open") == 1, log


# --- 5. input that crashed or flooded: one 400 or 401 each, no credential in the log ---------------


def test_a_cookie_with_a_huge_timestamp_is_no_session(proxy: AuthProxy) -> None:
    for value in (
        f"v1.{'9' * 5000}.{'0' * 64}",
        f"v2.{'9' * 5000}.{'A' * 22}.{'0' * 64}",
        "v2." + "." * 3000,
    ):
        status, _, _ = call(proxy, "GET", "/system_stats?attack=cookie", {"Cookie": f"zr4_session={value}"})
        assert status == 401, value[:20]
    assert "Traceback" not in proxy.output()


def test_a_next_path_with_a_control_character_returns_to_the_start_page(proxy: AuthProxy) -> None:
    # As form and query values these decode to DEL, NUL and CR LF (and, escaped once more, to the
    # escapes of them); none can go into a Location header.
    for next_path in ("/%7Fx", "/%00x", "/%0D%0ASet-Cookie:x=y", "/%257Fx", "/%250D%250Ax"):
        status, headers, _ = log_in(proxy, next_path)
        assert (status, headers.get("location")) == (303, "/"), next_path
        page = call(proxy, "GET", f"/zr4/login?next={next_path}")[2].decode()
        assert 'name="next" value="/"' in page, next_path


def test_a_malformed_request_is_refused_without_logging_what_it_carried(proxy: AuthProxy) -> None:
    cookie = session_cookie(log_in(proxy))
    malformed = [
        f"GET /system_stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n",
        f"GET /system_stats HTTP/1.1\r\nHost: x\r\nBearer {TOKEN}\r\n\r\n",
        f"GET /system_stats HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\x7f\r\n\r\n",
        f"GET /system_stats?{TOKEN} HTTP/1.1 x\r\nHost: x\r\n\r\n",
        f"GET /{TOKEN}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    before = len(proxy.output().splitlines())
    answers = [status_line(raw(proxy, request.encode(), timeout_s=5)) for request in malformed]
    lines = proxy.output().splitlines()[before:]
    assert all(answer.split(" ")[1] == "400" for answer in answers), answers
    log = "\n".join(lines)
    assert TOKEN not in log and cookie.split("=", 1)[1] not in log, log
    assert "Traceback" not in log and len(lines) <= len(malformed), log


# --- 6. bodies: not read once the answer is known ---------------------------------------------------


def first_answer(sock: socket.socket) -> bytes:
    """The status line and headers of the next answer on ``sock``."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_expect_100_continue_is_answered_only_after_authentication(proxy: AuthProxy) -> None:
    cookie = session_cookie(log_in(proxy))
    cases = {
        "no token": "",
        "a wrong token": "Authorization: Bearer wrong-token-0123456789\r\n",
        "the cookie from elsewhere": f"Cookie: {cookie}\r\nOrigin: http://pod-b.proxy.test\r\n",
    }
    seen = {}
    for what, credentials in cases.items():
        with socket.create_connection(proxy.address) as sock:
            sock.sendall(
                b"POST /upload/image?attack=expect HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n"
                + credentials.encode()
                + b"Expect: 100-continue\r\n\r\n"
            )
            seen[what] = status_line(first_answer(sock))
    assert seen == {
        "no token": "HTTP/1.1 401 Unauthorized",
        "a wrong token": "HTTP/1.1 401 Unauthorized",
        "the cookie from elsewhere": "HTTP/1.1 403 Forbidden",
    }
    # A login from another site's page is refused before its body is asked for, too.
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(
            b"POST /zr4/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nOrigin: http://pod-b.proxy.test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n\r\n"
        )
        assert status_line(first_answer(sock)) == "HTTP/1.1 403 Forbidden"


def test_an_unauthenticated_body_is_not_read(proxy: AuthProxy) -> None:
    chunk = b"\0" * (1 << 20)
    with socket.create_connection(proxy.address) as sock:
        sock.sendall(
            b"POST /upload/image?attack=body HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n"
        )
        answer = status_line(first_answer(sock))
        sock.settimeout(2)
        sent, started = 0, time.monotonic()
        try:
            while sent < 512 * len(chunk) and time.monotonic() - started < 10:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        elapsed = time.monotonic() - started
    assert answer == "HTTP/1.1 401 Unauthorized"
    # What the kernel's buffers took before the proxy closed the connection; before, it read on for 10 s.
    assert sent < 64 * len(chunk) and elapsed < 5, (sent >> 20, elapsed)


def test_an_authenticated_upload_with_expect_continue_still_goes_through(
    proxy: AuthProxy, comfy: RecordingBackend
) -> None:
    payload = os.urandom(3 << 20)

    async def upload() -> int:
        async with (
            aiohttp.ClientSession() as client,
            client.post(proxy.url + "/upload/image", data=payload, headers=BEARER, expect100=True) as answer,
        ):
            return answer.status

    assert asyncio.run(upload()) == 200
    [seen] = comfy.requests()
    assert seen.body_size == len(payload) and "expect" not in seen.headers  # answered by the proxy


# --- 7. sessions: each its own, ended by a logout for good, all ended by a new token -------------


def test_a_logout_ends_that_session_for_good_and_a_new_token_ends_all(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    def status(proxy: AuthProxy, cookie: str) -> int:
        return call(proxy, "GET", "/system_stats", {"Cookie": cookie})[0]

    with AuthProxy(tmp_path, comfy.port) as proxy:
        first, second = session_cookie(log_in(proxy)), session_cookie(log_in(proxy))  # within a second
        before = status(proxy, first)
        logout = call(proxy, "GET", "/zr4/logout", {"Cookie": first})
        after, untouched = status(proxy, first), status(proxy, second)
    assert first != second
    assert (before, logout[0], after, untouched) == (200, 303, 401, 200)
    assert "zr4_session=;" in logout[1]["set-cookie"] or 'zr4_session="";' in logout[1]["set-cookie"]

    with AuthProxy(tmp_path, comfy.port) as restarted:  # the same folder on the volume
        assert (status(restarted, first), status(restarted, second)) == (401, 200)
    with AuthProxy(tmp_path, comfy.port, token="a-new-token-0123456789") as changed:
        assert status(changed, second) == 401
    assert "logout from 127.0.0.1" in proxy.output()


# --- 9. what ComfyUI is told about the client -------------------------------------------------------

CLIENT_SAYS = {
    "X-Forwarded-For": "198.51.100.1",
    "X-Real-IP": "198.51.100.2",
    "Forwarded": "for=198.51.100.3;proto=https",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
}


def test_forwarding_headers_a_client_makes_up_do_not_reach_comfyui(
    proxy: AuthProxy, comfy: RecordingBackend
) -> None:
    assert call(proxy, "GET", "/system_stats", {**BEARER, **CLIENT_SAYS})[0] == 200
    [seen] = comfy.requests()
    assert seen.headers.get("x-forwarded-for") == "127.0.0.1"  # the address the proxy saw
    assert seen.headers.get("x-forwarded-proto") == "http"
    assert not {"x-real-ip", "forwarded", "x-forwarded-host"} & seen.headers.keys(), seen.headers
    # Nor does a made-up X-Forwarded-Proto make the session cookie Secure (a browser on plain http
    # would then never send it back).
    answer = log_in(proxy, headers={"X-Forwarded-Proto": "https"})
    attributes = [part.strip().lower() for part in answer[1]["set-cookie"].split(";")]
    assert attributes[0].startswith("zr4_session=") and "secure" not in attributes


def test_behind_a_trusted_proxy_its_headers_pass_with_its_address_added(
    tmp_path: Path, comfy: RecordingBackend
) -> None:
    with behind_a_front_proxy(tmp_path, comfy) as proxy:
        assert call(proxy, "GET", "/system_stats", {**BEARER, **CLIENT_SAYS})[0] == 200
    [seen] = comfy.requests()
    assert seen.headers.get("x-forwarded-for") == "198.51.100.1, 127.0.0.1"
    assert seen.headers.get("x-forwarded-proto") == "https"
    assert (
        seen.headers.get("x-real-ip") == "198.51.100.2"
        and seen.headers.get("forwarded") == CLIENT_SAYS["Forwarded"]
    )


# --- the frontend's web-app manifest: the one thing served without a token ------------------------


def test_only_the_frontends_manifest_is_served_without_a_token(
    proxy: AuthProxy, comfy: RecordingBackend
) -> None:
    # What a browser sends for <link rel="manifest"> (credentials omitted), plus leftovers it may hold.
    status, headers, body = call(
        proxy, "GET", MANIFEST_PATH, {"Cookie": "zr4_session=stale; other=1", "Authorization": "Basic eDp5"}
    )
    assert status == 200 and json.loads(body) == MANIFEST and "json" in headers["content-type"]
    [seen] = comfy.requests()
    assert not {"cookie", "authorization"} & seen.headers.keys()  # nothing of the client's passes
    assert call(proxy, "HEAD", MANIFEST_PATH)[0] == 200

    comfy.clear()
    refused = [
        ("GET", MANIFEST_PATH + "?attack=query"),
        ("POST", MANIFEST_PATH + "?attack=post"),
        ("GET", "/assets/manifest-.json?attack"),
        ("GET", "/assets/manifest-CebUEmtR.json/../../system_stats?attack"),
        ("GET", "/assets/manifest-%43ebUEmtR.json?attack"),
        ("GET", "/assets/index-azSeANjR.js?attack"),
        ("GET", "/api/assets/manifest-CebUEmtR.json?attack"),
    ]
    assert [call(proxy, method, target)[0] for method, target in refused] == [401] * len(refused)
    # A manifest name ComfyUI answers with anything but a small JSON document is not passed on.
    comfy.pages["/assets/manifest-NotJson1.json"] = "<!doctype html><p>a page</p>"
    assert call(proxy, "GET", "/assets/manifest-NotJson1.json")[0] == 401
