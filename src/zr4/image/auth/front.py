"""What `zr4 start` does about authentication: pick ComfyUI's address, run the proxy in front of it.

With authentication on (the default), ComfyUI listens on ``127.0.0.1`` at a backend port and the
proxy, a supervised child process (restarted if it dies, like the sync daemon), takes the public
port. With ``ZR4_AUTH=off`` ComfyUI listens on the public port itself, as it would without zr4, and
every start logs a warning.

Several ComfyUI instances (one per GPU on ports 8188+i) are served by the one proxy process: pass
every public port to :func:`plan_front`, and ask :meth:`Front.comfyui_address` for each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from zr4.core.auth_settings import Route, TokenSource, auth_enabled, resolve_token, routes_for

Log = Callable[[str], None]
PUBLIC_LISTEN = "0.0.0.0"
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
OFF_WARNING = (
    "WARNING: ZR4_AUTH=off: ComfyUI listens on port {port} with NO authentication; anyone who can "
    "reach the port (RunPod makes it public) can run work on this GPU and read every output"
)


@dataclass
class Front:
    """The plan for this start, and the running proxy once :meth:`start` is called."""

    enabled: bool
    routes: list[Route]
    token: TokenSource | None = None
    supervisor: object | None = field(default=None, repr=False)

    def comfyui_address(self, public_port: int) -> tuple[str, int]:
        """(listen address, port) for the ComfyUI instance published on ``public_port``."""
        if not self.enabled:
            return PUBLIC_LISTEN, public_port
        for route in self.routes:
            if route.public_port == public_port:
                return LOOPBACK, route.backend_port
        raise KeyError(f"no route for public port {public_port}")

    def start(self, env: Mapping[str, str], log: Log) -> None:
        if not self.enabled:
            return
        from zr4.image.supervise import Supervisor

        child_env = dict(env)
        child_env["ZR4_PROXY_ROUTES"] = ",".join(route.spec() for route in self.routes)
        supervisor = Supervisor("auth-proxy", [sys.executable, "-m", "zr4.image.auth.proxy"], child_env, log)
        supervisor.start()
        self.supervisor = supervisor

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(STOP_TIMEOUT_S)  # type: ignore[attr-defined]


def plan_front(env: Mapping[str, str], public_ports: Sequence[int], log: Log) -> Front:
    """Decide on/off, resolve (or create) the token and the port layout; logs one line, never the token."""
    if not auth_enabled(env):
        for port in public_ports:
            log(OFF_WARNING.format(port=port))
        return Front(False, [])
    token = resolve_token(env, create=True)
    assert token is not None  # create=True always yields one
    routes = routes_for(public_ports, env)
    ports = ", ".join(f"{r.public_port} -> ComfyUI 127.0.0.1:{r.backend_port}" for r in routes)
    log(f"authentication on ({ports}); {token.describe()}")
    return Front(True, routes, token)
