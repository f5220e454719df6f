"""Checking a presented token, and the session cookie a browser gets after logging in.

Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`, so the time taken depends
neither on where the first differing character is nor on the presented token's length.

The cookie is ``v2.<issued unix time>.<session id>.<HMAC-SHA256(key, "v2.<issued>.<id>")>`` with a
key derived from the token and 128 random bits of id, so no two logins get the same cookie. It
never contains the token; changing the token ends every session; a restart of the proxy keeps
them; a logout ends one for good by revoking its id (:mod:`zr4.image.auth.revoked`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from zr4.image.auth.revoked import RevokedSessions

COOKIE_NAME = "zr4_session"
# Over https the cookie carries the __Host- prefix (RFC 6265bis section 4.1.3.2): a browser then keeps
# it only if it is Secure, for Path=/ and without Domain, so no other host of the same site (another
# pod under the same parent domain) can set or replace it.
HOST_COOKIE_NAME = "__Host-" + COOKIE_NAME
SESSION_MAX_AGE_S = 30 * 24 * 3600
_CLOCK_SKEW_S = 300
# Checked before int(): a timestamp of thousands of digits is no number (and no session).
_SESSION = re.compile(r"v2\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([0-9a-f]{64})", re.ASCII)


@dataclass(frozen=True)
class Session:
    """What a valid cookie says: its id and when it expires (unix time)."""

    session_id: str
    expires: int


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class TokenChecker:
    """Everything the proxy needs to know about the token, without keeping it around in clear."""

    def __init__(
        self, token: str, max_age_s: int = SESSION_MAX_AGE_S, revoked: RevokedSessions | None = None
    ) -> None:
        self._token_digest = _digest(token)
        self._session_key = hmac.new(_digest(token), b"zr4 session cookie v2", hashlib.sha256).digest()
        self.max_age_s = max_age_s
        self.revoked = RevokedSessions(None) if revoked is None else revoked

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(_digest(presented), self._token_digest)

    def _signature(self, issued: int, session_id: str) -> str:
        return hmac.new(self._session_key, f"v2.{issued}.{session_id}".encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        session_id = secrets.token_urlsafe(16)
        return f"v2.{issued}.{session_id}.{self._signature(issued, session_id)}"

    def session_of(self, value: str, now: float | None = None) -> Session | None:
        """The session a cookie value holds, if it is signed, unexpired and not revoked."""
        match = _SESSION.fullmatch(value)
        if match is None:
            return None
        issued, session_id, signature = int(match[1]), match[2], match[3]
        current = time.time() if now is None else now
        if issued > current + _CLOCK_SKEW_S or current - issued > self.max_age_s:
            return None
        if not hmac.compare_digest(signature.encode(), self._signature(issued, session_id).encode()):
            return None
        if session_id in self.revoked:
            return None
        return Session(session_id, issued + self.max_age_s)

    def session_valid(self, value: str, now: float | None = None) -> bool:
        return self.session_of(value, now) is not None


def cookie_name(https: bool) -> str:
    """The session cookie's name on a connection that is (or is not) https."""
    return HOST_COOKIE_NAME if https else COOKIE_NAME


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
