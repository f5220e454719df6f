"""One SteadyDancer job against a running ComfyUI: what `zr4 dance` and the serverless worker run.

read the inputs → assign the least busy ComfyUI (:mod:`zr4.client.balancer`) → take the boot's
workflow (or the caller's) → upload the photo and the clip → fill them and the parameters in → open
the websocket → queue → follow ``progress`` / ``executing`` / ``executed`` until ``execution_success``
(or the error) → read the output from ``/history`` → download it or hand it to the caller's
``deliver`` step (the worker's R2 upload) → ``done``. The uploaded inputs are deleted when the job
ends, however it ends, where ComfyUI's input folder is on this machine.

A stop (a :class:`~zr4.client.job_cancel.JobControl` set from another thread, or Ctrl-C) reaches
ComfyUI before the job ends: the prompt leaves the queue or is interrupted, and the job waits until
ComfyUI reports it stopped (:func:`~zr4.client.job_cancel.stop_prompt`).

Progress is reported through a callback of :class:`JobEvent`; the caller draws a bar, prints log
lines or sends RunPod progress updates. Errors are :class:`zr4.errors.Zr4Error` with one line.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zr4.client.balancer import Balancer
from zr4.client.boot_wait import (
    DEFAULT_WAIT_S,
    ModelsUnavailable,
    StatusSource,
    missing_model_files,
    status_over_http,
    wait_for_boot,
)
from zr4.client.comfy_api import (
    ComfyClient,
    ComfyUnreachable,
    EventStream,
    ExecutionFailed,
    OutputFile,
    execution_failure,
    new_client_id,
    output_files,
)
from zr4.client.job_cancel import JobCancelled, JobControl, stop_prompt
from zr4.client.job_workflow import DanceParams, FilledWorkflow, fill_workflow, find_boot_workflow
from zr4.client.media import Media, load_media
from zr4.errors import Zr4Error

# With no websocket message for this long, /history is asked whether the prompt ended (a message
# lost to a reconnect must not hang the job).
HISTORY_POLL_S = 10.0
# How often a waiting job looks at its stop request.
CONTROL_POLL_S = 0.25
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".gif")


class JobError(Zr4Error):
    """The job could not run or finish; one line."""


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened: ``models`` (the job waits for the pod's boot; ``detail``: the
    download's progress), ``queued``, ``started``, ``cached``, ``node``, ``progress``, ``executed``,
    ``done``, ``cancelled`` (``detail``: how ComfyUI's work ended). ``node_title`` is the node's
    ``_meta.title`` (or its type)."""

    kind: str
    prompt_id: str = ""
    node_id: str | None = None
    node_title: str | None = None
    value: int | None = None
    maximum: int | None = None
    elapsed_s: float = 0.0
    nodes_done: int = 0
    nodes_total: int = 0
    detail: str = ""

    def describe(self) -> str:
        """One log line."""
        where = f"node {self.node_id} ({self.node_title})" if self.node_id else ""
        if self.kind == "progress":
            return f"{self.elapsed_s:7.1f}s  {where}: step {self.value}/{self.maximum}"
        if self.kind == "node":
            return (
                f"{self.elapsed_s:7.1f}s  running {where} [{self.nodes_done}/{self.nodes_total} nodes done]"
            )
        if self.kind == "cached":
            return f"{self.elapsed_s:7.1f}s  {self.nodes_done} node(s) cached from the previous run"
        if self.kind == "queued":
            return f"{self.elapsed_s:7.1f}s  queued as prompt {self.prompt_id}"
        if self.kind == "started":
            return f"{self.elapsed_s:7.1f}s  ComfyUI started executing"
        if self.kind == "executed":
            return f"{self.elapsed_s:7.1f}s  {where} finished"
        if self.kind == "cancelled":
            return f"{self.elapsed_s:7.1f}s  cancelled: {self.detail}"
        if self.kind == "models":
            return f"{self.elapsed_s:7.1f}s  {self.detail}"
        return f"{self.elapsed_s:7.1f}s  {self.kind}"


EventSink = Callable[[JobEvent], None]


