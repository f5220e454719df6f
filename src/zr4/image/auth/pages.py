"""The login page: one password field, no script, no external resource."""

from __future__ import annotations

import html
import re
from urllib.parse import unquote, urljoin, urlsplit

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


# RFC 3986 section 3.3/3.4: what a path and query may hold once percent-encoded (no space, no '#').
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_MAX_NEXT = 4096
_HERE = "http://zr4.invalid/"


def _stays_here(reference: str) -> bool:
    """Whether a browser resolving ``reference`` on this page stays on this host with a one-slash path."""
    if reference.startswith("//"):  # browsers read any number of leading slashes as a host to follow
        return False
    resolved = urlsplit(urljoin(_HERE, reference))
    return resolved.netloc == urlsplit(_HERE).netloc and not resolved.path.startswith("//")


def safe_next(value: str | None) -> str:
    """A local path to return to after logging in; anything else is ``/``.

    Refused: anything not a percent-encoded path (``https://…``, spaces, control or non-ASCII
    characters, which cannot go into a ``Location`` header), and any path that a browser or the
    proxy would read as another host once dot segments and escapes are resolved (``//evil``,
    ``/.//evil``, ``/%2e//evil``, ``/\\evil``).
    """
    if not value or len(value) > _MAX_NEXT or not value.startswith("/"):
        return "/"
    if not _URL_CHARACTERS.fullmatch(value) or value.startswith(LOGIN_PATH):
        return "/"
    decoded = unquote(value)
    if "\\" in decoded or any(ord(ch) < 32 or ord(ch) == 127 for ch in decoded):
        return "/"
    if not (_stays_here(value) and _stays_here(decoded.split("?", 1)[0])):
        return "/"
    return value


def login_page(next_path: str, message: str = "") -> str:
    return _PAGE.format(
        action=html.escape(LOGIN_PATH, quote=True),
        next=html.escape(safe_next(next_path), quote=True),
        message=html.escape(message),
    )
