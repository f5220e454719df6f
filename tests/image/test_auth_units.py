"""The auth proxy's parts: token checks, session cookies, the failure limiter, the port layout."""

from __future__ import annotations

import pytest

from zr4.core.auth_settings import AuthError, Route, auth_enabled, parse_routes, routes_for
from zr4.image.auth.pages import login_page, safe_next
from zr4.image.auth.ratelimit import FailureLimiter
from zr4.image.auth.tokens import TokenChecker, bearer_of

TOKEN = "a-token-of-some-length-0123"


def test_token_and_session_checks() -> None:
    checker = TokenChecker(TOKEN, max_age_s=100)
    assert checker.token_matches(TOKEN)
    assert not checker.token_matches(TOKEN[:-1]) and not checker.token_matches(TOKEN + "x")
    assert not checker.token_matches("")
    session = checker.new_session(now=1000)
    assert TOKEN not in session
    assert checker.session_valid(session, now=1050)
    assert not checker.session_valid(session, now=1101)  # expired
    issued, signature = session.split(".")[1:]
    assert not checker.session_valid(f"v1.{int(issued) + 1}.{signature}", now=1050)  # tampered time
    assert not checker.session_valid(session, now=1000 - 3600)  # issued in the future
    assert not TokenChecker("another-token-0123456789").session_valid(session, now=1050)
    for garbage in ("", "v1", "v1.x.y", "v2.1000." + signature, session + ".x"):
        assert not checker.session_valid(garbage, now=1050)


def test_bearer_header_parsing() -> None:
    assert bearer_of(f"Bearer {TOKEN}") == TOKEN
    assert bearer_of(f"bearer   {TOKEN} ") == TOKEN
    assert bearer_of("Basic dXNlcjpwYXNz") is None
    assert bearer_of("Bearer ") is None and bearer_of(None) is None


def test_limiter_locks_out_with_doubling_and_forgets_on_success() -> None:
    now = [0.0]
    limiter = FailureLimiter(free_failures=2, base_lockout_s=2, max_lockout_s=5, clock=lambda: now[0])
    assert [limiter.failed("a") for _ in range(2)] == [0, 0]
    assert limiter.failed("a") == 2 and limiter.retry_after("a") == 2
    assert limiter.retry_after("b") == 0
    now[0] = 2.5
    assert limiter.retry_after("a") == 0
    assert limiter.failed("a") == 4
    assert limiter.failed("a") == 5  # capped
    limiter.succeeded("a")
    assert limiter.retry_after("a") == 0 and limiter.failures("a") == 0
    # A failure long after the last one starts a new count.
    limiter.failed("c")
    now[0] += 10_000
    assert limiter.failed("c") == 0 and limiter.failures("c") == 1


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_clients=3)
    for client in "abcde":
        limiter.failed(client)
    assert [limiter.failures(c) for c in "abcde"] == [0, 0, 1, 1, 1]


def test_auth_switch() -> None:
    for value in ("", "on", "TRUE", " 1 "):
        assert auth_enabled({"ZR4_AUTH": value})
    assert auth_enabled({})
    for value in ("off", "false", "0", "No"):
        assert not auth_enabled({"ZR4_AUTH": value})
    with pytest.raises(AuthError, match="ZR4_AUTH='disabled' is not understood"):
        auth_enabled({"ZR4_AUTH": "disabled"})


def test_port_layout_for_one_and_several_instances() -> None:
    assert routes_for([8188], {}) == [Route(8188, 18188)]
    assert routes_for([8188, 8189], {"ZR4_COMFYUI_BACKEND_PORT": "9000"}) == [
        Route(8188, 9000),
        Route(8189, 9001),
    ]
    assert parse_routes("8188=18188,8189=18189") == [Route(8188, 18188), Route(8189, 18189)]
    with pytest.raises(AuthError, match="below 65536"):
        routes_for([60000], {})
    with pytest.raises(AuthError, match="public port 8189"):
        routes_for([8188, 8189], {"ZR4_COMFYUI_BACKEND_PORT": "8189"})
    with pytest.raises(AuthError, match="not PUBLIC=BACKEND"):
        parse_routes("8188")


def test_login_page_returns_only_to_local_paths() -> None:
    assert safe_next("/?workflow=a") == "/?workflow=a"
    for bad in ("//evil.example", "https://evil.example", "/%2F%2Fevil", "/\\evil", "", None, "/zr4/login"):
        assert safe_next(bad) == "/", bad
    page = login_page('/"><script>', "<b>no</b>")
    assert "<script>" not in page and "&lt;b&gt;no&lt;/b&gt;" in page


def test_clients_find_the_token_like_the_proxy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from zr4.client.auth import auth_headers, client_token
    from zr4.client.comfy_api import auth_token
    from zr4.core.auth_settings import resolve_token

    env = {"ZR4_AUTH_DIR": str(tmp_path / "auth")}
    assert client_token(env) is None and auth_headers(env) == {}
    made = resolve_token(env, create=True)
    assert made is not None and made.origin == "generated"
    assert client_token(env) == made.token == auth_token(env)
    assert auth_headers(env) == {"Authorization": f"Bearer {made.token}"}
    assert client_token({**env, "ZR4_AUTH_TOKEN": TOKEN}) == TOKEN
    assert client_token({**env, "ZR4_AUTH_TOKEN": "{{ RUNPOD_SECRET_ZR4_AUTH_TOKEN }}"}) == made.token
    assert client_token({**env, "ZR4_AUTH": "off"}) is None
    assert client_token({"ZR4_AUTH_TOKEN": "short"}) == "short"  # the proxy's 401 explains
