"""The RunPod Serverless worker: ``python -m zr4.image.serverless`` (what ``ZR4_MODE=serverless`` runs).

`zr4 start` boots the container as usual (plan, models on the network volume, ComfyUI), then runs
this module beside ComfyUI instead of exposing the UI. It waits for ComfyUI, then hands
:func:`handler` to the ``runpod`` SDK (``runpod.serverless.start``), which takes jobs from the
endpoint's queue, or, with ``--test_input '{"input": {…}}'``, runs that one job locally and exits
(the SDK's own local test mode, ``runpod/serverless/modules/rp_local.py``). Outside RunPod with no
test job it serves the SDK's local API instead (:func:`local_api_args`).

Job input (``job["input"]``)::

    image, video          http(s) URL or base64 (a data: URL or plain), required; base64 fields
                          above ZR4_INPUT_BASE64_MAX_BYTES (10 MB, RunPod's /run body limit) are
                          refused with the advice to send an http(s) URL
    seed, frames, width, height, steps, cfg, fps, prompt     optional SteadyDancer parameters
    workflow              optional API-format workflow (default: the one the boot installed)
    return_base64         true: also return the video as base64 when it is at most
                          ZR4_BASE64_MAX_BYTES (10 MB)

Output: ``r2`` (bucket, key, presigned ``url``, ``expires_in_s``) when R2 is configured, ``seed``,
``prompt_id``, ``size_bytes``, ``timings`` (seconds from "job received"), and ``video_base64`` when
asked and small. A job whose video would reach its user by no route (no R2, and no base64 or a video
too large for it) fails, on RunPod, with the line that says what to configure; outside RunPod the
video stays on this machine (``file``). A failure returns ``{"error": "<one line>"}``, which the SDK
reports as FAILED. Progress goes to RunPod's progress updates (``runpod.serverless.progress_update``),
at most once a second, and one line per update to the log; ``done`` is sent once the video is stored.

Several jobs run at once, one per ComfyUI (``ZR4_COMFYUI_URLS``): they share one
:class:`~zr4.client.balancer.Balancer` (a job's server is reserved when it is assigned) and one
:class:`~zr4.image.job_store.R2Store` (each job uploads its own files). A job stopped by RunPod
(``/cancel``, the endpoint's execution timeout: the SDK cancels the handler's task) stops its prompt
in ComfyUI and its thread before the handler lets the cancellation through, so the next job finds
the GPU free. Each job's uploaded inputs are deleted from ComfyUI's input folder when it ends.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zr4.client.balancer import Balancer
from zr4.client.boot_wait import DEFAULT_WAIT_S as DEFAULT_MODELS_WAIT_S
from zr4.client.boot_wait import status_from_file
from zr4.client.comfy_api import ComfyClient, ComfyError, ExecutionFailed, auth_token, comfyui_urls
from zr4.client.dance import JobEvent, JobRequest, JobResult, oom_advice, run_job
from zr4.client.job_cancel import JobControl
from zr4.client.job_workflow import DanceParams, is_api_workflow
from zr4.core.env import env_float, env_int, env_port, env_str
from zr4.core.redact import redact
from zr4.errors import Zr4Error
from zr4.image.job_store import OutputLedger, R2Store, remove_partial_outputs

DEFAULT_BASE64_MAX_BYTES = 10 * 1000 * 1000  # RunPod's SDK warns above 20 MB of result; base64 adds a third
# RunPod refuses request bodies over 10 MB on /run and 20 MB on /runsync
# (https://docs.runpod.io/serverless/references/operations); base64 makes a file a third larger.
RUN_BODY_LIMIT_BYTES = 10 * 1000 * 1000
RUNSYNC_BODY_LIMIT_BYTES = 20 * 1000 * 1000
DEFAULT_INPUT_BASE64_MAX_BYTES = RUN_BODY_LIMIT_BYTES
DEFAULT_PRESIGN_S = 24 * 3600
DEFAULT_KEEP_OUTPUTS = 10  # jobs whose files stay in OUTPUT_DIR when nothing syncs it
COMFYUI_WAIT_S = 600.0
PROGRESS_EVERY_S = 1.0
# After RunPod stopped a job: how long the handler waits for its thread (which first waits up to
# job_cancel.STOP_WAIT_S for ComfyUI) before it lets the cancellation through anyway.
THREAD_STOP_WAIT_S = 180.0
R2_VARIABLES = "R2_ENDPOINT (or R2_ACCOUNT_ID), R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"
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


class NoRoute(Zr4Error):
    """The video would reach the job's user by no route; the message says what to configure."""


