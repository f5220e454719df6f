"""The RunPod Serverless worker: ``python -m zr4.image.serverless`` (what ``ZR4_MODE=serverless`` runs).

`zr4 start` boots the container as usual (plan, models on the network volume, ComfyUI), then runs
this module beside ComfyUI instead of exposing the UI. It waits for ComfyUI, then hands
:func:`handler` to the ``runpod`` SDK (``runpod.serverless.start``), which takes jobs from the
endpoint's queue, or, with ``--test_input '{"input": {…}}'``, runs that one job locally and exits
(the SDK's own local test mode, ``runpod/serverless/modules/rp_local.py``). Outside RunPod with no
test job it serves the SDK's local API instead (:func:`local_api_args`).

Job input (``job["input"]``)::

    image, video          http(s) URL or base64 (a data: URL or plain), required
    seed, frames, width, height, steps, cfg, fps, prompt     optional SteadyDancer parameters
    workflow              optional API-format workflow (default: the one the boot installed)
    return_base64         true: also return the video as base64 when it is at most
                          ZR4_BASE64_MAX_BYTES (10 MB)

Output: ``r2`` (bucket, key, presigned ``url``, ``expires_in_s``) when R2 is configured, ``seed``,
``prompt_id``, ``size_bytes``, ``timings`` (seconds from "job received"), and ``video_base64`` when
asked and small. A failure returns ``{"error": "<one line>"}``, which the SDK reports as FAILED.
Progress goes to RunPod's progress updates (``runpod.serverless.progress_update``), at most once a
second, and one line per update to the log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.client.comfy_api import ComfyClient, ComfyError, ExecutionFailed, auth_token, comfyui_urls
from zr4.client.dance import JobEvent, JobRequest, JobResult, oom_advice, run_job
from zr4.client.job_workflow import DanceParams, is_api_workflow
from zr4.core.env import env_str
from zr4.core.redact import redact
from zr4.errors import Zr4Error

DEFAULT_BASE64_MAX_BYTES = 10 * 1000 * 1000  # RunPod's SDK warns above 20 MB of result; base64 adds a third
DEFAULT_PRESIGN_S = 24 * 3600
COMFYUI_WAIT_S = 600.0
PROGRESS_EVERY_S = 1.0
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "frames": (int,),
    "width": (int,),
    "height": (int,),
    "steps": (int,),
    "cfg": (int, float),
    "fps": (int, float),
    "prompt": (str,),
}
INPUT_KEYS = {"image", "video", "workflow", "return_base64", *PARAM_TYPES}


class JobInputError(Zr4Error):
    """The job's input is malformed; the message names the field."""


@dataclass(frozen=True)
class WorkerConfig:
    urls: tuple[str, ...]
    token: str | None
    output_dir: Path
    base64_max_bytes: int = DEFAULT_BASE64_MAX_BYTES
    presign_s: int = DEFAULT_PRESIGN_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerConfig:
        from zr4.core import image_layout

        def number(name: str, default: int) -> int:
            raw = env_str(name, None, environ)
            try:
                return int(raw) if raw is not None else default
            except ValueError:
                raise JobInputError(f"{name}={raw!r} is not a whole number") from None

        return cls(
            urls=tuple(comfyui_urls(environ)),
            token=auth_token(environ),
            output_dir=Path(
                env_str("OUTPUT_DIR", image_layout.OUTPUT_DIR, environ) or image_layout.OUTPUT_DIR
            ),
            base64_max_bytes=number("ZR4_BASE64_MAX_BYTES", DEFAULT_BASE64_MAX_BYTES),
            presign_s=number("ZR4_PRESIGN_SECONDS", DEFAULT_PRESIGN_S),
        )

    def clients(self) -> list[ComfyClient]:
        return [ComfyClient(url, token=self.token) for url in self.urls]


def parse_input(job_input: Any) -> tuple[JobRequest, bool]:
    """The job request and whether base64 output was asked for. Unknown fields are refused."""
    if not isinstance(job_input, Mapping):
        raise JobInputError('the job input must be an object: {"image": …, "video": …}')
    unknown = sorted(set(job_input) - INPUT_KEYS)
    if unknown:
        raise JobInputError(
            f"unknown input field(s): {', '.join(unknown)}; known: {', '.join(sorted(INPUT_KEYS))}"
        )
    for name in ("image", "video"):
        if not isinstance(job_input.get(name), str) or not job_input[name].strip():
            raise JobInputError(f"input.{name} is required: an http(s) URL or base64")
    values: dict[str, Any] = {}
    for name, types in PARAM_TYPES.items():
        value = job_input.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            kind = " or ".join(t.__name__ for t in types)
            raise JobInputError(f"input.{name} must be {kind}, got {json.dumps(value)}")
        values[name] = value
    workflow = job_input.get("workflow")
    if workflow is not None and not is_api_workflow(workflow):
        raise JobInputError(
            "input.workflow must be an API-format ComfyUI workflow ({id: {class_type, inputs}})"
        )
    return_base64 = job_input.get("return_base64", False)
    if not isinstance(return_base64, bool):
        raise JobInputError("input.return_base64 must be true or false")
    params = DanceParams(**values)
    problems = params.problems()
    if problems:
        raise JobInputError("input: " + "; ".join(problems))
    request = JobRequest(
        image=job_input["image"],
        video=job_input["video"],
        params=params,
        workflow=workflow,
        workflow_source="job input" if workflow is not None else "",
        allow_base64=True,
    )
    return request, return_base64