@dataclass(frozen=True)
class JobRequest:
    """What to run. ``image``/``video``: a path or an http(s) URL; with ``allow_base64`` (a job from
    the network) an http(s) URL or base64, never a path."""

    image: str
    video: str
    params: DanceParams = field(default_factory=DanceParams)
    workflow: Mapping[str, Any] | None = None
    workflow_source: str = ""
    allow_base64: bool = False
    tag: str = ""  # names the job's uploads and outputs (default: a fresh random one)


@dataclass
class JobResult:
    prompt_id: str
    seed: int
    comfyui_url: str
    output: OutputFile
    workflow_source: str
    files: tuple[OutputFile, ...] = ()  # every file the prompt's output nodes reported (the video too)
    local_path: Path | None = None
    size_bytes: int | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds, from "job received"
    width: int | None = None
    height: int | None = None
    frames: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "seed": self.seed,
            "comfyui": self.comfyui_url,
            "output": {
                "filename": self.output.filename,
                "subfolder": self.output.subfolder,
                "type": self.output.type,
                "format": self.output.format,
            },
            "file": None if self.local_path is None else str(self.local_path),
            "size_bytes": self.size_bytes,
            "workflow": self.workflow_source,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "timings": {name: round(value, 4) for name, value in self.timings.items()},
        }


def pick_client(clients: Sequence[ComfyClient]) -> ComfyClient:
    """The reachable ComfyUI with the shortest queue (the first one on a tie)."""
    return Balancer(clients).pick()


def _titles(workflow: Mapping[str, Any]) -> dict[str, str]:
    titles = {}
    for node_id, node in workflow.items():
        meta = node.get("_meta") if isinstance(node, Mapping) else None
        title = meta.get("title") if isinstance(meta, Mapping) else None
        titles[str(node_id)] = str(title or node.get("class_type", "?"))
    return titles


def _video_of(files: list[OutputFile]) -> OutputFile | None:
    videos = [f for f in files if f.type == "output" and f.filename.lower().endswith(VIDEO_SUFFIXES)]
    # VHS reports the file with audio last when it muxes audio; the last one is the final video.
    return videos[-1] if videos else None


def _size_of(filled: FilledWorkflow) -> tuple[int | None, int | None, int | None]:
    for node in filled.workflow.values():
        if node["class_type"] == "VHS_LoadVideo":
            inputs = node["inputs"]
            values = [inputs.get(name) for name in ("custom_width", "custom_height", "frame_load_cap")]
            return tuple(
                v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None for v in values
            )  # type: ignore[return-value]
    return None, None, None


class _Watcher:
    """Turns websocket messages of one prompt into events, and knows when it ended."""

    def __init__(self, prompt_id: str, titles: Mapping[str, str], started: float, sink: EventSink) -> None:
        self.prompt_id = prompt_id
        self.titles = titles
        self.started = started
        self.sink = sink
        self.done: set[str] = set()
        self.outputs: dict[str, Any] = {}
        self.execution_started_at: float | None = None
        self.finished = False
        self.current: str | None = None

    def _emit(self, kind: str, **values: Any) -> None:
        self.sink(
            JobEvent(
                kind=kind,
                prompt_id=self.prompt_id,
                elapsed_s=time.perf_counter() - self.started,
                nodes_done=len(self.done),
                nodes_total=len(self.titles),
                **values,
            )
        )

    def handle(self, message: Mapping[str, Any]) -> None:
        kind, data = message["type"], message["data"]
        if data.get("prompt_id") not in (None, self.prompt_id):
            return  # another client's prompt on the same server
        if kind == "execution_start":
            self.execution_started_at = time.perf_counter()
            self._emit("started")
        elif kind == "execution_cached":
            cached = [str(node) for node in data.get("nodes", [])]
            self.done.update(cached)
            if cached:
                self._emit("cached")
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                if data.get("prompt_id") == self.prompt_id:
                    self.finished = True
                return
            if self.execution_started_at is None:
                self.execution_started_at = time.perf_counter()
            if self.current is not None and self.current != str(node):
                self.done.add(self.current)
            self.current = str(node)
            self._emit("node", node_id=self.current, node_title=self.titles.get(self.current, "?"))
        elif kind == "progress":
            node = str(data.get("node")) if data.get("node") is not None else self.current
            self._emit(
                "progress",
                node_id=node,
                node_title=self.titles.get(node or "", "?"),
                value=int(data.get("value", 0)),
                maximum=int(data.get("max", 0)),
            )
        elif kind == "executed":
            node = str(data.get("node"))
            self.done.add(node)
            self.outputs[node] = data.get("output")
            self._emit("executed", node_id=node, node_title=self.titles.get(node, "?"))
        elif kind == "execution_success":
            self.finished = True
        elif kind == "execution_error":
            raise execution_failure(data)
        elif kind == "execution_interrupted":
            raise _interrupted(data)


