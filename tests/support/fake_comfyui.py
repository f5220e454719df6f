"""A stand-in for ComfyUI v0.7.0's ``main.py``, for the start-sequence and doctor tests.

It parses the same command-line flags (a subset of v0.7.0's comfy/cli_args.py, with ComfyUI's
mutually exclusive VRAM and attention groups, so an unknown flag or a clash exits 2 like argparse
in ComfyUI does), then behaves like ComfyUI seen from outside:

- loads ``custom_nodes/*`` from the folder it lives in and prints ComfyUI's "Import times for
  custom nodes:" block (``(IMPORT FAILED)`` for a pack whose ``__init__.py`` raises);
- with ``--quick-test-for-ci`` exits 0 right there;
- otherwise serves HTTP on ``--listen``/``--port``: ``GET /system_stats`` (JSON), ``GET /`` (a page
  that, like ComfyUI's frontend, opens ``/ws`` and queues a workflow with ``POST /prompt``), the
  websocket ``/ws`` (``status`` on connect; for each queued prompt ``execution_start``, ``progress``
  1..``$FAKE_COMFYUI_STEPS`` (default 3), ``executed``, ``execution_success``, with ComfyUI's message
  shapes), ``GET /view?filename=&type=output|input`` (the file, streamed) and
  ``POST /upload/image`` (multipart, stored whole in the input folder);
- serves the frontend's web-app manifest at ``/assets/manifest-CebUEmtR.json`` (the name
  comfyui-frontend-package 1.35.9's ``index.html`` links, with a ``<link rel="manifest">`` on its
  page as there);
- with ``$FAKE_COMFYUI_REQUEST_LOG`` (a file) appends one JSON line per request it gets (method,
  target, ``Origin``), so a test can tell what reached it;
- writes one output file (``ComfyUI_00001_.png``) into ``--output-directory``;
- on SIGTERM/SIGINT writes ``sigterm`` into ``$FAKE_COMFYUI_STATE`` and exits 0.

``$FAKE_COMFYUI_STATE`` (a folder) also receives ``argv.json`` (the arguments and the start time).
``$FAKE_COMFYUI_EXIT_AFTER`` (seconds) and ``$FAKE_COMFYUI_EXIT_CODE`` make it exit by itself.
Standard library only: it runs under whichever interpreter plays ``$COMFYUI_PYTHON``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "0.7.0"
OUTPUT_NAME = "ComfyUI_00001_.png"
# A 1x1 PNG: enough to be a real image file.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def build_parser(exclude: frozenset[str] = frozenset()) -> argparse.ArgumentParser:
    """Part of v0.7.0's flag set with ComfyUI's arities and exclusive groups (comfy/cli_args.py).

    ``exclude`` leaves flags out, to play an older ComfyUI that lacks them.
    """
    parser = argparse.ArgumentParser(prog="main.py")

    def add(target: Any, flag: str, **options: Any) -> None:
        if flag not in exclude:
            target.add_argument(flag, **options)

    add(parser, "--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0,::")
    add(parser, "--port", type=int, default=8188)
    add(parser, "--output-directory", type=str, default=None)
    # Also taken by ComfyUI v0.7.0 (data/comfyui_flags.yaml); `zr4 doctor` passes them.
    add(parser, "--temp-directory", type=str, default=None)
    add(parser, "--input-directory", type=str, default=None)
    add(parser, "--user-directory", type=str, default=None)
    add(parser, "--database-url", type=str, default=None)
    add(parser, "--extra-model-paths-config", type=str, default=None, nargs="+", action="append")
    add(parser, "--disable-auto-launch", action="store_true")
    add(parser, "--preview-method", type=str, default="none", choices=["none", "auto", "latent2rgb", "taesd"])
    add(parser, "--reserve-vram", type=float, default=None)
    for flag in ("--cpu-vae", "--force-fp16", "--disable-smart-memory", "--async-offload"):
        add(parser, flag, action="store_true")
    add(parser, "--disable-pinned-memory", action="store_true")
    add(parser, "--fast", nargs="*", default=None)
    add(parser, "--quick-test-for-ci", action="store_true")
    vram = parser.add_mutually_exclusive_group()
    for flag in ("--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"):
        add(vram, flag, action="store_true")
    attention = parser.add_mutually_exclusive_group()
    for flag in ("--use-pytorch-cross-attention", "--use-sage-attention", "--use-flash-attention"):
        add(attention, flag, action="store_true")
    return parser


def load_custom_nodes(root: Path) -> list[tuple[str, bool, float]]:
    results = []
    for pack in sorted((root / "custom_nodes").glob("*")):
        init = pack / "__init__.py"
        if not init.is_file():
            continue
        started = time.perf_counter()
        try:
            spec = importlib.util.spec_from_file_location(pack.name.replace("-", "_"), init)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            ok = True
        except Exception as error:
            print(f"Cannot import {pack} module for custom nodes: {error}", flush=True)
            ok = False
        results.append((str(pack), ok, time.perf_counter() - started))
    print("\nImport times for custom nodes:")
    for path, ok, seconds in results:
        print(f"{seconds:6.1f} seconds{'' if ok else ' (IMPORT FAILED)'}: {path}")
    print(flush=True)
    return results


# The page at "/": what a browser test needs of ComfyUI's frontend (a websocket, a queued prompt).
MANIFEST_PATH = "/assets/manifest-CebUEmtR.json"
MANIFEST = b'{"name": "ComfyUI", "short_name": "ComfyUI", "start_url": "/", "display": "standalone"}'
UI_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>ComfyUI</title>
<link rel="manifest" href="./assets/manifest-CebUEmtR.json"></head>
<body><h1 id="title">ComfyUI</h1><p id="ws">connecting</p><button id="queue">Queue</button>
<pre id="log"></pre>
<script>
const clientId = "browser-" + Math.random().toString(16).slice(2);
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const socket = new WebSocket(scheme + location.host + "/ws?clientId=" + clientId);
socket.onopen = () => { document.getElementById("ws").textContent = "open"; };
socket.onclose = () => { document.getElementById("ws").textContent = "closed"; };
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  const data = message.data || {};
  log(message.type + (data.value !== undefined ? " " + data.value + "/" + data.max : ""));
};
document.getElementById("queue").onclick = async () => {
  const answer = await fetch("/prompt", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({client_id: clientId, prompt: {"1": {class_type: "EmptyImage", inputs: {}}}})});
  log("queued " + answer.status);
};
</script></body></html>
"""
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class WebSocketClients:
    """The open websockets (RFC 6455, server side, unfragmented frames), for broadcasting messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: dict[socket.socket, threading.Lock] = {}

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._sockets[connection] = threading.Lock()

    def remove(self, connection: socket.socket) -> None:
        with self._lock:
            self._sockets.pop(connection, None)

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x1) -> bytes:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        return head + payload

    def send_frame(self, connection: socket.socket, frame: bytes) -> None:
        with self._lock:
            lock = self._sockets.get(connection)
        if lock is None:
            return
        with lock:
            try:
                connection.sendall(frame)
            except OSError:
                self.remove(connection)

    def send(self, connection: socket.socket, message: dict[str, Any]) -> None:
        self.send_frame(connection, self.frame(json.dumps(message).encode()))

    def broadcast(self, message: dict[str, Any]) -> None:
        with self._lock:
            connections = list(self._sockets)
        for connection in connections:
            self.send(connection, message)


def _read_exact(stream: Any, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionError("websocket closed")
    return bytes(data)


def run_prompt(clients: WebSocketClients, prompt_id: str, steps: int) -> None:
    """Send what ComfyUI sends while it runs a prompt (its server.py/execution.py message types)."""
    clients.broadcast({"type": "execution_start", "data": {"prompt_id": prompt_id}})
    clients.broadcast({"type": "executing", "data": {"node": "1", "prompt_id": prompt_id}})
    for value in range(1, steps + 1):
        time.sleep(0.02)
        clients.broadcast(
            {"type": "progress", "data": {"value": value, "max": steps, "prompt_id": prompt_id, "node": "1"}}
        )
    clients.broadcast({"type": "executed", "data": {"node": "1", "output": {}, "prompt_id": prompt_id}})
    clients.broadcast({"type": "execution_success", "data": {"prompt_id": prompt_id}})


def _handler(output_dir: Path, input_dir: Path, clients: WebSocketClients) -> type[BaseHTTPRequestHandler]:
    steps = int(os.environ.get("FAKE_COMFYUI_STEPS", "3") or 3)
    request_log = os.environ.get("FAKE_COMFYUI_REQUEST_LOG")
    log_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            if not request_log:
                return
            line = {"method": self.command, "target": self.path, "origin": self.headers.get("Origin", "")}
            with log_lock, open(request_log, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(line) + "\n")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _websocket(self) -> None:
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            clients.add(self.connection)
            sid = parse_qs(urlsplit(self.path).query).get("clientId", [uuid.uuid4().hex])[0]
            status = {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}
            clients.send(self.connection, {"type": "status", "data": status})
            try:
                while True:
                    first, second = _read_exact(self.rfile, 2)
                    size = second & 0x7F
                    if size == 126:
                        size = struct.unpack("!H", _read_exact(self.rfile, 2))[0]
                    elif size == 127:
                        size = struct.unpack("!Q", _read_exact(self.rfile, 8))[0]
                    mask = _read_exact(self.rfile, 4) if second & 0x80 else b"\0\0\0\0"
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_read_exact(self.rfile, size)))
                    opcode = first & 0x0F
                    if opcode == 0x8:  # close: answer it and stop
                        clients.send_frame(self.connection, clients.frame(data[:2], 0x8))
                        return
                    if opcode == 0x9:  # ping
                        clients.send_frame(self.connection, clients.frame(data, 0xA))
            except (ConnectionError, OSError):
                return
            finally:
                clients.remove(self.connection)

        def _view(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            name = query.get("filename", [""])[0]
            folder = input_dir if query.get("type", ["output"])[0] == "input" else output_dir
            path = folder / name
            if not name or "/" in name or ".." in name or not path.is_file():
                self._send(404, b"404: Not Found", "text/plain")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Content-Disposition", f'filename="{name}"')
            self.end_headers()
            with path.open("rb") as stream:
                shutil.copyfileobj(stream, self.wfile, 1 << 20)

        def do_GET(self) -> None:
            self._record()
            route = urlsplit(self.path).path
            if route == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
                self._websocket()
                return
            if route == "/view":
                self._view()
                return
            if route == "/system_stats":
                body = json.dumps(
                    {"system": {"comfyui_version": VERSION, "python_version": sys.version}, "devices": []}
                ).encode()
                kind = "application/json"
            elif route == "/":
                body = UI_PAGE
                kind = "text/html"
            elif route == MANIFEST_PATH:
                body, kind = MANIFEST, "application/json"
            else:
                self._send(404, b"404: Not Found", "text/plain")
                return
            self._send(200, body, kind)

        def do_POST(self) -> None:
            self._record()
            length = int(self.headers.get("Content-Length", "0") or 0)
            body = self.rfile.read(length)
            route = urlsplit(self.path).path
            if route == "/prompt":
                try:
                    prompt = json.loads(body)["prompt"]
                except (ValueError, KeyError, TypeError):
                    self._send(400, b'{"error": "no prompt"}', "application/json")
                    return
                prompt_id = str(uuid.uuid4())
                answer = {"prompt_id": prompt_id, "number": 0, "node_errors": {}, "nodes": len(prompt)}
                self._send(200, json.dumps(answer).encode(), "application/json")
                threading.Thread(target=run_prompt, args=(clients, prompt_id, steps), daemon=True).start()
            elif route == "/upload/image":
                kind = self.headers.get("Content-Type", "")
                message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + body)
                for part in message.iter_parts():
                    name = part.get_filename()
                    if part.get_param("name", header="content-disposition") == "image" and name:
                        input_dir.mkdir(parents=True, exist_ok=True)
                        (input_dir / Path(name).name).write_bytes(part.get_payload(decode=True) or b"")
                        answer = {"name": Path(name).name, "subfolder": "", "type": "input"}
                        self._send(200, json.dumps(answer).encode(), "application/json")
                        return
                self._send(400, b"no image", "text/plain")
            else:
                self._send(404, b"404: Not Found", "text/plain")

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The handler goes in before argv.json is written: tests send SIGTERM as soon as they see that
    # file, and a signal before the handler would kill the process with no "sigterm" record.
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state = Path(os.environ["FAKE_COMFYUI_STATE"]) if os.environ.get("FAKE_COMFYUI_STATE") else None
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        record = {
            "argv": sys.argv[1:] if argv is None else argv,
            "started_at": time.time(),
            "pid": os.getpid(),
        }
        # Renamed into place: a reader never sees half a file. Per process: one ComfyUI per GPU
        # shares this folder, and a shared temporary name let one instance rename the other's away.
        partial = state / f"argv.json.{os.getpid()}.part"
        partial.write_text(json.dumps(record))
        os.replace(partial, state / "argv.json")
    load_custom_nodes(Path(__file__).resolve().parent)
    if args.quick_test_for_ci:
        return 0

    output_dir = Path(args.output_directory or "output")
    output_dir.mkdir(parents=True, exist_ok=True)
    host = (args.listen or "127.0.0.1").split(",")[0]
    input_dir = Path(os.environ.get("FAKE_COMFYUI_INPUT") or output_dir.parent / "input")
    server = ThreadingHTTPServer((host, args.port), _handler(output_dir, input_dir, WebSocketClients()))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    print(f"To see the GUI go to: http://{host}:{args.port}", flush=True)

    # A finished "job": written under a temporary name, then renamed, as ComfyUI's savers end up.
    partial = output_dir / f".{OUTPUT_NAME}.{os.getpid()}.part"  # per process, as above
    partial.write_bytes(PNG_BYTES)
    os.replace(partial, output_dir / OUTPUT_NAME)

    exit_after = float(os.environ.get("FAKE_COMFYUI_EXIT_AFTER", "0") or 0)
    stop.wait(exit_after if exit_after > 0 else None)
    server.shutdown()
    server.server_close()
    if stopped_by:
        if state is not None:
            (state / "sigterm").write_text(str(stopped_by[0]))
        print(f"received signal {stopped_by[0]}, exiting", flush=True)
        return 0
    return int(os.environ.get("FAKE_COMFYUI_EXIT_CODE", "0"))


if __name__ == "__main__":
    sys.exit(main())
