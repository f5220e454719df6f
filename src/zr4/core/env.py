"""Reading zr4's environment variables (docs/reference/environment.md) in one way everywhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

_Number = TypeVar("_Number", int, float)


class EnvError(ValueError):
    """An environment variable holds a value zr4 cannot use."""


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case); unset means ``default``."""
    source = os.environ if environ is None else environ
    raw = source.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvError(f"{name}={raw!r} is not a boolean: use true or false")


def env_str(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The stripped value, or ``default`` when unset or empty."""
    source = os.environ if environ is None else environ
    raw = source.get(name)
    if raw is None or not raw.strip():
        return default
    return raw.strip()


def env_int(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    *,
    minimum: int | None = None,
    error: type[Exception] = EnvError,
) -> int:
    """A whole number, at least ``minimum`` when given; unset or empty means ``default``.

    ``error`` is the class raised, so a caller's own family (sync settings, auth) keeps its type.
    """

    def problem(value: int) -> str | None:
        return f"must be at least {minimum}" if minimum is not None and value < minimum else None

    return _env_number(name, default, environ, int, "a whole number", problem, error)


def env_float(
    name: str,
    default: float,
    environ: Mapping[str, str] | None = None,
    *,
    zero_ok: bool = True,
    error: type[Exception] = EnvError,
) -> float:
    """A number of seconds, bytes or connections: never negative, and above 0 unless ``zero_ok``.

    Unset or empty means ``default``; ``error`` is the class raised.
    """

    def problem(value: float) -> str | None:
        if not zero_ok and not value > 0:
            return "must be more than 0"
        return None if value >= 0 else "must not be negative"  # NaN is neither

    return _env_number(name, default, environ, float, "a number", problem, error)


def _env_number(
    name: str,
    default: _Number,
    environ: Mapping[str, str] | None,
    parse: Callable[[str], _Number],
    kind: str,
    problem: Callable[[_Number], str | None],
    error: type[Exception],
) -> _Number:
    raw = env_str(name, None, environ)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not {kind}") from None
    trouble = problem(value)
    if trouble is not None:
        raise error(f"{name}={raw!r} {trouble}")
    return value


def port_number(raw: str, shown: str, error: type[Exception] = EnvError) -> int:
    """``raw`` as a TCP port (1-65535), in ASCII digits only: ``int()`` would also take ``+80``,
    ``8_080`` or other scripts' digits. ``shown`` names the setting in the message."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise error(f"{shown}={raw!r} is not a port number")
    return int(text)


def env_port(
    name: str, default: int, environ: Mapping[str, str] | None = None, *, error: type[Exception] = EnvError
) -> int:
    """A TCP port (:func:`port_number`); unset or empty means ``default``."""
    raw = env_str(name, None, environ)
    return default if raw is None else port_number(raw, name, error)
