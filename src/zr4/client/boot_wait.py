"""A job that arrives during the boot waits for it: ComfyUI up, the models it needs in place.

`zr4 start` runs ComfyUI while the models still download (:mod:`zr4.image.boot_models`). ComfyUI
checks every loader's file name against the files in its model folders when a prompt is queued
(comfyanonymous/ComfyUI@f59f71cf:execution.py ``validate_inputs``: "Value not in list"), so a job
queued before its files are in would fail. Instead the job reads the boot's status
(:mod:`zr4.core.boot_status`: from zr4's auth proxy at ``/zr4/status.json``, or from the file where
the job runs in the container) and waits, reporting the download's progress, until ComfyUI answers
and the download is over. A failed download ends the job at once with its reason and fix; so does
a download that stopped reporting, and one that is not over after ``timeout_s``.

Then, whether or not there was a status to wait on, the workflow's model files are checked against
what ComfyUI offers (``GET /object_info/{node}``, the lists it validates with), so a file it lacks
is one line naming the node and the file rather than a rejected prompt.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zr4.client.comfy_api import ComfyClient
from zr4.core import boot_status as bs
from zr4.errors import Zr4Error

POLL_S = 1.0
REPORT_EVERY_S = 5.0
DEFAULT_WAIT_S = 3600.0  # 27 GB at 10 MB/s takes 45 minutes
# What a model loader's file input ends with (safetensors, GGUF, ONNX and its external data, torch).
MODEL_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".pt", ".pth", ".ckpt", ".sft")

StatusSource = Callable[[ComfyClient], Mapping[str, Any] | None]
Report = Callable[[str], None]


class ModelsUnavailable(Zr4Error):
    """The models a job needs are not there and will not come (or not in time); one line."""


def status_over_http(client: ComfyClient) -> Mapping[str, Any] | None:
    return client.boot_status()


def status_over_http_or_file(environ: Mapping[str, str]) -> StatusSource:
    """The proxy's status, else, for a ComfyUI on this machine (``ZR4_AUTH=off`` serves no proxy),
    the boot's status file: what `zr4 dance` in the container's terminal reads."""
    from_file = status_from_file(environ)

    def read(client: ComfyClient) -> Mapping[str, Any] | None:
        status: Mapping[str, Any] | None = client.boot_status()
        if status is None and urllib.parse.urlsplit(client.base_url).hostname in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            status = from_file(client)
        return status

    return read


def status_from_file(environ: Mapping[str, str]) -> StatusSource:
    """Read the boot's status file (``ZR4_BOOT_STATUS``, the image's default): for a job in the
    container itself, talking to ComfyUI directly (the serverless worker)."""
    path = bs.status_path(environ)

    def read(_client: ComfyClient) -> Mapping[str, Any] | None:
        return bs.read_status(path)

    return read


def pending(status: Mapping[str, Any]) -> str | None:
    """What the boot still does that a job must wait for, as one line; None: nothing."""
    models = bs.models_state(status)
    comfyui = status.get("comfyui", {})
    if comfyui.get("state") == bs.COMFYUI_EXITED:
        return None  # nothing to wait for: the job finds ComfyUI gone and says so
    view = status.get("view")
    ready = view.get("comfyui_ready") if isinstance(view, Mapping) else bs.comfyui_ready(status)
    if models in (bs.PLANNING, bs.DOWNLOADING):
        return f"waiting for the models: {bs.models_summary(status)}"
    if not ready:
        return "waiting for ComfyUI to start"
    return None


def wait_for_boot(
    clients: Sequence[ComfyClient],
    status_of: StatusSource,
    report: Report,
    check: Callable[[], None],
    sleep: Callable[[float], object],
    timeout_s: float = DEFAULT_WAIT_S,
) -> float:
    """Wait while a boot behind any of ``clients`` is still on its way; seconds waited (0: none).

    ``report`` gets a line at once and then every :data:`REPORT_EVERY_S`; ``check`` raises to stop
    the wait (a cancelled job); ``sleep`` waits between polls.
    """
    started = time.monotonic()
    reported = -REPORT_EVERY_S
    while True:
        waiting = None
        for client in clients:
            status = status_of(client)
            if status is None:
                continue
            failure = bs.models_failure(status)
            if failure is not None:
                raise ModelsUnavailable(f"the pod's model download failed: {failure}")
            if bs.stalled(status):
                raise ModelsUnavailable(
                    f"the pod's model download stopped reporting {bs.age_s(status):.0f} s ago "
                    f"({bs.models_summary(status)}): its boot is not running; see the container log"
                )
            waiting = waiting or pending(status)
        elapsed = time.monotonic() - started
        if waiting is None:
            return elapsed if reported >= 0 else 0.0
        if elapsed > timeout_s:
            raise ModelsUnavailable(f"the pod was still starting after {timeout_s:.0f} s ({waiting})")
        if elapsed - reported >= REPORT_EVERY_S:
            report(waiting)
            reported = elapsed
        check()
        sleep(POLL_S)
        check()


def _options(spec: Any) -> list[str] | None:
    """The choices of a combo input: ``[[…], {…}]`` (ComfyUI's classic nodes) or
    ``["COMBO", {"options": […]}]`` (its newer schema); None for any other input."""
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return [str(option) for option in spec[0]]
    if isinstance(spec, list) and len(spec) > 1 and spec[0] == "COMBO" and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return [str(option) for option in options] if isinstance(options, list) else None
    return None


def missing_model_files(client: ComfyClient, workflow: Mapping[str, Any]) -> list[str]:
    """``node <id> (<class>) <input>: <file>`` for each model file of ``workflow`` ComfyUI does not
    offer; nodes ComfyUI does not describe are not checked (ComfyUI itself will say)."""
    infos: dict[str, dict[str, Any] | None] = {}
    missing = []
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        files = {
            name: value
            for name, value in inputs.items()
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)
        }
        if not files:
            continue
        class_type = str(node.get("class_type", ""))
        if class_type not in infos:
            infos[class_type] = client.object_info(class_type)
        info = infos[class_type]
        if info is None:
            continue
        specs = {
            **(info.get("input", {}).get("optional") or {}),
            **(info.get("input", {}).get("required") or {}),
        }
        for name, value in files.items():
            options = _options(specs.get(name))
            if options is not None and value not in options:
                missing.append(f"node {node_id} ({class_type}) {name}: {value}")
    return missing
