"""The login page: one password field, no script, no external resource."""

from __future__ import annotations

import html
from urllib.parse import unquote

LOGIN_PATH = "/zr4/login"
LOGOUT_PATH = "/zr4/logout"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>zr4 · log in to ComfyUI</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #202020; color: #ddd; display: flex;
  min-height: 100vh; margin: 0; align-items: center; justify-content: center; }}
form {{ background: #2b2b2b; padding: 2em; border-radius: 8px; width: min(26em, 90vw); }}
input {{ width: 100%; box-sizing: border-box; padding: .6em; margin: .6em 0 1em; font-size: 1em; }}
button {{ padding: .6em 1.4em; font-size: 1em; }}
.message {{ color: #f88; }}
small {{ color: #999; }}
</style>
</head>
<body>
<form method="post" action="{action}">
<h1>ComfyUI</h1>
<p class="message" id="message">{message}</p>
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{next}">
<button type="submit" id="login">Log in</button>
<p><small>The token is the pod's <code>ZR4_AUTH_TOKEN</code> secret, or the file named in the
container log (<code>/workspace/.zr4/auth/token</code> by default).</small></p>
</form>
</body>
</html>
"""


def safe_next(value: str | None) -> str:
    """A same-site path to return to after logging in; anything else (``//evil``, ``https://``) is ``/``."""
    if not value:
        return "/"
    decoded = unquote(value)
    if (
        not value.startswith("/")
        or decoded.startswith("//")
        or "\\" in decoded
        or value.startswith(LOGIN_PATH)
    ):
        return "/"
    if any(ord(ch) < 32 for ch in decoded):
        return "/"
    return value


def login_page(next_path: str, message: str = "") -> str:
    return _PAGE.format(
        action=html.escape(LOGIN_PATH, quote=True),
        next=html.escape(safe_next(next_path), quote=True),
        message=html.escape(message),
    )