def _interrupted(data: Mapping[str, Any]) -> JobError:
    return JobError(
        f"the run was interrupted in ComfyUI at node {data.get('node_id')} ({data.get('node_type')})"
    )


def _history_outcome(client: ComfyClient, prompt_id: str) -> dict[str, Any] | None:
    """The history entry once the prompt ended; raises its execution error if it failed."""
    entry = client.history(prompt_id)
    if entry is None:
        return None
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for event, data in status.get("messages", []):
            if event == "execution_error":
                raise execution_failure(data)
            if event == "execution_interrupted":
                raise _interrupted(data)
        raise JobError(f"prompt {prompt_id} ended with an error (no details in /history)")
    if status.get("completed") or entry.get("outputs"):
        return entry
    return None


def _poll_history(
    client: ComfyClient, prompt_id: str, deadline: float, control: JobControl, every_s: float = 1.0
) -> dict[str, Any]:
    while time.monotonic() < deadline:
        entry = _history_outcome(client, prompt_id)
        if entry is not None:
            return entry
        control.wait(every_s)
        control.check()
    raise JobError(f"prompt {prompt_id} did not finish in time")


def _delete_inputs(input_dir: Path | None, uploaded: Sequence[tuple[str, int]]) -> None:
    """Remove this job's uploads from ComfyUI's input folder, where that folder is on this machine.

    Only the files this job uploaded, under the unique names ComfyUI gave them, and only while they
    hold as many bytes as were sent: a file of that name that is something else is not ours.
    """
    if input_dir is None:
        return
    for name, size in uploaded:
        path = input_dir / name
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and path.stat().st_size == size:
                path.unlink()


