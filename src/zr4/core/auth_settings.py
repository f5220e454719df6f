"""Whether authentication is on, where the token comes from, and which ports the proxy and ComfyUI use.

- ``ZR4_AUTH``: unset, empty, ``on`` or ``true`` means on; ``off`` (or ``false``/``0``/``no``) turns it
  off. An empty value counts as on because a template field left blank must not open the pod.
- ``ZR4_AUTH_TOKEN``: the token (a RunPod secret, or compose's ``.env``). At least 16 characters.
- Without it, the token file ``token`` in ``ZR4_AUTH_DIR`` (default ``/workspace/.zr4/auth``, on the
  volume; folder 0700, file 0600, either set back when found wider) is read, or created with a
  fresh random token, so it survives restarts. (The variable names no "token": `zr4 validate`
  treats such names as credentials.)

Port layout: ComfyUI instance *i* is published on ``COMFYUI_PORT + i`` (default 8188) by the proxy;
ComfyUI itself listens on ``127.0.0.1`` at ``ZR4_COMFYUI_BACKEND_PORT + i`` (default the public port
+ 10000, so 18188). One proxy process serves every instance, one listening socket per instance.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zr4.core import image_layout
from zr4.core.atomic import write_text_atomically
from zr4.core.env import env_port, env_str, port_number
from zr4.core.redact import register_secret
from zr4.errors import Zr4Error

DEFAULT_AUTH_DIR = image_layout.AUTH_DIR
TOKEN_FILE_NAME = "token"
BACKEND_PORT_OFFSET = 10000
MIN_TOKEN_LENGTH = 16
# Generated tokens carry this prefix so `zr4 validate`'s secret scan recognises one pasted into a file.
TOKEN_PREFIX = "zr4_"
_OFF = {"off", "false", "0", "no"}
_ON = {"", "on", "true", "1", "yes"}
# A RunPod template's `{{ RUNPOD_SECRET_X }}` left as is (no such secret): a public string, never a token.
_PLACEHOLDER = re.compile(r"^\{\{.*\}\}$")


class AuthError(Zr4Error):
    """The authentication settings cannot be used; the message says which variable and how to fix it."""


def generate_token() -> str:
    """256 random bits, URL-safe (``zr4_`` + 43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def auth_enabled(env: Mapping[str, str]) -> bool:
    raw = env.get("ZR4_AUTH", "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise AuthError(
        f"ZR4_AUTH={raw!r} is not understood: leave it unset (authentication on) or set it to off"
    )


def check_token(token: str, where: str) -> str:
    """A usable token, or an error that names ``where`` it came from (never the token itself)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise AuthError(
            f"{where} is too short ({len(token)} characters, at least {MIN_TOKEN_LENGTH}); "
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise AuthError(f"{where} contains spaces or control characters; use letters, digits, - and _")
    return token


@dataclass(frozen=True)
class TokenSource:
    """The token and where it came from: ``env``, ``file`` or ``generated`` (with the file's path)."""

    token: str
    origin: str
    path: Path | None = None
    note: str = ""

    def describe(self) -> str:
        return f"{self.note}; {self._where()}" if self.note else self._where()

    def _where(self) -> str:
        if self.origin == "env":
            return "token from ZR4_AUTH_TOKEN"
        if self.origin == "generated":
            return (
                f"no ZR4_AUTH_TOKEN set: generated a token and saved it to {self.path} (mode 0600, kept "
                f"across restarts); read it with `cat {self.path}` in the pod's terminal, or set "
                "ZR4_AUTH_TOKEN to choose your own"
            )
        return f"token from {self.path} (set ZR4_AUTH_TOKEN to use your own)"


TOKEN_VARIABLE = "ZR4_AUTH_TOKEN"


def without_token(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process that never calls ComfyUI through the proxy (ComfyUI itself, where every
    custom node runs; the sync daemon): everything but ``ZR4_AUTH_TOKEN``."""
    return {name: value for name, value in env.items() if name != TOKEN_VARIABLE}


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (0700), made if missing, tightened if wider.

    ``mkdir``'s mode covers only a folder it makes; one that was there (made by hand, by an older
    start, by an image) keeps whatever mode it had.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _tighten(folder: Path) -> None:
    """The token's folder back to 0700 where it is wider, if this user may change it."""
    try:
        if stat.S_IMODE(folder.stat().st_mode) & 0o077:
            os.chmod(folder, 0o700)
    except OSError:
        pass  # not ours (a read-only volume, another user's folder): the file's own 0600 still holds


def token_file(env: Mapping[str, str]) -> Path:
    return Path(env_str("ZR4_AUTH_DIR", DEFAULT_AUTH_DIR, env) or DEFAULT_AUTH_DIR) / TOKEN_FILE_NAME


def read_token_file(path: Path) -> str | None:
    """The token kept in ``path``, or None when there is none; tightens a too-open mode to 0600."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise AuthError(f"cannot read the token file {path} (ZR4_AUTH_DIR): {error.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        os.chmod(path, 0o600)
    return text or None


def resolve_token(env: Mapping[str, str], *, create: bool) -> TokenSource | None:
    """``ZR4_AUTH_TOKEN``, else the token file; with ``create`` a missing file is made (0600).

    Returns None only when ``create`` is false and there is no token anywhere.
    """
    given = env_str("ZR4_AUTH_TOKEN", None, env)
    note = ""
    if given is not None and _PLACEHOLDER.match(given):
        note = (
            "WARNING: ZR4_AUTH_TOKEN is an unfilled template placeholder (no RunPod secret of that "
            "name?), ignored"
        )
        given = None
    if given is not None:
        return TokenSource(check_token(given, "ZR4_AUTH_TOKEN"), "env")
    path = token_file(env)
    kept = read_token_file(path)
    if kept is not None:
        register_secret(kept)  # in no variable, so named to the redaction here
        _tighten(path.parent)
        return TokenSource(check_token(kept, f"the token in {path}"), "file", path, note)
    if not create:
        return None
    token = generate_token()
    register_secret(token)
    try:
        private_dir(path.parent)
        write_text_atomically(path, token + "\n", mode=0o600)
    except OSError as error:
        raise AuthError(
            f"cannot keep the generated token in {path} (ZR4_AUTH_DIR): {error.strerror}; "
            "set ZR4_AUTH_TOKEN or make the volume writable"
        ) from None
    return TokenSource(token, "generated", path, note)


@dataclass(frozen=True)
class Route:
    """One ComfyUI instance: the proxy listens on ``public_port``, ComfyUI on 127.0.0.1:``backend_port``."""

    public_port: int
    backend_port: int

    def spec(self) -> str:
        return f"{self.public_port}={self.backend_port}"


def routes_for(public_ports: Sequence[int], env: Mapping[str, str]) -> list[Route]:
    """The backend port of each public port (see the module docstring)."""
    if not public_ports:
        return []
    first = public_ports[0]
    base = env_port("ZR4_COMFYUI_BACKEND_PORT", first + BACKEND_PORT_OFFSET, env, error=AuthError)
    routes = []
    for public in public_ports:
        backend = base + (public - first)
        if not 0 < backend < 65536:
            raise AuthError(
                f"ComfyUI's loopback port for public port {public} would be {backend}; "
                "set ZR4_COMFYUI_BACKEND_PORT to a free port below 65536"
            )
        if backend in public_ports:
            raise AuthError(f"ZR4_COMFYUI_BACKEND_PORT puts ComfyUI on public port {backend}; pick another")
        routes.append(Route(public, backend))
    return routes


def parse_routes(spec: str) -> list[Route]:
    """``"8188=18188,8189=18189"`` (what :meth:`Route.spec` writes) back into routes."""
    routes = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        public, sep, backend = item.partition("=")
        if not sep:
            raise AuthError(f"ZR4_PROXY_ROUTES item {item!r} is not PUBLIC=BACKEND")
        routes.append(
            Route(
                port_number(public, "ZR4_PROXY_ROUTES public port", AuthError),
                port_number(backend, "ZR4_PROXY_ROUTES backend", AuthError),
            )
        )
    if not routes:
        raise AuthError("ZR4_PROXY_ROUTES names no port")
    return routes
