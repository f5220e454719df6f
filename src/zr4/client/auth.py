"""The credentials zr4's own clients send to ComfyUI through the proxy (`zr4 health`, `zr4 dance`).

They find the token the way the proxy does (``ZR4_AUTH_TOKEN``, else the token file in
``ZR4_AUTH_DIR``), so inside the pod they work with a generated token too; with ``ZR4_AUTH=off``
or no token anywhere they send nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from zr4.core.auth_settings import AuthError, auth_enabled, resolve_token


def client_token(env: Mapping[str, str] | None = None) -> str | None:
    """The token to send, or None. A value the proxy would refuse (too short) is sent as given: the
    proxy's 401 then says what is wrong, where the client could only guess."""
    environ = os.environ if env is None else env
    try:
        if not auth_enabled(environ):
            return None
        source = resolve_token(environ, create=False)
    except AuthError:
        return environ.get("ZR4_AUTH_TOKEN", "").strip() or None
    return source.token if source is not None else None


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or ``{}`` when authentication is off or no token is known."""
    token = client_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}