def run_job(
    clients: Sequence[ComfyClient] | Balancer,
    request: JobRequest,
    *,
    on_event: EventSink | None = None,
    destination: Callable[[OutputFile], Path] | None = None,
    received_at: float | None = None,
    timeout_s: float = 6 * 3600,
    control: JobControl | None = None,
    deliver: Callable[[JobResult], None] | None = None,
    input_dir: Path | None = None,
    boot_status: StatusSource | None = None,
    models_wait_s: float = DEFAULT_WAIT_S,
) -> JobResult:
    """Run one job to its video.

    ``destination(output) -> Path`` downloads it there (None: no download); ``deliver(result)`` runs
    after that and before the ``done`` event (the worker stores the video there). ``clients``: a
    :class:`Balancer` shared by the jobs of one process, or the servers for this job alone.
    ``control``: a stop request from another thread; Ctrl-C (KeyboardInterrupt) stops the job the
    same way. Either stops the prompt in ComfyUI before :class:`JobCancelled` (or the
    KeyboardInterrupt) leaves here. ``input_dir``: ComfyUI's input folder when it is on this
    machine: the inputs uploaded for this job are deleted from it when the job ends.
    ``boot_status``: where the pod's boot status comes from (default: zr4's auth proxy, over HTTP);
    while the pod is still starting the job waits, up to ``models_wait_s``, for ComfyUI and the
    models (:mod:`zr4.client.boot_wait`).
    """
    started = time.perf_counter() if received_at is None else received_at
    sink: EventSink = on_event or (lambda _event: None)
    control = control or JobControl()
    balancer = clients if isinstance(clients, Balancer) else Balancer(clients)
    timings: dict[str, float] = {}

    def mark(name: str) -> None:
        timings[name] = time.perf_counter() - started

    tag = request.tag or secrets.token_hex(4)
    # A job from the network names its fields in messages (input.video), never its base64 text.
    labels = ("input.image", "input.video") if request.allow_base64 else (None, None)
    image: Media = load_media(
        request.image, "image", allow_base64=request.allow_base64, tag=tag, label=labels[0]
    )
    video: Media = load_media(
        request.video, "video", allow_base64=request.allow_base64, tag=tag, label=labels[1]
    )
    request.params.check()
    mark("inputs_read")
    control.check()

    def waiting(line: str) -> None:
        sink(JobEvent(kind="models", detail=line, elapsed_s=time.perf_counter() - started))

    waited = wait_for_boot(
        balancer.clients, boot_status or status_over_http, waiting, control.check, control.wait, models_wait_s
    )
    if waited > 0.0:
        mark("boot_ready")

    uploaded: list[tuple[str, int]] = []
    try:
        with balancer.reserve() as reservation:
            client = reservation.client
            if request.workflow is not None:
                workflow, source = dict(request.workflow), request.workflow_source or "request"
            else:
                workflow, source = find_boot_workflow(client)
                source = f"{client.base_url} user/{source}"
            mark("workflow_found")
            missing = missing_model_files(client, workflow)
            if missing:
                raise ModelsUnavailable(
                    f"ComfyUI at {client.base_url} does not have the model file(s) the workflow loads: "
                    f"{'; '.join(missing)}; put them in its model folders (MODELS_DIR) or use a workflow "
                    "naming files it has"
                )
            for media in (image, video):
                control.check()
                uploaded.append((client.upload(media.data, media.filename), len(media.data)))
            image_name, video_name = uploaded[0][0], uploaded[1][0]
            mark("inputs_uploaded")
            filled = fill_workflow(workflow, image_name, video_name, request.params, tag)
            titles = _titles(filled.workflow)
            control.check()
            entry, watcher, prompt_id = _queue_and_follow(
                client, filled, titles, started, sink, control, timings, timeout_s, reservation.queued
            )
        mark("executed")
        if entry is None:
            entry = _history_outcome(client, prompt_id)
        outputs = dict((entry or {}).get("outputs") or {}) or watcher.outputs
        files: list[OutputFile] = []
        for node_id in filled.output_node_ids:
            files += output_files(node_id, outputs.get(node_id))
        video_file = _video_of(files)
        if video_file is None:
            found = ", ".join(f.rel_path for f in files) or "nothing"
            raise JobError(f"prompt {prompt_id} finished but saved no video (outputs: {found})")
        width, height, frames = _size_of(filled)
        result = JobResult(
            prompt_id=prompt_id,
            seed=filled.seed,
            comfyui_url=client.base_url,
            output=video_file,
            workflow_source=source,
            files=tuple(files),
            timings=timings,
            width=width,
            height=height,
            frames=frames,
        )
        if destination is not None:
            control.check()
            path = destination(video_file)
            result.size_bytes = client.download(video_file, path)
            result.local_path = path
            mark("downloaded")
        if deliver is not None:
            control.check()
            deliver(result)
        control.check()
        watcher._emit("done")
        return result
    finally:
        _delete_inputs(input_dir, uploaded)


def _queue_and_follow(
    client: ComfyClient,
    filled: FilledWorkflow,
    titles: Mapping[str, str],
    started: float,
    sink: EventSink,
    control: JobControl,
    timings: dict[str, float],
    timeout_s: float,
    on_queued: Callable[[], None],
) -> tuple[dict[str, Any] | None, _Watcher, str]:
    """Queue the prompt and follow it to its end: (the history entry if read, the watcher, the id).

    The id is chosen here, before ``POST /prompt``, so a stop that lands while the prompt is being
    queued still knows what to take out of ComfyUI.
    """
    client_id = new_client_id()
    prompt_id = str(uuid.uuid4())
    watcher = _Watcher(prompt_id, titles, started, sink)
    with client.events(client_id) as stream:
        try:
            prompt_id = client.submit(filled.workflow, client_id, prompt_id=prompt_id)
            watcher.prompt_id = prompt_id
            on_queued()
            timings["queued"] = time.perf_counter() - started
            watcher._emit("queued")
            return _follow(client, stream, watcher, control, timings, started, timeout_s), watcher, prompt_id
        except (JobCancelled, KeyboardInterrupt):
            control.cancel("stopped")  # a second stop must not wait again (the job is ending)
            outcome = stop_prompt(client, prompt_id, stream)
            watcher._emit("cancelled", detail=outcome)
            raise


