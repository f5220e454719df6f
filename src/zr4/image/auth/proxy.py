"""The reverse proxy: authenticate every request, then pass it to ComfyUI on its loopback port.

Every path needs a valid session cookie or ``Authorization: Bearer <token>``, except the login page
itself and the frontend's web-app manifest. Behind the same check the proxy answers
``/zr4/status`` and ``/zr4/status.json`` itself, and a page request with the boot's status page while
the boot (``ZR4_BOOT_STATUS``) is not ready (:mod:`zr4.image.auth.status_page`). A browser asking for a page without either is
redirected to the login page; anything else (API calls, websockets, assets) gets 401. The cookie
opens websockets and changes state (anything but GET/HEAD/OPTIONS) only from the proxy's own pages
(``Sec-Fetch-Site``/``Origin``): ComfyUI checks ``Origin`` only when ``Host`` is a loopback name,
which behind the proxy it is not. ComfyUI's URL is the backend's origin plus the request's own
path and query (absolute-form targets are refused). Bodies are streamed both ways chunk by chunk
(an upload or a 500 MB ``/view`` download never sits whole in memory), and neither read nor
invited (``100 Continue``) before the request is authenticated; websockets are relayed message by
message; the proxy's own credentials (the bearer header, its cookie) and, unless a proxy in front
is trusted, the client's forwarding headers are removed before ComfyUI sees the request.

Run as ``python -m zr4.image.auth.proxy`` (`zr4 start` does, supervised). Its environment:
``ZR4_PROXY_ROUTES`` (``PUBLIC=BACKEND,...``), ``ZR4_PROXY_LISTEN`` (default ``0.0.0.0``),
``ZR4_BOOT_STATUS`` (the boot's status file, from `zr4 start`), the token
as :func:`zr4.core.auth_settings.resolve_token` finds it (and ``ZR4_AUTH_DIR`` for the revoked
sessions), ``ZR4_AUTH_TRUST_FORWARDED`` (default: on when ``RUNPOD_POD_ID`` is set) to trust the
proxy in front (the client address it appends to ``X-Forwarded-For``, its ``X-Forwarded-Proto``),
and the connection limits of :mod:`zr4.image.auth.connections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from zr4.core import boot_status as bs
from zr4.core.auth_settings import AuthError, Route, parse_routes, resolve_token, token_file
from zr4.core.env import EnvError, env_bool, env_str
from zr4.image.auth import status_page
from zr4.image.auth.connections import (
    ConnectionGuard,
    Limits,
    accept_burst,
    default_max_connections,
    limits_from_env,
)
from zr4.image.auth.logs import QuietAccept, quiet_aiohttp, say
from zr4.image.auth.pages import LOGIN_PATH, LOGOUT_PATH, login_page, safe_next
from zr4.image.auth.ratelimit import FailureBudget, FailureLimiter
from zr4.image.auth.revoked import FILE_NAME as REVOKED_FILE
from zr4.image.auth.revoked import RevokedSessions
from zr4.image.auth.tokens import COOKIE_NAME, HOST_COOKIE_NAME, TokenChecker, bearer_of, cookie_name

Log = Callable[[str], None]

# RFC 9110 section 7.6.1: connection-specific fields a proxy must not forward.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The frontend's web-app manifest (comfyui-frontend-package 1.35.9's index.html links
# ./assets/manifest-CebUEmtR.json; the part after "manifest-" is the build's content hash).
MANIFEST_TARGET = re.compile(r"/assets/manifest-[A-Za-z0-9_-]{1,32}\.json")
MANIFEST_TYPES = frozenset({"application/json", "application/manifest+json"})
MANIFEST_MAX_BYTES = 64 * 1024
# Who the client is and how it connected: passed on only from a trusted proxy in front.
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "forwarded"}
)
# Answered by the proxy itself (``100 Continue`` once the request is authenticated).
_ANSWERED_HERE = frozenset({"expect"})
# aiohttp's websocket client writes its own handshake fields.
_WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
CHUNK_LIMIT = 1 << 20  # read buffer per upstream response: bounds memory per download
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    # Not "no-referrer": under it a browser sends "Origin: null" with the form's POST, which the
    # origin check must refuse. "same-origin" still sends nothing (no next= path) to other sites.
    "Referrer-Policy": "same-origin",
}


def address_key(text: str) -> str | None:
    """A client's address as the lock-out's key; None unless ``text`` is one IP address.

    IPv6 addresses count per /64 (what one subscriber gets), so rotating through one's own prefix
    buys no guesses; IPv4-mapped IPv6 is the IPv4 address.
    """
    text = text.strip()
    if not text or len(text) > 45:  # the longest textual IPv6 address
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


KNOWN_FOR_S = 30 * 24 * 3600.0  # as long as a session lasts
MAX_KNOWN = 256


@dataclass(frozen=True)
class Client:
    """Who an attempt counts against: ``key`` (an address, marked when a header named it)."""

    key: str
    local: bool = False  # a process in this container (a direct loopback peer)


@dataclass
class Gate:
    """What every site of the proxy shares: the token checker, the failure limits, the log."""

    checker: TokenChecker
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    budget: FailureBudget = field(default_factory=FailureBudget)
    trust_forwarded: bool = False
    log: Log = say
    connections: ConnectionGuard = field(
        default_factory=lambda: ConnectionGuard(Limits(default_max_connections()), say)
    )
    # Clients that got the token right lately: the limit for all clients does not hold them back.
    known: OrderedDict[str, float] = field(default_factory=OrderedDict)
    # The boot's status file (ZR4_BOOT_STATUS, set by `zr4 start`): the status page's content.
    boot_status: Path | None = None

    def own_hosts(self, request: web.Request) -> list[str]:
        """The host names this request was sent to: ``Host``, and a trusted front proxy's own."""
        hosts = [request.headers.get("Host", "")]
        if self.trust_forwarded:
            hosts += [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-Host", [])).split(",")]
        return hosts

    def from_own_page(self, request: web.Request) -> bool:
        """Whether a browser sent this request from this proxy's own origin.

        ``Sec-Fetch-Site`` (Fetch Metadata, sent by current browsers) decides when present: only
        ``same-origin`` counts. Without it the ``Origin`` header must name this host. A request
        with neither did not come from a browser's page (browsers send ``Origin`` on every POST
        and websocket), so it is not from one of ours either.
        """
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None:
            return fetch_site.strip().lower() == "same-origin"
        origin = request.headers.get("Origin")
        return origin is not None and origin_matches(origin, self.own_hosts(request), is_https(request, self))

    def from_other_origin(self, request: web.Request) -> bool:
        """Whether a browser says a page of another origin sent this request.

        What the status JSON checks before a cookie may read it: ``Sec-Fetch-Site`` other than
        ``same-origin`` or ``none`` (the address typed or bookmarked), or, without it, an
        ``Origin`` that is not this host.
        """
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None:
            return fetch_site.strip().lower() not in ("same-origin", "none")
        origin = request.headers.get("Origin")
        return origin is not None and not origin_matches(
            origin, self.own_hosts(request), is_https(request, self)
        )

    def from_elsewhere(self, request: web.Request) -> bool:
        """Whether a browser says this request came from another origin's page (no header: not a page)."""
        if "Sec-Fetch-Site" not in request.headers and "Origin" not in request.headers:
            return False
        return not self.from_own_page(request)

    def client_of(self, request: web.Request) -> Client:
        """The lock-out's client: the connecting address, or behind a trusted proxy the one it added.

        A proxy in front appends the address it saw to ``X-Forwarded-For`` (after whatever the
        client sent), so only the last item of all those header lines is the proxy's; it must be
        one IP address. Addresses named by the header are kept apart from connecting ones, so a
        forged ``127.0.0.1`` is not ``zr4 health`` connecting from inside the container.
        """
        if self.trust_forwarded:
            hops = ",".join(request.headers.getall("X-Forwarded-For", []))
            forwarded = address_key(hops.rsplit(",", 1)[-1]) if hops else None
            if forwarded is not None:
                return Client(f"{forwarded} (forwarded)")
        peer = address_key(request.remote or "")
        if peer is None:
            return Client("unknown")
        return Client(peer, local=ipaddress.ip_network(peer, strict=False).network_address.is_loopback)

    def wait(self, client: Client) -> int:
        """Seconds ``client`` must wait before its next token check (0: go ahead).

        The limit for all clients applies to clients from outside that have not shown the token
        lately: it stops guesses spread over many addresses, not the owner coming back.
        """
        wait = self.limiter.retry_after(client.key)
        if client.local or self._known(client):
            return wait
        return max(wait, self.budget.retry_after())

    def _known(self, client: Client) -> bool:
        seen = self.known.get(client.key)
        return seen is not None and time.monotonic() - seen < KNOWN_FOR_S

    def succeeded(self, client: Client) -> None:
        self.limiter.succeeded(client.key)
        self.known.pop(client.key, None)
        self.known[client.key] = time.monotonic()
        while len(self.known) > MAX_KNOWN:
            self.known.popitem(last=False)

    def failed(self, client: Client, what: str) -> int:
        """Count a wrong token against ``client`` and all clients; returns its lock-out in seconds."""
        lockout = self.limiter.failed(client.key)
        failures = self.limiter.failures(client.key)
        extra = f"; locked out for {lockout} s" if lockout else ""
        self.log(f"{what} failed from {client.key} ({failures} in a row{extra})")
        if not client.local and self.budget.spend():
            self.log(
                f"{self.budget.burst} failed attempts of all clients together: from now on at most "
                f"{self.budget.per_s:g} a second (answered 429) until they stop"
            )
        return lockout


def is_https(request: web.Request, gate: Gate) -> bool:
    """TLS here, or at a trusted proxy in front (RunPod's sets ``X-Forwarded-Proto: https``).

    From anyone else the header means nothing: a client on plain http that claimed https would be
    given a Secure cookie its browser then never sends back.
    """
    if request.secure:
        return True
    if not gate.trust_forwarded:
        return False
    return request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


def _wants_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _without_own_cookie(header: str) -> str:
    own = {COOKIE_NAME, HOST_COOKIE_NAME}
    kept = [part for part in header.split(";") if part.strip().split("=", 1)[0].strip() not in own]
    return ";".join(kept).strip()


def _authority(scheme: str, host_header: str) -> tuple[str, int | None] | None:
    """(host, port) of a ``Host``-style value, the scheme's default port filled in; None if unusable."""
    try:
        url = URL(f"{scheme}://{host_header.strip()}")
    except ValueError:
        return None
    if not url.raw_host or url.raw_path not in ("", "/") or url.raw_query_string or url.user:
        return None
    return url.raw_host.lower(), url.port


def origin_matches(origin: str, hosts: Sequence[str], https: bool) -> bool:
    """Whether an ``Origin`` header names this proxy: one of ``hosts`` (the ``Host`` it was asked for)."""
    scheme, sep, rest = origin.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or (https and scheme != "https"):
        return False
    mine = _authority(scheme, rest)
    return mine is not None and any(_authority(scheme, host) == mine for host in hosts if host)


def _state_changing(request: web.Request) -> bool:
    """What a cookie may do only from the proxy's own pages: anything but reading, and websockets."""
    return request.method not in ("GET", "HEAD", "OPTIONS") or _is_websocket(request)


def upstream_headers(request: web.Request, *, trusted: bool, websocket: bool = False) -> CIMultiDict[str]:
    """The request's headers as ComfyUI should see them: no hop-by-hop fields, no zr4 credentials,
    and forwarding headers only as a trusted proxy in front set them (``trusted``), with this hop's
    client address appended; otherwise the proxy's own ``X-Forwarded-For``/``-Proto``."""
    headers: CIMultiDict[str] = CIMultiDict()
    connection_named = {
        token.strip().lower() for token in request.headers.get("Connection", "").split(",") if token.strip()
    }
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower in _ANSWERED_HERE:
            continue
        if websocket and (lower in _WS_HANDSHAKE or lower == "sec-websocket-protocol"):
            continue
        if lower == "authorization" and bearer_of(value) is not None:
            continue
        if lower == "cookie":
            value = _without_own_cookie(value)
            if not value:
                continue
        if lower in _FORWARDING and (not trusted or lower == "x-forwarded-for"):
            continue
        headers.add(name, value)
    peer = request.remote or "unknown"
    hops = [hop.strip() for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    headers["X-Forwarded-For"] = ", ".join([*(hop for hop in hops if hop and trusted), peer])
    if not trusted or "X-Forwarded-Proto" not in headers:
        headers["X-Forwarded-Proto"] = "https" if request.secure else "http"
    return headers


async def _expect_later(request: web.Request) -> None:
    """The route's ``Expect`` handler: check the value, but send no ``100 Continue`` yet.

    aiohttp's default (aiohttp 3.14.5 web_urldispatcher.py ``_default_expect_handler``) writes
    ``100 Continue`` before the handler runs, so a client without a token was invited to send its
    body; :func:`_continue` sends it once the request is allowed to have one.
    """
    expect = request.headers.get("Expect", "")
    if request.version == aiohttp.HttpVersion11 and expect and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:40]}")


