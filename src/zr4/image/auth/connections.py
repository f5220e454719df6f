"""How many connections the proxy holds and for how long: timeouts, and a cap below the open-file limit.

What aiohttp 3.14.5 does on its own (aiohttp/web_protocol.py, ``RequestHandler``): a connection
waiting for its next request is closed ``keepalive_timeout`` after it opened or after its last
response (default 3,630 s), with no shorter limit on how long the request's headers may take; and
connections are accepted until the process has no file descriptor left, after which asyncio's
accept loop logs "socket.accept() out of system resource" with a traceback for every pending
connection, over and over (asyncio/selector_events.py, ``_accept_connection``). So here:

- **header timeout**: a request's headers must be complete this long after its first byte (or
  after the connection opened); otherwise the connection is closed. Dripping bytes does not extend it.
- **idle timeout**: aiohttp's ``keepalive_timeout``, for a connection between requests.
- **a cap** below the open-file limit (each proxied connection may hold a second descriptor towards
  ComfyUI): at the cap a new connection makes the one idle longest close (a connection waiting
  for a request, or still sending its headers, costs an attacker nothing to open); only when
  every connection is in the middle of a request does the new one get ``503`` and close.
  Reaching the cap is logged at most once a minute, never per connection (and so is a failed
  ``accept()``: :class:`zr4.image.auth.logs.QuietAccept`).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from zr4.core.env import env_float, env_int
from zr4.image.auth.logs import Throttle

Log = Callable[[str], None]
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 75.0  # nginx's default keepalive_timeout; longer than a browser waits to reuse one
MAX_CONNECTIONS = 1024
RESERVED_FILES = 32  # the interpreter's own files, the listening sockets, logs (about 15 measured)
REFUSAL_LINGER_S = 2.0  # a refused connection reads what the client already sent, then closes
_BUSY_TEXT = b"too many connections: try again in a moment\n"
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    + f"Content-Length: {len(_BUSY_TEXT)}\r\n".encode()
    + b"Retry-After: 5\r\nConnection: close\r\n\r\n"
    + _BUSY_TEXT
)


def open_file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def accept_burst(files: int | None = None) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go.

    Those all hold a descriptor before the guard sees any of them (and as many closed to make room
    are released only on the next turn of the loop), so the cap leaves room for two bursts.
    """
    files = open_file_limit() if files is None else files
    return max(16, min(128, files // 8))


def default_max_connections(files: int | None = None) -> int:
    """Half of what the open-file limit leaves (one descriptor each way per proxied request)."""
    files = open_file_limit() if files is None else files
    return max(4, min(MAX_CONNECTIONS, (files - RESERVED_FILES - 2 * accept_burst(files)) // 2))


@dataclass(frozen=True)
class Limits:
    max_connections: int
    header_timeout_s: float = HEADER_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S


@dataclass
class _Connection:
    busy: int = 0
    header_deadline: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None


class ConnectionGuard:
    """The open connections of every public port of one proxy, oldest idle first."""

    def __init__(self, limits: Limits, log: Log) -> None:
        self.limits = limits
        self._report = Throttle(log, per_minute=1)  # a cap reached again and again is one line a minute
        self._open: OrderedDict[web.RequestHandler, _Connection] = OrderedDict()
        self._at_cap = False
        self.refusing = 0  # refused connections still reading what their client sent

    def __len__(self) -> int:
        return len(self._open)

    def factory(self, manager: web.Server, **handler_args: Any) -> Callable[[], GuardedHandler]:
        """The protocol factory for ``loop.create_server``: aiohttp's handler, with this guard."""
        handler_args.setdefault("keepalive_timeout", self.limits.idle_timeout_s)

        def make() -> GuardedHandler:
            return GuardedHandler(self, manager, loop=asyncio.get_running_loop(), **handler_args)

        return make

    def admit(self, handler: web.RequestHandler) -> bool:
        if len(self._open) >= self.limits.max_connections:
            if not self._at_cap:
                self._at_cap = True
                self._report(
                    f"{self.limits.max_connections} connections open (the limit; open-file limit "
                    f"{open_file_limit()}): the idle ones are closed to make room, new ones are "
                    "refused while all are busy"
                )
            idle = next((h for h, state in self._open.items() if not state.busy), None)
            if idle is None:
                return False
            self._open.pop(idle).stop_timer()  # still at the cap: the one coming in takes its place
            idle.force_close()
        self._open[handler] = state = _Connection()
        self._await_headers(handler, state)
        return True

    def closed(self, handler: web.RequestHandler) -> None:
        state = self._open.pop(handler, None)
        if state is not None:
            state.stop_timer()
        if len(self._open) < self.limits.max_connections:
            self._at_cap = False

    def received(self, handler: web.RequestHandler) -> None:
        """Bytes came in: between requests, they start the next request's header timeout."""
        state = self._open.get(handler)
        if state is not None and not state.busy and state.header_deadline is None:
            self._await_headers(handler, state)

    def _await_headers(self, handler: web.RequestHandler, state: _Connection) -> None:
        def expire() -> None:
            state.header_deadline = None
            if not state.busy:
                handler.force_close()

        state.header_deadline = asyncio.get_running_loop().call_later(self.limits.header_timeout_s, expire)

    @contextlib.contextmanager
    def busy(self, handler: web.RequestHandler) -> Iterator[None]:
        """While a request is handled on ``handler`` (its headers are in): not idle, no header timeout."""
        state = self._open.get(handler)
        if state is None:
            yield
            return
        state.busy += 1
        state.stop_timer()
        try:
            yield
        finally:
            state.busy -= 1
            if not state.busy and handler in self._open:
                self._open.move_to_end(handler)  # idle from now: the last to be closed for room


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, admitted and timed by a :class:`ConnectionGuard`.

    A connection the guard refuses gets ``503`` and is closed once its client has finished
    sending (or after :data:`REFUSAL_LINGER_S`): closing on unread bytes makes the kernel send a
    reset, which can destroy the ``503`` before the client reads it.
    """

    __slots__ = ("_admitted", "_guard", "_refusal")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._refusal: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard.admit(self):
            self._admitted = True
            super().connection_made(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_ANSWER)
        if self._guard.refusing >= accept_burst() or not transport.can_write_eof():
            transport.close()
            return
        self._guard.refusing += 1
        transport.write_eof()
        self._refusal = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.abort)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._guard.closed(self)
            super().connection_lost(exc)
        elif self._refusal is not None:
            self._refusal.cancel()
            self._refusal = None
            self._guard.refusing -= 1

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._guard.received(self)
            super().data_received(data)

    def eof_received(self) -> None:
        if self._admitted:
            super().eof_received()
        # Refused: returning None lets the transport close now that the client has sent everything.


def limits_from_env(env: Mapping[str, str], log: Log) -> Limits:
    """``ZR4_PROXY_MAX_CONNECTIONS``, ``ZR4_PROXY_HEADER_TIMEOUT_S``, ``ZR4_PROXY_IDLE_TIMEOUT_S``.

    A connection cap above what the open-file limit allows is lowered to that, with a line saying so.
    """
    room = default_max_connections()
    wanted = env_int("ZR4_PROXY_MAX_CONNECTIONS", room, env, minimum=1)
    if wanted > room:
        log(f"ZR4_PROXY_MAX_CONNECTIONS={wanted} is more than the open-file limit allows: using {room}")
    return Limits(
        max_connections=min(wanted, room),
        header_timeout_s=env_float("ZR4_PROXY_HEADER_TIMEOUT_S", HEADER_TIMEOUT_S, env, zero_ok=False),
        idle_timeout_s=env_float("ZR4_PROXY_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S, env, zero_ok=False),
    )
