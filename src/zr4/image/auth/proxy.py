"""The reverse proxy: authenticate every request, then pass it to ComfyUI on its loopback port.

Every path needs a valid session cookie or ``Authorization: Bearer <token>``, except the login page
itself. A browser asking for a page without either is redirected to the login page; anything else
(API calls, websockets, assets) gets 401. Bodies are streamed both ways chunk by chunk (an upload or
a 500 MB ``/view`` download never sits whole in memory), websockets are relayed message by message,
and the proxy's own credentials (the bearer header, its cookie) are removed before ComfyUI sees
the request. ``Host`` and ``Origin`` pass unchanged, so ComfyUI's own same-origin check still works.

Run as ``python -m zr4.image.auth.proxy`` (`zr4 start` does, supervised). Its environment:
``ZR4_PROXY_ROUTES`` (``PUBLIC=BACKEND,...``), ``ZR4_PROXY_LISTEN`` (default ``0.0.0.0``), the token
as :func:`zr4.core.auth_settings.resolve_token` finds it, and ``ZR4_AUTH_TRUST_FORWARDED``
(default: on when ``RUNPOD_POD_ID`` is set) to key the rate limit on the client address RunPod's
proxy appends to ``X-Forwarded-For`` rather than on the proxy's own address.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from zr4.core.auth_settings import AuthError, Route, parse_routes, resolve_token
from zr4.core.env import EnvError, env_bool, env_str
from zr4.image.auth.pages import LOGIN_PATH, LOGOUT_PATH, login_page, safe_next
from zr4.image.auth.ratelimit import FailureLimiter
from zr4.image.auth.tokens import COOKIE_NAME, TokenChecker, bearer_of

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
# aiohttp's websocket client writes its own handshake fields.
_WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
CHUNK_LIMIT = 1 << 20  # read buffer per upstream response: bounds memory per download
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def _say(message: str) -> None:
    print(f"[zr4 auth] {message}", flush=True)


@dataclass
class Gate:
    """What every site of the proxy shares: the token checker, the failure limiter, the log."""

    checker: TokenChecker
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    trust_forwarded: bool = False
    log: Log = _say

    def client_of(self, request: web.Request) -> str:
        """The rate limit's key: the peer address, or behind a trusted proxy the address it appended."""
        if self.trust_forwarded:
            forwarded = request.headers.get("X-Forwarded-For", "")
            last = forwarded.split(",")[-1].strip()
            if last:
                return last
        return request.remote or "unknown"


def is_https(request: web.Request) -> bool:
    """TLS here or at the proxy in front (RunPod's sets ``X-Forwarded-Proto: https``)."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or proto == "https"


def _wants_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _without_own_cookie(header: str) -> str:
    kept = [part for part in header.split(";") if part.strip().split("=", 1)[0].strip() != COOKIE_NAME]
    return ";".join(kept).strip()


def upstream_headers(request: web.Request, *, websocket: bool = False) -> CIMultiDict[str]:
    """The request's headers as ComfyUI should see them: no hop-by-hop fields, no zr4 credentials."""
    headers: CIMultiDict[str] = CIMultiDict()
    connection_named = {
        token.strip().lower() for token in request.headers.get("Connection", "").split(",") if token.strip()
    }
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named:
            continue
        if websocket and (lower in _WS_HANDSHAKE or lower == "sec-websocket-protocol"):
            continue
        if lower == "authorization" and bearer_of(value) is not None:
            continue
        if lower == "cookie":
            value = _without_own_cookie(value)
            if not value:
                continue
        headers.add(name, value)
    return headers