@dataclass(frozen=True)
class WorkerConfig:
    """The worker's settings, and (built once, shared by every job of the process) its balancer, R2
    store and output ledger."""

    urls: tuple[str, ...]
    token: str | None
    output_dir: Path
    base64_max_bytes: int = DEFAULT_BASE64_MAX_BYTES
    presign_s: int = DEFAULT_PRESIGN_S
    input_base64_max_bytes: int = DEFAULT_INPUT_BASE64_MAX_BYTES
    keep_outputs: int = DEFAULT_KEEP_OUTPUTS
    models_wait_s: int = int(DEFAULT_MODELS_WAIT_S)  # a job waits this long for the pod's boot
    comfyui_input_dir: Path | None = None  # ComfyUI's input/ when it is on this machine
    r2_settings: Any = None  # SyncSettings, when R2 is configured
    r2_problem: str = ""  # why R2 is not usable, when it was meant to be
    _balancer: Balancer = field(init=False, repr=False, compare=False)
    _r2: R2Store | None = field(init=False, repr=False, compare=False)
    _ledger: OutputLedger = field(init=False, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerConfig:
        from zr4.core import image_layout

        output_dir = Path(env_str("OUTPUT_DIR", image_layout.OUTPUT_DIR, environ) or image_layout.OUTPUT_DIR)
        comfyui_dir = env_str("COMFYUI_DIR", image_layout.COMFYUI_DIR, environ) or image_layout.COMFYUI_DIR
        r2_settings, r2_problem = _r2_settings(environ, output_dir)
        return cls(
            urls=tuple(comfyui_urls(environ)),
            token=auth_token(environ),
            output_dir=output_dir,
            base64_max_bytes=env_int(
                "ZR4_BASE64_MAX_BYTES", DEFAULT_BASE64_MAX_BYTES, environ, error=JobInputError
            ),
            presign_s=env_int("ZR4_PRESIGN_SECONDS", DEFAULT_PRESIGN_S, environ, error=JobInputError),
            input_base64_max_bytes=env_int(
                "ZR4_INPUT_BASE64_MAX_BYTES", DEFAULT_INPUT_BASE64_MAX_BYTES, environ, error=JobInputError
            ),
            keep_outputs=env_int("ZR4_KEEP_OUTPUTS", DEFAULT_KEEP_OUTPUTS, environ, error=JobInputError),
            models_wait_s=env_int(
                "ZR4_MODELS_WAIT_S", int(DEFAULT_MODELS_WAIT_S), environ, error=JobInputError
            ),
            comfyui_input_dir=Path(comfyui_dir) / "input",
            r2_settings=r2_settings,
            r2_problem=r2_problem,
        )

    def __post_init__(self) -> None:
        # Built here, once, not on first use: jobs that start together must share one of each.
        object.__setattr__(self, "_balancer", Balancer(self.clients()))
        object.__setattr__(self, "_r2", None if self.r2_settings is None else R2Store(self.r2_settings))
        object.__setattr__(self, "_ledger", OutputLedger(self.output_dir, self.keep_outputs))

    def clients(self) -> list[ComfyClient]:
        return [ComfyClient(url, token=self.token) for url in self.urls]

    @property
    def balancer(self) -> Balancer:
        """Assigns this worker's jobs to its ComfyUI servers."""
        return self._balancer

    @property
    def r2(self) -> R2Store | None:
        """Uploads this worker's jobs' files, one job at a time; None without R2."""
        return self._r2

    @property
    def ledger(self) -> OutputLedger:
        """The output files kept when nothing syncs them."""
        return self._ledger

    @property
    def owns_outputs(self) -> bool:
        """Whether this worker decides how long outputs stay: nothing syncs them, or the upload deletes them."""
        return self.r2_settings is None or bool(self.r2_settings.delete_after_upload)


def _r2_settings(environ: Mapping[str, str], output_dir: Path) -> tuple[Any, str]:
    """(SyncSettings, "") when R2 is configured; (None, why) otherwise ("" when nothing was set)."""
    from zr4.image.sync import SyncConfigError, settings_from_env

    try:
        return settings_from_env({**environ, "R2_SYNC_OUTPUT_DIR": str(output_dir)}), ""
    except SyncConfigError as error:
        meant = any(
            env_str(name, None, environ)
            for name in ("R2_ENDPOINT", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")
        )
        return None, str(error) if meant else ""


def _base64_too_large(name: str, text: str, limit: int) -> str | None:
    """The advice for a base64 field too large for RunPod's request bodies, or None."""
    if urllib.parse.urlsplit(text.strip()).scheme.lower() in ("http", "https") or len(text) <= limit:
        return None
    return (
        f"input.{name} is {len(text) / 1e6:.1f} MB of base64, above ZR4_INPUT_BASE64_MAX_BYTES={limit:,}: "
        f"RunPod takes request bodies up to {RUN_BODY_LIMIT_BYTES // 1000**2} MB on /run and "
        f"{RUNSYNC_BODY_LIMIT_BYTES // 1000**2} MB on /runsync, and base64 is a third larger than the file; "
        "send a clip over a few MB as an http(s) URL (a presigned R2 or S3 URL works)"
    )


def parse_input(
    job_input: Any, base64_limit: int = DEFAULT_INPUT_BASE64_MAX_BYTES
) -> tuple[JobRequest, bool]:
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
        advice = _base64_too_large(name, job_input[name], base64_limit)
        if advice:
            raise JobInputError(advice)
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


# --- the job --------------------------------------------------------------------------------------


def _local_video(result: JobResult, config: WorkerConfig, clients: list[ComfyClient]) -> Path:
    """The video in OUTPUT_DIR: ComfyUI wrote it there, or (ComfyUI elsewhere) it is downloaded there."""
    path = config.output_dir / result.output.rel_path
    if not path.is_file():
        client = next(c for c in clients if c.base_url == result.comfyui_url)
        client.download(result.output, path)
    return path


def _no_route_before(config: WorkerConfig) -> str:
    return (
        "the video would reach you by no route: R2 is not configured"
        + (f" ({config.r2_problem})" if config.r2_problem else "")
        + f" and input.return_base64 is not true; set {R2_VARIABLES} in the endpoint's environment "
        "(its secrets) to get a presigned URL, or ask for return_base64 (videos up to "
        f"ZR4_BASE64_MAX_BYTES={config.base64_max_bytes:,} bytes)"
    )


class _Delivery:
    """The worker's ``deliver`` step: the video fetched (before anything may delete it), read for
    base64, then stored; what it found goes into the job's output."""

    def __init__(
        self, config: WorkerConfig, environ: Mapping[str, str], return_base64: bool, control: JobControl
    ) -> None:
        self.config = config
        self.on_runpod = _on_runpod(environ)
        self.return_base64 = return_base64
        self.control = control
        self.received = 0.0
        self.size = 0
        self.data: bytes | None = None
        self.r2: dict[str, Any] | None = None
        self.file: Path | None = None
        self.warnings: list[str] = []

    def __call__(self, result: JobResult) -> None:
        config = self.config
        path = _local_video(result, config, config.balancer.clients)
        self.size = path.stat().st_size
        if self.return_base64 and self.size <= config.base64_max_bytes:
            self.data = path.read_bytes()
        elif self.return_base64:
            self.warnings.append(
                f"video_base64 left out: {self.size:,} bytes is above ZR4_BASE64_MAX_BYTES="
                f"{config.base64_max_bytes:,}"
            )
        own = [f.rel_path for f in result.files if f.type == "output"] or [result.output.rel_path]
        if config.r2 is None:
            if self.data is None and self.on_runpod:
                raise NoRoute(
                    f"the video is {self.size:,} bytes, above ZR4_BASE64_MAX_BYTES={config.base64_max_bytes:,}"
                    " for video_base64, and R2 is not configured"
                    + (f" ({config.r2_problem})" if config.r2_problem else "")
                    + f": set {R2_VARIABLES} in the endpoint's environment to get a presigned URL"
                )
            self.warnings.append(
                "R2 is not configured: "
                + (f"{config.r2_problem}; " if config.r2_problem else "")
                + f"the worker keeps the files of its last {config.keep_outputs} jobs in {config.output_dir}"
            )
            if self.data is None:
                self.file = path
            config.ledger.add(own)
        else:
            stored = config.r2.store(own, result.output.rel_path, config.presign_s, self.control)
            self.r2 = stored.to_dict()
            if not config.r2_settings.delete_after_upload:
                self.file = path
        result.timings["stored"] = time.perf_counter() - self.received


def run(
    job: Mapping[str, Any],
    config: WorkerConfig,
    environ: Mapping[str, str],
    progress: Callable[[JobEvent], None] | None = None,
    control: JobControl | None = None,
) -> dict[str, Any]:
    """One job to its output dict; errors come back as ``{"error": "<one line>"}``. ``control`` stops
    it from another thread (the handler, when RunPod stops the job)."""
    received = time.perf_counter()
    control = control or JobControl()
    tag = secrets.token_hex(4)
    try:
        request, return_base64 = parse_input(job.get("input"), config.input_base64_max_bytes)
        if config.r2 is None and not return_base64 and _on_runpod(environ):
            raise NoRoute(_no_route_before(config))
        delivery = _Delivery(config, environ, return_base64, control)
        delivery.received = received
        result = run_job(
            config.balancer,
            dataclasses.replace(request, tag=tag),
            on_event=progress,
            received_at=received,
            control=control,
            deliver=delivery,
            input_dir=config.comfyui_input_dir,
            # The worker runs in the container and talks to ComfyUI directly: the status is a file.
            boot_status=status_from_file(environ),
            models_wait_s=config.models_wait_s,
        )
    except Zr4Error as error:
        if config.owns_outputs:
            remove_partial_outputs(config.output_dir, tag)
        if isinstance(error, ExecutionFailed) and error.out_of_memory:
            return {"error": redact(_oom_line(error, config, environ, job))}
        return {"error": redact(str(error))}
    output: dict[str, Any] = {
        "r2": delivery.r2,
        "seed": result.seed,
        "prompt_id": result.prompt_id,
        "filename": result.output.rel_path,
        "size_bytes": delivery.size,
        "width": result.width,
        "height": result.height,
        "frames": result.frames,
        "comfyui": result.comfyui_url,
        "timings": {name: round(value, 4) for name, value in result.timings.items()},
    }
    if delivery.file is not None and delivery.r2 is None:
        output["file"] = str(delivery.file)
    if delivery.warnings:
        output["warning"] = "; ".join(delivery.warnings)
    if delivery.data is not None:
        output["video_base64"] = base64.b64encode(delivery.data).decode()
    return output


def _oom_line(
    error: ExecutionFailed, config: WorkerConfig, environ: Mapping[str, str], job: Mapping[str, Any]
) -> str:
    try:
        stats = config.balancer.clients[0].system_stats()
    except Zr4Error:
        stats = None
    from zr4.core.tune import read_profile

    profile, _ = read_profile(None, environ)
    params = job.get("input") or {}
    advice = oom_advice(stats, profile, params.get("width"), params.get("height"), params.get("frames"))
    return f"out of memory in node {error.node_id} ({error.node_type}): {advice}"


def _on_runpod(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("RUNPOD_WEBHOOK_GET_JOB"))


class ProgressReporter:
    """Log every event as one line; on RunPod also send a progress update, at most once a second,
    and none once the job was stopped (RunPod ended it; an update would show it running again)."""

    def __init__(
        self,
        job: Mapping[str, Any],
        send: Callable[[Mapping[str, Any], Any], None] | None,
        control: JobControl | None = None,
    ) -> None:
        self.job = job
        self.send = send
        self.control = control
        self.last_sent = 0.0

    def __call__(self, event: JobEvent) -> None:
        print(f"[zr4 worker] job {self.job.get('id', '?')}: {event.describe().strip()}", flush=True)
        if self.send is None or (self.control is not None and self.control.cancelled):
            return
        now = time.monotonic()
        if event.kind not in ("started", "done") and now - self.last_sent < PROGRESS_EVERY_S:
            return
        self.last_sent = now
        payload = {"stage": event.kind, "node": event.node_title, "step": event.value, "steps": event.maximum}
        if event.kind == "models":
            payload["detail"] = event.detail
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
        control = JobControl()
        work = asyncio.ensure_future(
            asyncio.to_thread(run, job, config, environ, ProgressReporter(job, send, control), control)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # RunPod stopped the job (/cancel, the execution timeout) or the worker is shutting down:
            # the thread stops the prompt in ComfyUI and ends; only then is the job slot given back.
            control.cancel("stopped by RunPod")
            job_id = job.get("id", "?")
            print(f"[zr4 worker] job {job_id}: stopped by RunPod; stopping its work in ComfyUI", flush=True)
            done, _ = await asyncio.wait({work}, timeout=THREAD_STOP_WAIT_S)
            state = "stopped" if done else f"still running after {THREAD_STOP_WAIT_S:.0f} s"
            print(f"[zr4 worker] job {job_id}: {state}", flush=True)
            raise

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
    port = env_port("ZR4_WORKER_API_PORT", DEFAULT_API_PORT, environ, error=JobInputError)
    return ["--rp_serve_api", "--rp_api_host", host, "--rp_api_port", str(port)]


def main() -> int:
    """Wait for ComfyUI, then run the SDK's worker loop; outside RunPod its local test (--test_input)
    or its local API server."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    environ = dict(os.environ)
    try:
        config = WorkerConfig.from_env(environ)
        wait_s = env_float("ZR4_COMFYUI_WAIT_S", COMFYUI_WAIT_S, environ)
        local_api = local_api_args(environ, sys.argv[1:], Path.cwd())
        waited = wait_for_comfyui(config.clients(), wait_s)
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
