"""What the proxy writes to the container log: one line per event, never what a request carried.

aiohttp logs a request it cannot parse, or an error in a handler, as ``Error handling request``
with the exception and its traceback (aiohttp 3.14.5 web_protocol.py ``handle_error``); a parser
exception's text quotes the offending line (``Invalid header value char: b'Authorization: Bearer
…'``), which can be the token or a session cookie. Here such records become one line naming the
exception's type and, for an error in code, where it was raised, and a flood of them is cut to
a few lines a minute. asyncio's failed ``accept()`` is reported the same way (:class:`QuietAccept`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

Log = Callable[[str], None]
PREFIX = "[zr4 auth]"
LINES_PER_MINUTE = 20


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


class Throttle:
    """At most ``per_minute`` lines a minute; the next line let through counts the ones held back."""

    def __init__(
        self, log: Log, per_minute: int = LINES_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ):
        self.log = log
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._sent = 0
        self._held = 0

    def __call__(self, line: str) -> None:
        now = self._clock()
        if now - self._window_start >= 60:
            self._window_start, self._sent = now, 0
        if self._sent >= self.per_minute:
            self._held += 1
            return
        self._sent += 1
        held, self._held = self._held, 0
        self.log(line + (f" ({held} similar lines not shown)" if held else ""))


class OneLineHandler(logging.Handler):
    """aiohttp's log records as one line each: the message, the exception's type, no exception text."""

    def __init__(self, log: Log) -> None:
        super().__init__(logging.WARNING)
        self._write = Throttle(log)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except (TypeError, ValueError):
            line = str(record.msg)
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            line += f": {error.code} {type(error).__name__}"
        elif error is not None:
            frames = traceback.extract_tb(error.__traceback__)
            where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            line += f": {type(error).__name__}{where}"
        self._write(line[:300])


def quiet_aiohttp(log: Log) -> None:
    """Route the ``aiohttp`` loggers (server, web, websocket, client, access) through :class:`OneLineHandler`."""
    logger = logging.getLogger("aiohttp")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(OneLineHandler(log))
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class QuietAccept:
    """An event-loop exception handler that reports running out of descriptors once a minute.

    asyncio calls it for every failed ``accept()``, a traceback each, many times a second
    (asyncio/selector_events.py ``_accept_connection``); anything else goes to the loop's default
    handler.
    """

    def __init__(self, log: Log, clock: Callable[[], float] = time.monotonic) -> None:
        self._write = Throttle(log, per_minute=1, clock=clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        error = context.get("exception")
        reason = getattr(error, "strerror", None) or type(error).__name__
        self._write(f"cannot accept a connection: {reason}; lower ZR4_PROXY_MAX_CONNECTIONS")
