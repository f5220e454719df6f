"""The boot's status file: what `zr4 start` is doing, for the status page, `zr4 health` and jobs.

`zr4 start` writes it (:mod:`zr4.image.boot_report`) from its first second: the phase, each model
file's bytes done of total, the rate, the time left, whether each ComfyUI answers, and when
something failed, the reason and its fix. Three readers: the auth proxy serves it behind its login
(the status page and ``/zr4/status.json``), `zr4 health` reports it, and a job (`zr4 dance`, the
serverless worker) waits on it for the models it needs.

The file lives in the container's temporary folder, not on the volume: it describes this
container's boot (a network volume may be attached to several pods and outlives the boot), and it
must be writable when the volume is full, which is one of the failures it reports.
``ZR4_BOOT_STATUS`` names another path; `zr4 start` passes the one it writes to its children.

Standard library only; every reader is tolerant (a missing or half-understood file is "no status").
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zr4.core import image_layout
from zr4.core.documents import read_json_object

VARIABLE = "ZR4_BOOT_STATUS"
VERSION = 1
# The writer rewrites the file at least this often while the boot runs, so a reader can tell a
# download that stopped reporting (a dead start process) from a slow one.
HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0

# models.state
PLANNING = "planning"  # asking the Hub which files and how large
DOWNLOADING = "downloading"
COMPLETE = "complete"
FAILED = "failed"
SKIPPED = "skipped"  # SKIP_MODEL_DOWNLOAD=true: the files on disk are used as they are
OFF = "off"  # ENABLE_STEADYDANCER=false: no models needed
# The download is over, one way or the other (a job waits while it is not).
MODELS_SETTLED = (COMPLETE, FAILED, SKIPPED, OFF)
MODELS_USABLE = (COMPLETE, SKIPPED, OFF)

# comfyui.state
COMFYUI_WAITING = "waiting"  # not launched yet (steps 2-4)
COMFYUI_STARTING = "starting"
COMFYUI_READY = "ready"
COMFYUI_EXITED = "exited"


def status_path(environ: Mapping[str, str] | None = None) -> Path:
    """``ZR4_BOOT_STATUS``, else the image's default in the container's temporary folder."""
    env = os.environ if environ is None else environ
    value = (env.get(VARIABLE) or "").strip()
    return Path(value) if value else Path(image_layout.BOOT_STATUS_FILE)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status document, or None when there is none this reader understands."""
    data = read_json_object(path)
    if data is None or data.get("version") != VERSION:
        return None
    if not isinstance(data.get("models"), dict) or not isinstance(data.get("comfyui"), dict):
        return None
    return data


def age_s(status: Mapping[str, Any], now: float | None = None) -> float:
    """Seconds since the writer last wrote; a reader on another machine gets it from the proxy
    (``view.age_s``), measured where the file is, so the two clocks never meet."""
    view = status.get("view")
    if isinstance(view, Mapping) and isinstance(view.get("age_s"), (int, float)):
        return float(view["age_s"])
    updated = status.get("updated")
    if not isinstance(updated, (int, float)):
        return float("inf")
    return max(0.0, (time.time() if now is None else now) - float(updated))


def models_state(status: Mapping[str, Any]) -> str:
    return str(status.get("models", {}).get("state", ""))


def models_summary(status: Mapping[str, Any]) -> str:
    """One line on the download (bytes, rate, time left, files), as the writer formatted it."""
    models = status.get("models", {})
    return str(models.get("summary") or models.get("state") or "")


def models_failure(status: Mapping[str, Any]) -> str | None:
    """``<reason>; fix: <what to do>`` when the download failed, else None."""
    if models_state(status) != FAILED:
        return None
    error = status.get("models", {}).get("error") or {}
    message = str(error.get("message") or "the model download failed (see the container log)")
    fix = str(error.get("fix") or "")
    return f"{message}; fix: {fix}" if fix else message


def stalled(status: Mapping[str, Any], now: float | None = None) -> bool:
    """The download is not over but its writer stopped reporting (the start process is gone)."""
    return models_state(status) not in MODELS_SETTLED and age_s(status, now) > STALE_AFTER_S


def comfyui_ready(status: Mapping[str, Any], public_port: int | None = None) -> bool:
    """Whether ComfyUI answers: the instance published on ``public_port``, or every instance."""
    comfyui = status.get("comfyui", {})
    ready = {int(port) for port in comfyui.get("ready", []) if isinstance(port, int)}
    if public_port is not None:
        return public_port in ready
    ports = [int(port) for port in comfyui.get("ports", []) if isinstance(port, int)]
    return bool(ports) and all(port in ready for port in ports)
