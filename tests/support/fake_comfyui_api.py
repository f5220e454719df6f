"""A stand-in for ComfyUI v0.7.0's HTTP + websocket API, for the job tests (`zr4 dance`, the worker).

It speaks the routes and messages of ComfyUI's ``server.py`` / ``execution.py`` / ``main.py`` at
f59f71cf: ``POST /upload/image`` (multipart, answers ``{"name", "subfolder", "type"}``),
``POST /prompt`` (400 with ``error`` + ``node_errors`` when invalid), ``GET /ws?clientId=`` (RFC 6455,
``status`` first, then ``execution_start``, ``execution_cached``, ``executing``, ``progress``,
``executed``, ``execution_success`` or ``execution_error``, ``executing`` with node None),
``GET /history/{id}``, ``GET /view``, ``GET /queue``, ``GET /system_stats`` and ``GET /userdata``.

The queue behaves as ComfyUI's (``server.py`` and ``execution.py`` at f59f71cf): ``POST /prompt`` takes
the caller's ``prompt_id`` when it gives one; ``GET /queue`` lists ``[number, prompt_id, prompt,
extra_data, outputs]`` items under ``queue_running`` / ``queue_pending``; ``POST /queue`` with
``{"delete": [ids]}`` removes pending prompts (a running one stays); ``POST /interrupt`` with
``{"prompt_id"}`` interrupts only when that prompt is the one running, without a body every prompt
(a global flag, cleared when the next prompt starts). An interrupt takes effect where ComfyUI checks
it: before a node runs and at each progress step; the prompt then ends with ``execution_interrupted``
and a history entry of status ``error``.

Validation is what ComfyUI does for the inputs a job sets: ``LoadImage``'s file must exist in
``input/`` ("Invalid image file"), ``VHS_LoadVideo``'s too; an unknown ``class_type`` is refused.
With ``Behaviour.models_root`` set, the model loaders of zr4's workflow are checked too, as ComfyUI
checks a combo input (execution.py ``validate_inputs``: "Value not in list"), against the files
under that folder, and ``GET /object_info/{class}`` lists them (:data:`MODEL_INPUTS`).
Running a prompt walks its nodes in id order; the sampler node sends ``progress`` for each step;
``VHS_VideoCombine`` writes ``<prefix>_00001.mp4`` into the output folder. ``fail_node`` /
``fail_exception`` make a node raise (e.g. ``torch.OutOfMemoryError``). With ``token`` set every
route answers 401 without ``Authorization: Bearer <token>``, as the auth proxy does.

Standard library only; runs in a thread of the test process (:class:`FakeComfyAPI`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import select
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KNOWN_TYPES = {
    "LoadImage",
    "VHS_LoadVideo",
    "VHS_VideoCombine",
    "WanVideoSamplerSettings",
    "WanVideoSamplerFromSettings",
    "WanVideoModelLoader",
    "KSampler",
    "WanVideoTextEncodeCached",
    "GetImageSizeAndCount",
    "ImageResizeKJv2",
}
# Which model folder each loader input of zr4's workflow lists (the pinned nodes' INPUT_TYPES:
# ComfyUI nodes.py CLIPVisionLoader; kijai/ComfyUI-WanVideoWrapper@f6e2d6dd nodes_model_loading.py and
# nodes.py; kijai/ComfyUI-WanAnimatePreprocess@1a35b81a nodes.py).
MODEL_INPUTS = {
    ("WanVideoModelLoader", "model"): "diffusion_models",
    ("WanVideoVAELoader", "model_name"): "vae",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("WanVideoTextEncodeCached", "model_name"): "text_encoders",
    ("WanVideoLoraSelect", "lora"): "loras",
    ("OnnxDetectionModelLoader", "vitpose_model"): "detection",
    ("OnnxDetectionModelLoader", "yolo_model"): "detection",
}
# The nodes whose progress bar ComfyUI reports (the sampling loop runs in them).
SAMPLERS = ("WanVideoSamplerFromSettings", "WanVideoSampler", "KSampler")
# The first frame VideoHelperSuite saves beside the video (a 1x1 PNG here).
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
VIDEO_BYTES = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


@dataclass
class Behaviour:
    """How the stand-in runs prompts; change it between tests."""

    steps: int = 3
    step_delay_s: float = 0.0
    node_delay_s: float = 0.0
    fail_node: str | None = None
    fail_exception_type: str = "RuntimeError"
    fail_exception_message: str = "boom"
    vram_total: int = 16 * 1024**3
    device_name: str = "cuda:0 NVIDIA GeForce RTX 4080 SUPER : cudaMallocAsync"
    drop_ws_after_queue: bool = False  # close every websocket once a prompt is queued
    token: str | None = None
    queue_delay_s: float = 0.0  # wait before a queued prompt starts (a busy server)
    upload_delay_s: float = 0.0  # each POST /upload/image takes this long (a large clip)
    known_types: frozenset[str] = frozenset(KNOWN_TYPES)  # node types /prompt accepts
    models_root: Path | None = None  # the loaders' files are checked against this folder's


@dataclass
class State:
    root: Path
    behaviour: Behaviour = field(default_factory=Behaviour)
    history: dict[str, Any] = field(default_factory=dict)
    sockets: dict[str, queue.Queue[bytes | None]] = field(default_factory=dict)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    # Prompts of other clients that /queue reports on top of the real ones (a busy server).
    running: int = 0
    pending: int = 0
    waiting: list[tuple[int, str]] = field(default_factory=list)  # (number, prompt_id), pending
    current: str | None = None  # the prompt running now
    number: int = 0
    interrupt_flag: bool = False
    interrupts: list[tuple[str | None, bool]] = field(default_factory=list)  # (prompt_id, took effect)
    deleted: list[str] = field(default_factory=list)  # removed from the queue by POST /queue
    outputs_root: Path | None = None  # --output-directory (several instances may share one)
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, client, type)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, auth)
    work: queue.Queue[Any] = field(default_factory=queue.Queue)

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.outputs_root or self.root / "output"

    @property
    def user_dir(self) -> Path:
        return self.root / "user" / "default"

    def send(self, client_id: str | None, event: str, data: dict[str, Any]) -> None:
        if client_id is None:
            return
        with self.lock:
            self.events.append((time.perf_counter(), client_id, event))
            target = self.sockets.get(client_id)
        if target is not None:
            target.put(json.dumps({"type": event, "data": data}).encode())


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([length])
    elif length < 1 << 16:
        header += bytes([126]) + struct.pack("!H", length)
    else:
        header += bytes([127]) + struct.pack("!Q", length)
    return header + payload


def _read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    head = exactly(2)
    if head is None:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        raw = exactly(2)
        length = struct.unpack("!H", raw)[0] if raw else 0
    elif length == 127:
        raw = exactly(8)
        length = struct.unpack("!Q", raw)[0] if raw else 0
    mask = exactly(4) if head[1] & 0x80 else b"\x00\x00\x00\x00"
    payload = exactly(length) if length else b""
    if mask is None or payload is None:
        return None
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary):
        if not part.strip() or part.strip() == b"--":
            continue
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode(errors="replace")
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        filename = (
            disposition.split('filename="', 1)[1].split('"', 1)[0] if 'filename="' in disposition else None
        )
        fields[name] = (filename, content[:-2] if content.endswith(b"\r\n") else content)
    return fields


def model_files(root: Path, folder: str) -> list[str]:
    """The files of one model folder, as ComfyUI lists them (recursive, relative, sorted)."""
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def object_info(state: State, class_type: str) -> dict[str, Any]:
    """``/object_info/{class}``: the model inputs of ``class_type`` with the files they offer now."""
    root = state.behaviour.models_root
    if root is None or class_type not in state.behaviour.known_types:
        return {}
    required = {
        name: [model_files(root, folder), {}]
        for (kind, name), folder in MODEL_INPUTS.items()
        if kind == class_type
    }
    return {class_type: {"input": {"required": required}, "name": class_type}}


def _validate(state: State, prompt: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    node_errors: dict[str, Any] = {}
    root = state.behaviour.models_root
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type not in state.behaviour.known_types:
            error = {
                "type": "invalid_prompt",
                "message": f"Cannot execute because node {class_type} does not exist.",
                "details": f"Node ID '#{node_id}'",
                "extra_info": {},
            }
            return error, {}
        inputs = node.get("inputs", {})
        for (kind, name), folder in MODEL_INPUTS.items():
            if root is None or kind != class_type or inputs.get(name) in model_files(root, folder):
                continue
            node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": [], "class_type": class_type})
            node_errors[node_id]["errors"].append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{inputs.get(name)}' not in {model_files(root, folder)}",
                    "extra_info": {"input_name": name},
                }
            )
        for loader, name, message in (
            ("LoadImage", "image", "Invalid image file"),
            ("VHS_LoadVideo", "video", "Invalid video file"),
        ):
            if class_type == loader and not (state.input_dir / str(inputs.get(name, ""))).is_file():
                node_errors[node_id] = {
                    "errors": [
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": f"{name} - {message}: {inputs.get(name)}",
                            "extra_info": {"input_name": name},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": class_type,
                }
    if not any(node.get("class_type") == "VHS_VideoCombine" for node in prompt.values()):
        return {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        }, {}
    if node_errors:
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        }
        return error, node_errors
    return None, {}


class _Interrupted(Exception):
    """The interrupt flag was set while the prompt ran (ComfyUI's InterruptProcessingException)."""


def _check_interrupt(state: State) -> None:
    """Where ComfyUI calls ``throw_exception_if_processing_interrupted``: the flag is consumed."""
    with state.lock:
        if state.interrupt_flag:
            state.interrupt_flag = False
            raise _Interrupted


def _execute(state: State, prompt_id: str, prompt: dict[str, Any], client_id: str | None) -> None:
    behaviour = state.behaviour
    if behaviour.queue_delay_s:
        time.sleep(behaviour.queue_delay_s)
    with state.lock:
        state.waiting = [item for item in state.waiting if item[1] != prompt_id]
        if prompt_id in state.deleted:
            return
        state.current = prompt_id
        state.interrupt_flag = False  # execute_async starts with nodes.interrupt_processing(False)
    messages: list[tuple[str, dict[str, Any]]] = []

    def message(event: str, data: dict[str, Any]) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        messages.append((event, data))
        state.send(client_id, event, data)

    message("execution_start", {"prompt_id": prompt_id})
    message("execution_cached", {"nodes": [], "prompt_id": prompt_id})
    outputs: dict[str, Any] = {}
    executed: list[str] = []
    ok = True
    node_id = ""
    try:
        for node_id in sorted(prompt, key=lambda n: (len(n), n)):
            node = prompt[node_id]
            state.send(
                client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
            )
            time.sleep(behaviour.node_delay_s)
            _check_interrupt(state)
            if node_id == behaviour.fail_node:
                message(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": behaviour.fail_exception_message,
                        "exception_type": behaviour.fail_exception_type,
                        "traceback": ['  File "execution.py", line 1\n'],
                        "current_inputs": {},
                        "current_outputs": [],
                    },
                )
                ok = False
                break
            if node["class_type"] in SAMPLERS:
                source = node["inputs"].get(
                    "sampler_inputs"
                )  # WanVideoSamplerFromSettings: steps live upstream
                settings = prompt.get(str(source[0]), node) if isinstance(source, list) else node
                steps = int(settings["inputs"].get("steps", behaviour.steps))
                for step in range(1, steps + 1):
                    time.sleep(behaviour.step_delay_s)
                    _check_interrupt(state)  # ComfyUI's progress hook checks the flag at each step
                    state.send(
                        client_id,
                        "progress",
                        {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id},
                    )
            if node["class_type"] == "VHS_VideoCombine":
                prefix = str(node["inputs"].get("filename_prefix", "AnimateDiff"))
                subfolder, _, stem = prefix.rpartition("/")
                folder = state.output_dir / subfolder
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{stem}_00001.mp4"
                # VideoHelperSuite saves the first frame as a PNG holding the workflow, then the video.
                (folder / f"{stem}_00001.png").write_bytes(PNG_BYTES)
                (folder / name).write_bytes(VIDEO_BYTES + prompt_id.encode())
                ui = {
                    "gifs": [
                        {
                            "filename": name,
                            "subfolder": subfolder,
                            "type": "output",
                            "format": "video/h264-mp4",
                            "frame_rate": 16.0,
                            "workflow": f"{stem}_00001.png",
                            "fullpath": str(folder / name),
                        }
                    ]
                }
                outputs[node_id] = ui
                state.send(
                    client_id,
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                )
            executed.append(node_id)
    except _Interrupted:
        ok = False
        message(
            "execution_interrupted",
            {
                "prompt_id": prompt_id,
                "node_id": node_id,
                "node_type": prompt[node_id]["class_type"],
                "executed": executed,
            },
        )
    if ok:
        message("execution_success", {"prompt_id": prompt_id})
    with state.lock:
        state.history[prompt_id] = {
            "prompt": [0, prompt_id, prompt, {"client_id": client_id}, []],
            "outputs": outputs,
            "status": {
                "status_str": "success" if ok else "error",
                "completed": ok,
                "messages": [[event, data] for event, data in messages],
            },
            "meta": {},
        }
        state.current = None
    state.send(client_id, "executing", {"node": None, "prompt_id": prompt_id})


