"""`zr4 health`: what the Dockerfile's HEALTHCHECK and compose's healthcheck ask.

Healthy means ComfyUI answers HTTP on its port (``/system_stats``, a route of ComfyUI's
``server.py``), the boot's model download has not failed (while it runs the pod is healthy: ComfyUI
answers and jobs wait for it; :mod:`zr4.core.boot_status`), and, when ``ENABLE_R2_SYNC=true``, the
sync daemon's heartbeat is recent and its process alive. ``--json`` prints the checks and the boot's
whole status (each file's bytes, the rate, the time left) as one JSON document.

With authentication on, the port is the auth proxy's: the check sends the bearer token (from
``ZR4_AUTH_TOKEN`` or the token file, :mod:`zr4.client.auth`), so it proves the proxy and
ComfyUI behind it both answer, and nothing is left open without a token for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zr4.core import boot_status as bs
from zr4.core.env import EnvError, env_bool, env_port

# Heartbeats are written every 2 s (zr4.image.sync.daemon); 30 s allows a slow upload tick.
SYNC_MAX_AGE_S = 30.0
# Any of these set means the user meant to configure the sync; none set means "not configured".
SYNC_SETTINGS = (
    "R2_ENDPOINT",
    "R2_ACCOUNT_ID",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class HealthCheck:
    name: str
    ok: bool
    detail: str


def comfyui_port(environ: Mapping[str, str]) -> int:
    """``COMFYUI_PORT`` (default 8188): the port `zr4 start` gives ComfyUI."""
    return env_port("COMFYUI_PORT", 8188, environ)


def check_comfyui(
    port: int, host: str = "127.0.0.1", timeout_s: float = 5.0, headers: Mapping[str, str] | None = None
) -> HealthCheck:
    import urllib.error  # here, not at the top: `zr4 start` imports this module for comfyui_port
    import urllib.request

    url = f"http://{host}:{port}/system_stats"
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(65536)
            status = response.status
    except urllib.error.HTTPError as error:
        if error.code == 401:
            why = (
                "the token was refused"
                if headers
                else "no token found (ZR4_AUTH_TOKEN, or the token file in ZR4_AUTH_DIR)"
            )
            return HealthCheck("comfyui", False, f"{url} answered HTTP 401: {why}")
        return HealthCheck("comfyui", False, f"{url} answered HTTP {error.code}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return HealthCheck("comfyui", False, f"{url} does not answer ({reason})")
    try:
        stats = json.loads(body)
        version = stats.get("system", {}).get("comfyui_version", "?")
    except (ValueError, AttributeError):
        return HealthCheck("comfyui", False, f"{url} answered HTTP {status} but not with JSON")
    return HealthCheck("comfyui", True, f"answers on port {port} (ComfyUI {version})")


def check_sync(environ: Mapping[str, str]) -> HealthCheck | None:
    """None when the sync is off; otherwise whether its daemon is alive.

    ENABLE_R2_SYNC defaults to true in the compose file and the RunPod template, so a pod with no R2
    settings at all is normal: `zr4 start` then leaves outputs on the volume, and that is healthy. Only
    a half-done configuration (some settings, not all) or a dead daemon is unhealthy.
    """
    if not env_bool("ENABLE_R2_SYNC", False, environ):
        return None
    if not any((environ.get(name) or "").strip() for name in SYNC_SETTINGS):
        return HealthCheck(
            "r2-sync", True, "not configured (no R2_ENDPOINT or credentials): outputs stay on the volume"
        )
    from zr4.image.sync.daemon import daemon_is_alive
    from zr4.image.sync.settings import settings_from_env

    try:
        settings = settings_from_env(environ)
    except EnvError as error:
        return HealthCheck("r2-sync", False, f"enabled but misconfigured: {error}")
    if daemon_is_alive(settings, SYNC_MAX_AGE_S):
        return HealthCheck("r2-sync", True, f"daemon alive (heartbeat {settings.heartbeat_path})")
    return HealthCheck(
        "r2-sync",
        False,
        f"no live daemon: heartbeat {settings.heartbeat_path} missing, stale or from a dead process",
    )


def check_models(status: Mapping[str, Any] | None) -> HealthCheck | None:
    """None without a boot status (no `zr4 start` in this container); a download in progress is
    healthy, a failed or silent one is not."""
    if status is None:
        return None
    state = bs.models_state(status)
    summary = bs.models_summary(status)
    failure = bs.models_failure(status)
    if failure is not None:
        return HealthCheck("models", False, f"download failed: {failure}")
    if bs.stalled(status):
        return HealthCheck(
            "models", False, f"the download stopped reporting {bs.age_s(status):.0f} s ago ({summary})"
        )
    if state in (bs.PLANNING, bs.DOWNLOADING):
        return HealthCheck("models", True, f"downloading: {summary}")
    return HealthCheck("models", True, summary)


def check_health(environ: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> list[HealthCheck]:
    env = os.environ if environ is None else environ
    from zr4.client.auth import auth_headers

    checks = [check_comfyui(comfyui_port(env), timeout_s=timeout_s, headers=auth_headers(env))]
    models = check_models(bs.read_status(bs.status_path(env)))
    if models is not None:
        checks.append(models)
    sync = check_sync(env)
    if sync is not None:
        checks.append(sync)
    return checks


def format_checks(checks: list[HealthCheck]) -> list[str]:
    return [f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}" for check in checks]


def health_json(checks: list[HealthCheck], environ: Mapping[str, str] | None = None) -> str:
    """The checks and the boot's status (None without one) as one JSON document."""
    env = os.environ if environ is None else environ
    document = {
        "ok": all(check.ok for check in checks),
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        "boot": bs.read_status(bs.status_path(env)),
    }
    return json.dumps(document, indent=2)


def main(argv: list[str] | None = None) -> int:
    """``python -m zr4.image.health [--json]``: the same as ``zr4 health``; exit 0 healthy, 1 not."""
    import sys

    from zr4.core.redact import redact_process_output

    redact_process_output()
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        checks = check_health()
    except EnvError as error:
        checks = [HealthCheck("config", False, str(error))]
    if as_json:
        print(health_json(checks), flush=True)
    else:
        for line in format_checks(checks):
            print(line, flush=True)
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