# --- R2 -------------------------------------------------------------------------------------------


def upload_to_r2(
    rel_path: str, output_dir: Path, presign_s: int, environ: Mapping[str, str]
) -> dict[str, Any] | None:
    """One sync pass (the sync package's ``sync_once``) and a presigned URL of the job's video.

    None when R2 is not configured. The file is complete (ComfyUI reported it), so the pass does
    not wait for it to settle.
    """
    from zr4.image.sync import SyncConfigError, settings_from_env, sync_once
    from zr4.image.sync.client import make_s3_client
    from zr4.image.sync.scanner import pod_suffixed

    try:
        settings = settings_from_env({**environ, "R2_SYNC_OUTPUT_DIR": str(output_dir)})
    except SyncConfigError:
        return None
    settings = settings.with_(stable_seconds=0.0)
    report = sync_once(settings, wait_incomplete_s=10.0)
    names = (rel_path, pod_suffixed(rel_path, settings.pod_id))
    keys = [
        key
        for key in (*report.uploaded, *report.already_present)
        if any(key == name or key.endswith("/" + name) for name in names)
    ]
    if not keys:
        reason = report.failed.get(rel_path) or report.error or "the sync pass did not upload it"
        raise ComfyError(f"R2 upload of {rel_path} failed: {reason}")
    url = make_s3_client(settings).generate_presigned_url(
        "get_object", Params={"Bucket": settings.bucket, "Key": keys[0]}, ExpiresIn=presign_s
    )
    return {"bucket": settings.bucket, "key": keys[0], "url": url, "expires_in_s": presign_s}


# --- the job --------------------------------------------------------------------------------------


def _local_video(result: JobResult, config: WorkerConfig, clients: list[ComfyClient]) -> Path:
    """The video in OUTPUT_DIR: ComfyUI wrote it there, or (ComfyUI elsewhere) it is downloaded there."""
    path = config.output_dir / result.output.rel_path
    if not path.is_file():
        client = next(c for c in clients if c.base_url == result.comfyui_url)
        client.download(result.output, path)
    return path


def run(
    job: Mapping[str, Any],
    config: WorkerConfig,
    environ: Mapping[str, str],
    progress: Callable[[JobEvent], None] | None = None,
) -> dict[str, Any]:
    """One job to its output dict; errors come back as ``{"error": "<one line>"}``."""
    received = time.perf_counter()
    clients = config.clients()
    try:
        request, return_base64 = parse_input(job.get("input"))
        result = run_job(clients, request, on_event=progress, received_at=received)
        path = _local_video(result, config, clients)
        data = path.read_bytes() if return_base64 else b""
        size = path.stat().st_size
        r2 = upload_to_r2(result.output.rel_path, config.output_dir, config.presign_s, environ)
        result.timings["stored"] = time.perf_counter() - received
    except ExecutionFailed as error:
        if error.out_of_memory:
            try:
                stats = clients[0].system_stats()
            except Zr4Error:
                stats = None
            from zr4.core.tune import read_profile

            profile, _ = read_profile(None, environ)
            params = job.get("input") or {}
            advice = oom_advice(
                stats, profile, params.get("width"), params.get("height"), params.get("frames")
            )
            return {"error": redact(f"out of memory in node {error.node_id} ({error.node_type}): {advice}")}
        return {"error": redact(str(error))}
    except Zr4Error as error:
        return {"error": redact(str(error))}
    output: dict[str, Any] = {
        "r2": r2,
        "seed": result.seed,
        "prompt_id": result.prompt_id,
        "filename": result.output.rel_path,
        "size_bytes": size,
        "width": result.width,
        "height": result.height,
        "frames": result.frames,
        "comfyui": result.comfyui_url,
        "timings": {name: round(value, 4) for name, value in result.timings.items()},
    }
    if r2 is None:
        output["warning"] = (
            "R2 is not configured (R2_ENDPOINT, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY): the video stays on the worker"
        )
    if return_base64:
        if size <= config.base64_max_bytes:
            output["video_base64"] = base64.b64encode(data).decode()
        else:
            output["warning"] = (
                f"video_base64 left out: {size:,} bytes is above ZR4_BASE64_MAX_BYTES={config.base64_max_bytes:,}; "
                "use the R2 URL"
            )
    return output


