"""Reading zr4's environment variables (docs/reference/environment.md) in one way everywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
    raw = env_str(name, None, environ)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise error(f"{name}={raw!r} must be at least {minimum}")
    return value


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
    raw = env_str(name, None, environ)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not a number") from None
    if not zero_ok and not value > 0:
        raise error(f"{name}={raw!r} must be more than 0")
    if not value >= 0:
        raise error(f"{name}={raw!r} must not be negative")
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