def _queue_item(number: int, prompt_id: str) -> list[Any]:
    return [number, prompt_id, {}, {}, []]


def _worker(state: State) -> None:
    while True:
        item = state.work.get()
        if item is None:
            return
        _execute(state, *item)


def _handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._reply(status, json.dumps(data).encode())

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization")
            with state.lock:
                state.requests.append((self.command, self.path, auth))
            token = state.behaviour.token
            if token and auth != f"Bearer {token}":
                self._reply(401, b"401: Unauthorized", "text/plain")
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            path = url.path.removeprefix("/api") if url.path.startswith("/api/") else url.path
            if path == "/ws":
                self._websocket(query.get("clientId") or uuid.uuid4().hex)
            elif path.startswith("/object_info/"):
                self._json(200, object_info(state, urllib.parse.unquote(path.removeprefix("/object_info/"))))
            elif path == "/system_stats":
                b = state.behaviour
                self._json(
                    200,
                    {
                        "system": {"comfyui_version": "0.7.0", "os": "posix"},
                        "devices": [
                            {"name": b.device_name, "type": "cuda", "index": 0, "vram_total": b.vram_total}
                        ],
                    },
                )
            elif path == "/queue":
                with state.lock:
                    running = [_queue_item(0, f"other-running-{i}") for i in range(state.running)]
                    if state.current is not None:
                        running.append(_queue_item(0, state.current))
                    pending = [_queue_item(n, pid) for n, pid in state.waiting]
                    pending += [_queue_item(0, f"other-pending-{i}") for i in range(max(0, state.pending))]
                self._json(200, {"queue_running": running, "queue_pending": pending})
            elif path.startswith("/history/"):
                prompt_id = urllib.parse.unquote(path.removeprefix("/history/"))
                with state.lock:
                    entry = state.history.get(prompt_id)
                self._json(200, {prompt_id: entry} if entry else {})
            elif path == "/view":
                folder = {"output": state.output_dir, "input": state.input_dir}.get(
                    query.get("type", "output")
                )
                name = query.get("filename", "")
                if folder is None or not name or name.startswith("/") or ".." in name:
                    self._reply(400, b"")
                    return
                target = folder / query.get("subfolder", "") / name
                if not target.is_file():
                    self._reply(404, b"")
                    return
                self._reply(200, target.read_bytes(), "video/mp4")
            elif path == "/userdata":
                folder = state.user_dir / query.get("dir", "")
                if not folder.is_dir():
                    self._reply(404, b"Directory not found", "text/plain")
                    return
                files = [
                    {"path": p.name, "size": p.stat().st_size, "modified": p.stat().st_mtime}
                    for p in sorted(folder.iterdir())
                    if p.is_file()
                ]
                self._json(200, files if query.get("full_info") == "true" else [f["path"] for f in files])
            elif path.startswith("/userdata/"):
                target = state.user_dir / urllib.parse.unquote(path.removeprefix("/userdata/"))
                if not target.is_file():
                    self._reply(404, b"")
                    return
                self._reply(200, target.read_bytes())
            else:
                self._reply(404, b"")

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = urllib.parse.urlsplit(self.path).path
            path = path.removeprefix("/api") if path.startswith("/api/") else path
            if path == "/upload/image":
                time.sleep(state.behaviour.upload_delay_s)
                fields = _parse_multipart(body, self.headers.get("Content-Type", ""))
                filename, data = fields.get("image", (None, b""))
                if not filename:
                    self._reply(400, b"")
                    return
                subfolder = fields.get("subfolder", (None, b""))[1].decode()
                target = state.input_dir / subfolder / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                self._json(200, {"name": filename, "subfolder": subfolder, "type": "input"})
            elif path == "/prompt":
                payload = json.loads(body)
                prompt = payload.get("prompt")
                if not isinstance(prompt, dict):
                    self._json(
                        400,
                        {
                            "error": {
                                "type": "no_prompt",
                                "message": "No prompt provided",
                                "details": "No prompt provided",
                                "extra_info": {},
                            },
                            "node_errors": {},
                        },
                    )
                    return
                error, node_errors = _validate(state, prompt)
                if error is not None:
                    self._json(400, {"error": error, "node_errors": node_errors})
                    return
                prompt_id = str(payload.get("prompt_id") or uuid.uuid4())
                client_id = payload.get("client_id")
                with state.lock:
                    state.prompts.append({"prompt_id": prompt_id, "prompt": prompt, "client_id": client_id})
                    state.number += 1
                    state.waiting.append((state.number, prompt_id))
                self._json(200, {"prompt_id": prompt_id, "number": state.number, "node_errors": {}})
                if state.behaviour.drop_ws_after_queue and client_id in state.sockets:
                    state.sockets[client_id].put(None)
                state.work.put((prompt_id, prompt, client_id))
            elif path == "/queue":
                payload = json.loads(body or b"{}")
                with state.lock:
                    if payload.get("clear"):
                        state.deleted += [pid for _n, pid in state.waiting]
                        state.waiting = []
                    for prompt_id in payload.get("delete", []):
                        if any(pid == prompt_id for _n, pid in state.waiting):
                            state.waiting = [item for item in state.waiting if item[1] != prompt_id]
                            state.deleted.append(prompt_id)
                self._reply(200, b"", "text/plain")
            elif path == "/interrupt":
                try:
                    payload = json.loads(body) if body else {}
                except ValueError:
                    payload = {}
                prompt_id = payload.get("prompt_id") if isinstance(payload, dict) else None
                with state.lock:
                    hit = not prompt_id or state.current == prompt_id
                    if hit:
                        state.interrupt_flag = True
                    state.interrupts.append((prompt_id, hit))
                self._reply(200, b"", "text/plain")
            else:
                self._reply(404, b"")

        def _websocket(self, client_id: str) -> None:
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            outbox: queue.Queue[bytes | None] = queue.Queue()
            with state.lock:
                state.sockets[client_id] = outbox
                remaining = state.running + state.pending + len(state.waiting) + (state.current is not None)
            sock = self.connection
            status = {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": client_id}
            sock.sendall(_frame(json.dumps({"type": "status", "data": status}).encode()))
            sock.sendall(_frame(b"\x01\x00\x00\x00binary-preview", opcode=0x2))  # a preview frame
            try:
                while True:
                    try:
                        item = outbox.get(timeout=0.05)
                    except queue.Empty:
                        item = b""
                    if item is None:
                        sock.sendall(_frame(struct.pack("!H", 1001), opcode=0x8))
                        return
                    if item:
                        sock.sendall(_frame(item))
                    readable, _, _ = select.select([sock], [], [], 0)
                    if readable:
                        frame = _read_frame(sock)
                        if frame is None or frame[0] == 0x8:
                            return
                        if frame[0] == 0x9:
                            sock.sendall(_frame(frame[1], opcode=0xA))
            except OSError:
                return
            finally:
                with state.lock:
                    if state.sockets.get(client_id) is outbox:
                        del state.sockets[client_id]
                self.close_connection = True

    return Handler


class FakeComfyAPI:
    """``with FakeComfyAPI(tmp_path) as comfy:`` serves on ``comfy.url`` until the block ends."""

    def __init__(
        self, root: Path, behaviour: Behaviour | None = None, port: int = 0, output_dir: Path | None = None
    ) -> None:
        self.state = State(root=root, behaviour=behaviour or Behaviour(), outputs_root=output_dir)
        for folder in (self.state.input_dir, self.state.output_dir, self.state.user_dir / "workflows"):
            folder.mkdir(parents=True, exist_ok=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.state))
        self.server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
            threading.Thread(target=_worker, args=(self.state,), daemon=True),
        ]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def behaviour(self) -> Behaviour:
        return self.state.behaviour

    def install_workflow(self, name: str, workflow: Any) -> Path:
        target = self.state.user_dir / "workflows" / name
        target.write_text(json.dumps(workflow))
        return target

    def __enter__(self) -> FakeComfyAPI:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self.state.lock:
            for outbox in self.state.sockets.values():
                outbox.put(None)
        self.state.work.put(None)
        self.server.shutdown()
        self.server.server_close()
