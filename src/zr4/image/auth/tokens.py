"""Checking a presented token, and the session cookie a browser gets after logging in.

Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`, so the time taken depends
neither on where the first differing character is nor on the presented token's length.

The cookie is stateless: ``v1.<issued unix time>.<HMAC-SHA256(key, "v1.<issued>")>`` with a key
derived from the token. It never contains the token; changing the token ends every session; a
restart of the proxy keeps them.
"""

from __future__ import annotations

import hashlib
import hmac
import time

COOKIE_NAME = "zr4_session"
SESSION_MAX_AGE_S = 30 * 24 * 3600
_CLOCK_SKEW_S = 300


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class TokenChecker:
    """Everything the proxy needs to know about the token, without keeping it around in clear."""

    def __init__(self, token: str, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self._token_digest = _digest(token)
        self._session_key = hmac.new(_digest(token), b"zr4 session cookie v1", hashlib.sha256).digest()
        self.max_age_s = max_age_s

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(_digest(presented), self._token_digest)

    def _signature(self, issued: int) -> str:
        return hmac.new(self._session_key, f"v1.{issued}".encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"v1.{issued}.{self._signature(issued)}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
            return False
        issued = int(parts[1])
        current = time.time() if now is None else now
        if issued > current + _CLOCK_SKEW_S or current - issued > self.max_age_s:
            return False
        return hmac.compare_digest(parts[2].encode(), self._signature(issued).encode())


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