class Site:
    """The proxy for one ComfyUI instance (one public port, one loopback backend)."""

    def __init__(self, gate: Gate, route: Route, backend_host: str = "127.0.0.1") -> None:
        self.gate = gate
        self.route = route
        self.backend = URL.build(scheme="http", host=backend_host, port=route.backend_port)
        self.session: aiohttp.ClientSession | None = None

    # --- authentication ------------------------------------------------------------------------

    def _has_session(self, request: web.Request) -> bool:
        value = request.cookies.get(COOKIE_NAME)
        return value is not None and self.gate.checker.session_valid(value)

    def _too_many(self, client: str, retry: int) -> web.Response:
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

    def _failed(self, client: str, what: str) -> int:
        lockout = self.gate.limiter.failed(client)
        failures = self.gate.limiter.failures(client)
        extra = f"; locked out for {lockout} s" if lockout else ""
        self.gate.log(f"{what} failed from {client} ({failures} in a row{extra})")
        return lockout

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == LOGIN_PATH:
            return await self.login(request)
        if request.path == LOGOUT_PATH:
            return self.logout(request)
        if not self._has_session(request):
            presented = bearer_of(request.headers.get("Authorization"))
            if presented is None:
                return self._unauthenticated(request)
            client = self.gate.client_of(request)
            retry = self.gate.limiter.retry_after(client)
            if retry:
                return self._too_many(client, retry)
            if not self.gate.checker.token_matches(presented):
                self._failed(client, "bearer token")
                return self._unauthenticated(request, "wrong bearer token")
            self.gate.limiter.succeeded(client)
        if _is_websocket(request):
            return await self.relay_websocket(request)
        return await self.forward(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            next_path = safe_next(request.query.get("next"))
            if self._has_session(request):
                raise web.HTTPSeeOther(URL(next_path, encoded=True))
            return self._page(login_page(next_path))
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        client = self.gate.client_of(request)
        form = await request.post()
        next_path = safe_next(str(form.get("next", "/")))
        retry = self.gate.limiter.retry_after(client)
        if retry:
            return self._page(login_page(next_path, f"Too many wrong tokens: wait {retry} s."), 429, retry)
        if not self.gate.checker.token_matches(str(form.get("token", ""))):
            lockout = self._failed(client, "login")
            message = f"Wrong token; wait {lockout} s before the next try." if lockout else "Wrong token."
            return self._page(login_page(next_path, message), 401)
        self.gate.limiter.succeeded(client)
        response = web.HTTPSeeOther(URL(next_path, encoded=True), headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE_NAME,
            self.gate.checker.new_session(),
            max_age=self.gate.checker.max_age_s,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=is_https(request),
        )
        self.gate.log(f"login from {client}")
        return response

    def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther(LOGIN_PATH, headers={"Cache-Control": "no-store"})
        response.del_cookie(COOKIE_NAME, path="/", secure=is_https(request), httponly=True, samesite="Lax")
        return response

    @staticmethod
    def _page(body: str, status: int = 200, retry: int = 0) -> web.Response:
        headers = dict(_PAGE_HEADERS)
        if retry:
            headers["Retry-After"] = str(retry)
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)

    # --- forwarding ----------------------------------------------------------------------------

    def _url(self, request: web.Request) -> URL:
        return self.backend.join(URL(request.raw_path, encoded=True))

    def _down(self) -> web.Response:
        return web.Response(
            status=502,
            text=f"ComfyUI does not answer on 127.0.0.1:{self.route.backend_port} yet (still starting?)\n",
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        data = request.content if request.body_exists else None
        try:
            upstream = await self.session.request(
                request.method,
                self._url(request),
                headers=upstream_headers(request),
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

    async def relay_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream = await self.session.ws_connect(
                self._url(request),
                headers=upstream_headers(request, websocket=True),
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
        connector = aiohttp.TCPConnector(limit=256, force_close=False)
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


def make_app(site: Site) -> web.Application:
    # client_max_size bounds only what the proxy itself reads (the login form); forwarded bodies stream.
    app = web.Application(client_max_size=64 * 1024, handler_args={"max_field_size": 65536})
    app.router.add_route("*", "/{tail:.*}", site.handle)

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
    """Listen on every route's public port until ``stop`` is set."""
    runners = []
    try:
        for route in routes:
            runner = web.AppRunner(make_app(Site(gate, route)), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, listen, route.public_port, reuse_address=True).start()
            gate.log(
                f"listening on {listen}:{route.public_port} -> ComfyUI on 127.0.0.1:{route.backend_port}"
            )
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def gate_from_env(env: Mapping[str, str]) -> Gate:
    source = resolve_token(env, create=False)
    if source is None:
        raise AuthError("no token: set ZR4_AUTH_TOKEN, or ZR4_AUTH_DIR to the folder zr4 start keeps it in")
    trust = env_bool("ZR4_AUTH_TRUST_FORWARDED", bool(env.get("RUNPOD_POD_ID")), env)
    return Gate(TokenChecker(source.token), trust_forwarded=trust)


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
