"""The auth proxy's parts: token checks, session cookies, the failure limiter, the port layout."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from zr4.core.auth_settings import AuthError, Route, auth_enabled, parse_routes, resolve_token, routes_for
from zr4.core.env import EnvError
from zr4.image.auth.connections import default_max_connections, limits_from_env
from zr4.image.auth.logs import OneLineHandler, Throttle
from zr4.image.auth.pages import login_page, safe_next
from zr4.image.auth.proxy import address_key
from zr4.image.auth.ratelimit import FailureBudget, FailureLimiter
from zr4.image.auth.revoked import RevokedSessions
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
    issued, session_id, signature = session.split(".")[1:]
    assert not checker.session_valid(
        f"v2.{int(issued) + 1}.{session_id}.{signature}", now=1050
    )  # tampered time
    other_id = ("B" if session_id[0] == "A" else "A") + session_id[1:]
    assert not checker.session_valid(f"v2.{issued}.{other_id}.{signature}", now=1050)  # tampered id
    assert not checker.session_valid(session, now=1000 - 3600)  # issued in the future
    assert not TokenChecker("another-token-0123456789").session_valid(session, now=1050)
    garbage = (
        "",
        "v2",
        "v2.x.y.z",
        f"v1.1000.{signature}",
        session + ".x",
        f"v2.{'9' * 5000}.{session_id}.{signature}",
    )
    for value in garbage:
        assert not checker.session_valid(value, now=1050)
    assert not checker.session_valid(
        f"v2.１０００.{session_id}.{signature}", now=1050
    )  # digits, not ASCII ones


def test_every_login_gets_its_own_session_and_a_revoked_one_stays_ended(tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    path = tmp_path / "auth" / "revoked-sessions"
    checker = TokenChecker(TOKEN, max_age_s=100, revoked=RevokedSessions(path, clock=lambda: now[0]))
    first, second = checker.new_session(now=1000), checker.new_session(now=1000)
    assert first != second  # the same second, two sessions
    ended = checker.session_of(first, now=1000)
    assert ended is not None and ended.expires == 1100
    checker.revoked.revoke(ended.session_id, ended.expires)
    assert not checker.session_valid(first, now=1000) and checker.session_valid(second, now=1000)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # A restart reads them back; once the session would have expired anyway its line goes.
    assert ended.session_id in RevokedSessions(path, clock=lambda: now[0])
    now[0] = 1101
    checker.revoked.revoke("another-id", 2000)
    assert ended.session_id not in path.read_text() and len(RevokedSessions(path, clock=lambda: now[0])) == 1


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


def test_the_budget_for_all_clients_bursts_then_refills() -> None:
    now = [0.0]
    budget = FailureBudget(burst=3, per_s=0.5, clock=lambda: now[0])
    assert budget.retry_after() == 0
    assert [budget.spend() for _ in range(3)] == [False, False, True]  # "ran out" is said once
    assert budget.retry_after() == 2  # one failure back per 2 s
    now[0] = 2.0
    assert budget.retry_after() == 0
    assert budget.spend() is False  # still the same run of failures: not said again
    now[0] = 100.0  # full again: a new run would be reported
    assert [budget.spend() for _ in range(3)] == [False, False, True]


def test_only_an_ip_address_is_a_client_key() -> None:
    assert address_key(" 203.0.113.7 ") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    for bad in ("", "unknown", "203.0.113.7:443", "[::1]", "1" * 60_000, "203.0.113.7, 10.0.0.1"):
        assert address_key(bad) is None, bad[:40]


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_clients=3)
    for client in "abcde":
        limiter.failed(client)
    assert [limiter.failures(c) for c in "abcde"] == [0, 0, 1, 1, 1]


def test_connection_cap_leaves_room_below_the_open_file_limit() -> None:
    # Each connection may hold one more descriptor towards ComfyUI; two accept bursts are in flight.
    assert default_max_connections(128) == 32
    assert default_max_connections(1024) == 368
    assert default_max_connections(1 << 20) == 1024
    assert default_max_connections(16) == 4
    log: list[str] = []
    limits = limits_from_env(
        {"ZR4_PROXY_MAX_CONNECTIONS": "100000", "ZR4_PROXY_IDLE_TIMEOUT_S": "5"}, log.append
    )
    assert limits.max_connections == default_max_connections() and limits.idle_timeout_s == 5
    assert "more than the open-file limit allows" in log[0]
    for bad in (
        {"ZR4_PROXY_MAX_CONNECTIONS": "2.5"},
        {"ZR4_PROXY_MAX_CONNECTIONS": "inf"},  # was an OverflowError traceback
        {"ZR4_PROXY_MAX_CONNECTIONS": "0"},
        {"ZR4_PROXY_HEADER_TIMEOUT_S": "0"},
        {"ZR4_PROXY_IDLE_TIMEOUT_S": "x"},
    ):
        with pytest.raises(EnvError, match=next(iter(bad))):
            limits_from_env(bad, log.append)


def test_log_lines_name_an_error_but_never_quote_it() -> None:
    lines: list[str] = []
    handler = OneLineHandler(lines.append)
    logger = logging.Logger("test")
    logger.addHandler(handler)
    try:
        raise BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {TOKEN}'")
    except BadHttpMessage:
        logger.exception("Error handling request from %s", "203.0.113.7")
    try:
        int("cookie-" + TOKEN)
    except ValueError:
        logger.exception("Error handling request from %s", "203.0.113.7")
    assert lines[0] == "Error handling request from 203.0.113.7: 400 BadHttpMessage"
    assert (
        lines[1].startswith("Error handling request from 203.0.113.7: ValueError at ")
        and TOKEN not in lines[1]
    )


def test_a_flood_of_lines_is_cut_to_a_few_a_minute() -> None:
    now = [0.0]
    lines: list[str] = []
    throttle = Throttle(lines.append, per_minute=2, clock=lambda: now[0])
    for n in range(10):
        throttle(f"line {n}")
    now[0] = 61
    throttle("later")
    assert lines == ["line 0", "line 1", "later (8 similar lines not shown)"]


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
    assert safe_next("/?workflow=a%26b&c=%2F%2Fd") == "/?workflow=a%26b&c=%2F%2Fd"  # a query may hold "//"
    assert safe_next("/api/view?filename=%C3%A9.png") == "/api/view?filename=%C3%A9.png"
    for bad in ("//evil.example", "https://evil.example", "/%2F%2Fevil", "/\\evil", "", None, "/zr4/login"):
        assert safe_next(bad) == "/", bad
    # Dot segments that a browser removes, leaving a path that names another host.
    for bad in ("/.//evil/x", "/x/..//evil", "/%2e//evil", "/./%2F/evil", "///evil", "/.%2F/evil"):
        assert safe_next(bad) == "/", bad
    # What cannot go into a Location header (DEL, space, non-ASCII) or is no path at all.
    for bad in ("/%7Fx", "/\x7fx", "/a b", "/é", "/x#frag", "/" + "a" * 5000):
        assert safe_next(bad) == "/", bad
    page = login_page('/"><script>', "<b>no</b>")
    assert "<script>" not in page and "&lt;b&gt;no&lt;/b&gt;" in page


def test_the_token_folder_is_private_even_when_it_was_there_before(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A folder made earlier (by hand, an older start, an image layer) keeps its mode under mkdir.
    made_open = tmp_path / "made-open" / "auth"
    made_open.mkdir(parents=True, mode=0o755)
    os.chmod(made_open, 0o755)
    assert resolve_token({"ZR4_AUTH_DIR": str(made_open)}, create=True) is not None
    assert stat.S_IMODE(made_open.stat().st_mode) == 0o700
    # A token file already there: read, and its folder tightened too.
    os.chmod(made_open, 0o755)
    source = resolve_token({"ZR4_AUTH_DIR": str(made_open)}, create=False)
    assert source is not None and source.origin == "file"
    assert stat.S_IMODE(made_open.stat().st_mode) == 0o700
    assert stat.S_IMODE((made_open / "token").stat().st_mode) == 0o600


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
