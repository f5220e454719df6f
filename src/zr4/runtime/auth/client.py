"""The credentials zr4's own clients send to ComfyUI through the proxy (`zr4 health`, `zr4 dance`).

They read the token the way the proxy does (``ZR4_AUTH_TOKEN``, else the token file); with
``ZR4_AUTH=off`` or no token anywhere they send nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from zr4.runtime.auth.settings import auth_enabled, resolve_token


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or ``{}`` when authentication is off or no token is known."""
    environ = os.environ if env is None else env
    if not auth_enabled(environ):
        return {}
    source = resolve_token(environ, create=False)
    return {"Authorization": f"Bearer {source.token}"} if source is not None else {}