_CONTINUED = "zr4.continued"


async def _continue(request: web.Request) -> None:
    """Invite the body (``100 Continue``) of an allowed request that waits for it, once."""
    if (
        request.version == aiohttp.HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
        and not request.get(_CONTINUED)
    ):
        request[_CONTINUED] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def upstream_url(backend: URL, target: str) -> URL:
    """ComfyUI's URL for a request target: the backend's origin, then the target's path and query.

    Never a join: resolving ``//host/x`` (or an absolute ``http://host/x``) against the backend
    replaces the backend's host, so any reference resolution would let a request pick the server.
    """
    path, _, query = target.partition("#")[0].partition("?")
    host = backend.raw_host
    assert host is not None  # the backend is always an http URL with a host
    return URL.build(
        scheme=backend.scheme, host=host, port=backend.port, path=path, query_string=query, encoded=True
    )


def _not_a_path() -> web.Response:
    """An absolute-form (``GET http://host/x``) or authority-form target: a request for a forward proxy."""
    return web.Response(
        status=400,
        text="the request target must be a path (this is not a forward proxy)\n",
        headers={"Cache-Control": "no-store", "Connection": "close"},
    )


class Site:
    """The proxy for one ComfyUI instance (one public port, one loopback backend)."""

    def __init__(self, gate: Gate, route: Route, backend_host: str = "127.0.0.1") -> None:
        self.gate = gate
        self.route = route
        self.backend = URL.build(scheme="http", host=backend_host, port=route.backend_port)
        self.session: aiohttp.ClientSession | None = None

    # --- authentication ------------------------------------------------------------------------

    def _has_session(self, request: web.Request) -> bool:
        value = request.cookies.get(cookie_name(is_https(request, self.gate)))
        return value is not None and self.gate.checker.session_valid(value)

    @staticmethod
    def _cross_origin() -> web.Response:
        return web.Response(
            status=403,
            text=(
                "refused: this request came from another site's page; the session cookie works only "
                "from this address's own pages (API clients send Authorization: Bearer <token>)\n"
            ),
            headers={"Cache-Control": "no-store"},
        )

    def _too_many(self, retry: int) -> web.Response:
        return web.Response(
            status=429,
            text=f"too many failed attempts from this client: retry in {retry} s\n",
            headers={"Retry-After": str(retry), "Cache-Control": "no-store"},
        )

    def _unauthenticated(
        self, request: web.Request, message: str = "authentication required"
    ) -> web.Response:
        if _wants_page(request) and not _is_websocket(request):
            target = URL(LOGIN_PATH).with_query(next=request.raw_path)
            raise web.HTTPFound(target, headers={"Cache-Control": "no-store"})
        return web.Response(
            status=401,
            text=f"{message}: log in at {LOGIN_PATH} or send Authorization: Bearer <token>\n",
            headers={"WWW-Authenticate": 'Bearer realm="zr4"', "Cache-Control": "no-store"},
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with self.gate.connections.busy(request.protocol):
            return await self._handle(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.raw_path.startswith("/"):
            return _not_a_path()
        if request.path == LOGIN_PATH:
            return await self.login(request)
        if request.path == LOGOUT_PATH:
            return self.logout(request)
        session = self._has_session(request)
        by_cookie = True
        if not (session and (not _state_changing(request) or self.gate.from_own_page(request))):
            by_cookie = False
            presented = bearer_of(request.headers.get("Authorization"))
            if presented is None:
                if session:
                    return self._cross_origin()
                if request.method in ("GET", "HEAD") and MANIFEST_TARGET.fullmatch(request.raw_path):
                    return await self.manifest(request)
                return self._unauthenticated(request)
            client = self.gate.client_of(request)
            retry = self.gate.wait(client)
            if retry:
                return self._too_many(retry)
            if not self.gate.checker.token_matches(presented):
                self.gate.failed(client, "bearer token")
                return self._unauthenticated(request, "wrong bearer token")
            self.gate.succeeded(client)
        if request.path in (status_page.STATUS_PATH, status_page.STATUS_JSON_PATH):
            return self.boot_status(request, by_cookie)
        if self.gate.boot_status is not None and _wants_page(request) and not _is_websocket(request):
            status = bs.read_status(self.gate.boot_status)
            if status_page.shows_in_place(status, self.route.public_port, request.query_string):
                assert status is not None
                return self._status_page(status, request, in_place=True)
        if _is_websocket(request):
            return await self.relay_websocket(request)
        return await self.forward(request)

    # --- the boot's status ---------------------------------------------------------------------

    def _status_page(self, status: dict[str, Any], request: web.Request, *, in_place: bool) -> web.Response:
        body = status_page.page(status, self.route.public_port, in_place=in_place, raw_path=request.raw_path)
        waiting = in_place and not bs.comfyui_ready(status, self.route.public_port)
        headers = dict(status_page.HEADERS, **({"Retry-After": "5"} if waiting else {}))
        return web.Response(
            status=503 if waiting else 200, text=body, content_type="text/html", headers=headers
        )

    def boot_status(self, request: web.Request, by_cookie: bool) -> web.Response:
        """``/zr4/status`` (the page) and ``/zr4/status.json`` (what its script polls)."""
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if by_cookie and self.gate.from_other_origin(request):
            return self._cross_origin()
        path = self.gate.boot_status
        status = None if path is None else bs.read_status(path)
        if request.path == status_page.STATUS_JSON_PATH:
            return web.Response(
                text=status_page.json_body(status, self.route.public_port),
                content_type="application/json",
                headers=status_page.HEADERS,
            )
        if status is None:
            return web.Response(
                text=status_page.no_status_page(), content_type="text/html", headers=status_page.HEADERS
            )
        return self._status_page(status, request, in_place=False)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            next_path = safe_next(request.query.get("next"))
            if self._has_session(request):
                raise web.HTTPSeeOther(URL(next_path, encoded=True))
            return self._page(login_page(next_path))
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        if self.gate.from_elsewhere(request):
            # Not counted as a failure: a page elsewhere must not be able to lock the owner out.
            message = f"This form was sent from another site. Open {LOGIN_PATH} on this address to log in."
            return self._page(login_page("/", message), 403)
        client = self.gate.client_of(request)
        retry = self.gate.wait(client)
        if retry:  # answered before the form is read: a locked-out client's body is not wanted
            return self._page(login_page("/", f"Too many wrong tokens: wait {retry} s."), 429, retry)
        await _continue(request)
        form = await request.post()
        next_path = safe_next(str(form.get("next", "/")))
        if not self.gate.checker.token_matches(str(form.get("token", ""))):
            lockout = self.gate.failed(client, "login")
            message = f"Wrong token; wait {lockout} s before the next try." if lockout else "Wrong token."
            return self._page(login_page(next_path, message), 401)
        self.gate.succeeded(client)
        response = web.HTTPSeeOther(URL(next_path, encoded=True), headers={"Cache-Control": "no-store"})
        https = is_https(request, self.gate)
        response.set_cookie(
            cookie_name(https),
            self.gate.checker.new_session(),
            max_age=self.gate.checker.max_age_s,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=https,
        )
        self.gate.log(f"login from {client.key}")
        return response

    def logout(self, request: web.Request) -> web.StreamResponse:
        value = request.cookies.get(cookie_name(is_https(request, self.gate)))
        session = None if value is None else self.gate.checker.session_of(value)
        if session is not None:
            client = self.gate.client_of(request).key
            try:
                self.gate.checker.revoked.revoke(session.session_id, session.expires)
                self.gate.log(f"logout from {client}: that session is ended")
            except OSError as error:
                self.gate.log(
                    f"logout from {client}: that session is ended until the proxy restarts (cannot keep "
                    f"it in {self.gate.checker.revoked.path}: {error.strerror})"
                )
        response = web.HTTPSeeOther(LOGIN_PATH, headers={"Cache-Control": "no-store"})
        https = is_https(request, self.gate)
        response.del_cookie(cookie_name(https), path="/", secure=https, httponly=True, samesite="Lax")
        return response

    @staticmethod
    def _page(body: str, status: int = 200, retry: int = 0) -> web.Response:
        headers = dict(_PAGE_HEADERS)
        if retry:
            headers["Retry-After"] = str(retry)
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)

    # --- forwarding ----------------------------------------------------------------------------

    def _url(self, request: web.Request) -> URL:
        return upstream_url(self.backend, request.raw_path)

    def _down(self) -> web.Response:
        return web.Response(
            status=502,
            text=f"ComfyUI does not answer on 127.0.0.1:{self.route.backend_port} yet (still starting?)\n",
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        data = request.content if request.body_exists else None
        if data is not None:
            await _continue(request)
        try:
            upstream = await self.session.request(
                request.method,
                self._url(request),
                headers=upstream_headers(request, trusted=self.gate.trust_forwarded),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
            )
        except aiohttp.ClientConnectorError:
            return self._down()
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        """The frontend's web-app manifest, fetched from ComfyUI without anything of the client's.

        Browsers fetch ``<link rel="manifest">`` without cookies (HTML's "link type manifest":
        credentials only with ``crossorigin="use-credentials"``), so behind the proxy it got 401 on
        every page load. The file is a static asset of the frontend package, the same in every
        install; rewriting ComfyUI's ``index.html`` to add the attribute would mean editing (and
        buffering) every page it serves. Only a small JSON answer is passed on, so no other route
        ComfyUI (or a custom node) may have under that name is opened.
        """
        assert self.session is not None
        try:
            upstream = await self.session.get(self._url(request), allow_redirects=False)
        except aiohttp.ClientConnectorError:
            return self._down()
        async with upstream:
            body = await upstream.content.read(MANIFEST_MAX_BYTES + 1)
            kind = upstream.content_type
        if upstream.status != 200 or kind not in MANIFEST_TYPES or len(body) > MANIFEST_MAX_BYTES:
            return self._unauthenticated(request)
        # aiohttp sends no body for HEAD, keeping the Content-Length.
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def relay_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream = await self.session.ws_connect(
                self._url(request),
                headers=upstream_headers(request, trusted=self.gate.trust_forwarded, websocket=True),
                protocols=protocols,
                max_msg_size=0,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as error:
            return web.Response(status=error.status or 502, text="ComfyUI refused the websocket\n")
        except aiohttp.ClientConnectorError:
            return self._down()
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0, compress=False
        )
        await downstream.prepare(request)
        pumps = [
            asyncio.create_task(_pump(upstream, downstream)),
            asyncio.create_task(_pump(downstream, upstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await upstream.close()
            await downstream.close()
        return downstream

    async def start(self) -> None:
        # At most one connection to ComfyUI per connection the proxy holds (the guard's cap).
        connector = aiohttp.TCPConnector(
            limit=self.gate.connections.limits.max_connections, force_close=False
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            read_bufsize=CHUNK_LIMIT,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await target.send_bytes(message.data)
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break


# What every connection's aiohttp handler is built with (aiohttp 3.14.5 web_protocol.RequestHandler):
# no access log; header lines up to 64 KiB (ComfyUI's frontend sends long cookies and URLs);
# lingering_time 0: after an answer sent without reading the body (401, 403, 429...), close the
# connection instead of reading and dropping up to 10 s of body (aiohttp's default lingering close).
HANDLER_ARGS: dict[str, object] = {"access_log": None, "max_field_size": 65536, "lingering_time": 0}


def make_app(site: Site) -> web.Application:
    # client_max_size bounds only what the proxy itself reads (the login form); forwarded bodies stream.
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_route("*", "/{tail:.*}", site.handle, expect_handler=_expect_later)

    async def lifecycle(_app: web.Application):  # type: ignore[no-untyped-def]
        await site.start()
        yield
        await site.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(
    routes: Sequence[Route],
    gate: Gate,
    listen: str,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
) -> None:
    """Listen on every route's public port until ``stop`` is set.

    Each port's listening socket makes its connections through ``gate.connections`` (timeouts and
    the cap are per process, over all ports) rather than aiohttp's own site.
    """
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietAccept(gate.log))
    quiet_aiohttp(gate.log)
    runners: list[web.AppRunner] = []
    listening: list[asyncio.Server] = []
    try:
        for route in routes:
            runner = web.AppRunner(make_app(Site(gate, route)), handle_signals=False)
            await runner.setup()
            runners.append(runner)
            assert runner.server is not None  # set by setup()
            factory = gate.connections.factory(runner.server, **HANDLER_ARGS)
            listening.append(
                await loop.create_server(
                    factory, listen, route.public_port, reuse_address=True, backlog=accept_burst()
                )
            )
            gate.log(
                f"listening on {listen}:{route.public_port} -> ComfyUI on 127.0.0.1:{route.backend_port}"
            )
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        for server in listening:
            server.close()
        for runner in runners:
            await runner.cleanup()


def gate_from_env(env: Mapping[str, str]) -> Gate:
    source = resolve_token(env, create=False)
    if source is None:
        raise AuthError("no token: set ZR4_AUTH_TOKEN, or ZR4_AUTH_DIR to the folder zr4 start keeps it in")
    trust = env_bool("ZR4_AUTH_TRUST_FORWARDED", bool(env.get("RUNPOD_POD_ID")), env)
    connections = ConnectionGuard(limits_from_env(env, say), say)
    try:
        revoked = RevokedSessions(token_file(env).parent / REVOKED_FILE)
    except OSError as error:
        raise AuthError(f"{error.strerror} (ZR4_AUTH_DIR)") from None
    checker = TokenChecker(source.token, revoked=revoked)
    return Gate(
        checker, trust_forwarded=trust, connections=connections, boot_status=status_page.status_file(env)
    )


def main(env: Mapping[str, str] | None = None) -> int:
    """``python -m zr4.image.auth.proxy``: serve until SIGTERM/SIGINT."""
    import os

    from zr4.core.redact import redact_process_output

    redact_process_output()

    environ = os.environ if env is None else env
    try:
        gate = gate_from_env(environ)
        routes = parse_routes(env_str("ZR4_PROXY_ROUTES", "", environ) or "")
        listen = env_str("ZR4_PROXY_LISTEN", "0.0.0.0", environ) or "0.0.0.0"
    except (AuthError, EnvError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(routes, gate, listen, stop)

    try:
        asyncio.run(run())
    except OSError as error:
        print(f"error: cannot listen: {error.strerror}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