def _on_runpod(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("RUNPOD_WEBHOOK_GET_JOB"))


class ProgressReporter:
    """Log every event as one line; on RunPod also send a progress update, at most once a second."""

    def __init__(self, job: Mapping[str, Any], send: Callable[[Mapping[str, Any], Any], None] | None) -> None:
        self.job = job
        self.send = send
        self.last_sent = 0.0

    def __call__(self, event: JobEvent) -> None:
        print(f"[zr4 worker] job {self.job.get('id', '?')}: {event.describe().strip()}", flush=True)
        if self.send is None:
            return
        now = time.monotonic()
        if event.kind not in ("started", "done") and now - self.last_sent < PROGRESS_EVERY_S:
            return
        self.last_sent = now
        payload = {"stage": event.kind, "node": event.node_title, "step": event.value, "steps": event.maximum}
        payload["nodes_done"], payload["nodes_total"] = event.nodes_done, event.nodes_total
        self.send(self.job, {key: value for key, value in payload.items() if value is not None})


def make_handler(environ: Mapping[str, str]) -> Callable[[dict[str, Any]], Any]:
    """The async handler the SDK calls (async, so jobs for several ComfyUI run side by side)."""
    config = WorkerConfig.from_env(environ)
    send = None
    if _on_runpod(environ):
        from runpod.serverless import progress_update

        send = progress_update

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(run, job, config, environ, ProgressReporter(job, send))

    return handler


def wait_for_comfyui(clients: list[ComfyClient], timeout_s: float) -> float:
    """Block until every ComfyUI answers ``/system_stats``; seconds waited."""
    started = time.monotonic()
    pending = list(clients)
    while pending:
        still = []
        for client in pending:
            try:
                client.system_stats()
            except Zr4Error:
                still.append(client)
        pending = still
        if pending:
            if time.monotonic() - started > timeout_s:
                urls = ", ".join(c.base_url for c in pending)
                raise ComfyError(f"ComfyUI did not answer within {timeout_s:g} s at {urls}")
            time.sleep(0.25)
    return time.monotonic() - started


DEFAULT_API_PORT = 8000  # the SDK's own default for --rp_api_port


def local_api_args(environ: Mapping[str, str], argv: list[str], cwd: Path) -> list[str]:
    """The SDK arguments for its local API server, when this worker runs outside RunPod and was given
    no job of its own.

    Outside RunPod (no ``RUNPOD_WEBHOOK_GET_JOB``) the SDK runs ``--test_input`` or ``test_input.json``
    once and exits, and exits 1 without either (runpod-python 1.12.0 ``serverless/worker.py`` and
    ``modules/rp_local.py``): under `zr4 start` that is a restart loop. The local API server
    (``--rp_serve_api``) instead takes jobs over HTTP like an endpoint, so the image started with
    ``ZR4_MODE=serverless`` on any machine can be tried with curl. It listens on
    ``ZR4_WORKER_API_HOST`` (127.0.0.1; ``0.0.0.0`` to publish it from a container, unauthenticated)
    and ``ZR4_WORKER_API_PORT`` (8000).
    """
    if _on_runpod(environ) or (cwd / "test_input.json").is_file():
        return []
    if any(arg.split("=", 1)[0] in ("--test_input", "--rp_serve_api") for arg in argv):
        return []
    host = env_str("ZR4_WORKER_API_HOST", "127.0.0.1", environ) or "127.0.0.1"
    port = env_str("ZR4_WORKER_API_PORT", str(DEFAULT_API_PORT), environ) or str(DEFAULT_API_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise JobInputError(f"ZR4_WORKER_API_PORT={port!r} is not a port number")
    return ["--rp_serve_api", "--rp_api_host", host, "--rp_api_port", port]


def main() -> int:
    """Wait for ComfyUI, then run the SDK's worker loop; outside RunPod its local test (--test_input)
    or its local API server."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    environ = dict(os.environ)
    try:
        config = WorkerConfig.from_env(environ)
        raw_wait = env_str("ZR4_COMFYUI_WAIT_S", None, environ)
        local_api = local_api_args(environ, sys.argv[1:], Path.cwd())
        waited = wait_for_comfyui(config.clients(), float(raw_wait) if raw_wait else COMFYUI_WAIT_S)
    except (Zr4Error, ValueError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    print(
        f"[zr4 worker] ComfyUI ready at {', '.join(config.urls)} after {waited:.1f} s; "
        f"{len(config.urls)} job(s) at a time",
        flush=True,
    )
    if local_api:
        sys.argv += local_api
        print(
            f"[zr4 worker] not on RunPod: serving the SDK's local API (/run, /runsync, /status) on "
            f"http://{local_api[2]}:{local_api[4]}",
            flush=True,
        )
    import runpod

    count = len(config.urls)
    runpod.serverless.start(
        {"handler": make_handler(environ), "concurrency_modifier": lambda _current: count}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