def _follow(
    client: ComfyClient,
    stream: EventStream,
    watcher: _Watcher,
    control: JobControl,
    timings: dict[str, float],
    started: float,
    timeout_s: float,
) -> dict[str, Any] | None:
    """Read the websocket until the prompt ended; the history entry when that is how it was learnt."""
    prompt_id = watcher.prompt_id
    deadline = time.monotonic() + timeout_s
    last_heard = time.monotonic()
    while not watcher.finished:
        control.check()
        if time.monotonic() > deadline:
            raise JobError(f"prompt {prompt_id} did not finish within {timeout_s:.0f} s")
        try:
            message = stream.next(CONTROL_POLL_S)
        except ComfyUnreachable:
            # The websocket dropped (a proxy's idle timeout, a restart of the proxy): no more
            # progress, but /history still says when and how the prompt ended.
            return _poll_history(client, prompt_id, deadline, control)
        if message is None:
            if time.monotonic() - last_heard >= HISTORY_POLL_S:
                last_heard = time.monotonic()
                entry = _history_outcome(client, prompt_id)
                if entry is not None:
                    return entry
            continue
        last_heard = time.monotonic()
        if message["type"] in ("execution_start", "executing") and "execution_started" not in timings:
            timings["execution_started"] = time.perf_counter() - started
        watcher.handle(message)
    return None


def load_workflow_file(path: Path) -> tuple[dict[str, Any], str]:
    """An API-format workflow from a file (``--workflow``)."""
    from zr4.client.job_workflow import parse_workflow

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise JobError(f"cannot read the workflow {path}: {error.strerror}") from None
    return parse_workflow(text, str(path)), str(path)


def oom_advice(
    stats: Mapping[str, Any] | None,
    profile: Mapping[str, Any] | None,
    width: int | None,
    height: int | None,
    frames: int | None,
) -> str:
    """What `zr4 plan` suggests for this card and workload, in one sentence (after an out-of-memory)."""
    from dataclasses import replace

    from zr4.core.planner.request import GpuFacts, Workload
    from zr4.core.planner.search import plan
    from zr4.core.tune import request_from_profile

    devices = (stats or {}).get("devices") or []
    device = devices[0] if devices and isinstance(devices[0], Mapping) else {}
    vram = int(device.get("vram_total", 0) or 0) // (1024 * 1024)
    request, _ = request_from_profile(profile or {})
    workload = request.workload
    with contextlib.suppress(ValueError):  # a workload the planner refuses keeps the profile's
        workload = replace(
            workload,
            width=width or workload.width,
            height=height or workload.height,
            frames=frames or workload.frames,
        )
    if vram <= 0:
        return (
            f"run `zr4 plan --resolution {workload.width}x{workload.height} --frames {workload.frames} "
            "--vram-gib <your card>` for settings that fit"
        )
    name = str(device.get("name", "the GPU"))
    command = (
        f"`zr4 plan --vram-gib {vram / 1024:.0f} --resolution {workload.width}x{workload.height} "
        f"--frames {workload.frames}`"
    )
    result = plan(replace(request, gpu=GpuFacts(name=name, total_mib=vram), workload=workload))
    if not result.fits and result.alternatives:
        return f"{command} suggests: " + "; or ".join(result.alternatives[:2])
    # The plan expected it to fit: suggest the largest frame count with room to spare.
    latent = workload.latent_frames
    smaller = max(1, 4 * ((latent + 1) // 2) - 3)
    try:
        Workload(width=workload.width, height=workload.height, frames=smaller, steps=workload.steps)
    except ValueError:
        smaller = workload.frames
    return (
        f"the plan for {vram / 1024:.0f} GiB expected {workload.width}x{workload.height}, {workload.frames} frames "
        f"to fit ({result.memory_mode}, {result.block_swap} blocks swapped); try --frames {smaller}, a smaller "
        f"size, or GPU_MEMORY_MODE=sequential_cpu_offload; see {command}"
    )


def describe_failure(error: ExecutionFailed, advice: str) -> str:
    """The one line for an out-of-memory failure."""
    return f"out of memory in node {error.node_id} ({error.node_type}): {advice}"


def dumps(result: JobResult, **extra: Any) -> str:
    return json.dumps({"ok": True, **result.to_dict(), **extra}, indent=2, sort_keys=True)
