"""An HTTP server that records every request it gets, to stand behind the auth proxy in attack tests.

Whatever reaches it has passed the proxy, so a test can say exactly what an attack got through:
the method, the request target as sent, and the headers. It answers like enough of ComfyUI for
the proxy's paths: ``GET /ws`` upgrades to a websocket that sends one ``status`` message, the
frontend's manifest (``/assets/manifest-CebUEmtR.json``, the name in comfyui-frontend-package
1.35.9's ``index.html``) is JSON, ``POST``/``PUT`` bodies are read whole, and any other path
answers 200 with its own target. Requests carrying the word ``attack`` (in the target or an
``X-Attack`` header) are an attack's: :attr:`RecordingBackend.attacks` lists the ones that got here.
Given ``pages`` (path -> HTML), it serves those too: an attacker's site in browser tests.

Standard library only; runs in a thread of the test process, on a free loopback port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_PATH = "/assets/manifest-CebUEmtR.json"
MANIFEST = {"name": "ComfyUI", "short_name": "ComfyUI", "start_url": "/", "display": "standalone"}
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


@dataclass(frozen=True)
class Seen:
    """One request as it arrived here."""

    method: str
    target: str
    headers: dict[str, str]
    body_size: int

    @property
    def is_attack(self) -> bool:
        return "attack" in self.target.lower() or "x-attack" in self.headers


class RecordingBackend:
    """``with RecordingBackend() as backend:`` serves on ``backend.port`` and records in ``.seen``."""

    def __init__(self, name: str = "backend", pages: dict[str, str] | None = None) -> None:
        self.name = name
        self.pages = dict(pages or {})  # path -> HTML served there
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def attacks(self) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.is_attack]

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def __enter__(self) -> RecordingBackend:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> int:
                length = int(self.headers.get("Content-Length", "0") or 0)
                if length:
                    self.rfile.read(length)
                return length

            def _serve(self) -> None:
                size = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else 0
                headers = {name.lower(): value for name, value in self.headers.items()}
                # The target as sent: http.server rewrites a leading "//" in self.path.
                target = self.requestline.split(" ")[1]
                backend._record(Seen(self.command, target, headers, size))
                if self.path.startswith("/ws") and headers.get("upgrade", "").lower() == "websocket":
                    self._websocket(headers.get("sec-websocket-key", ""))
                elif self.path in backend.pages:
                    self._answer(200, backend.pages[self.path].encode(), "text/html; charset=utf-8")
                elif self.path == MANIFEST_PATH:
                    self._answer(200, json.dumps(MANIFEST).encode(), "application/manifest+json")
                else:
                    answer = {"served_by": backend.name, "method": self.command, "target": self.path}
                    self._answer(200, json.dumps(answer).encode())

            def _websocket(self, key: str) -> None:
                accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                message = json.dumps({"type": "status", "data": {"served_by": backend.name}}).encode()
                self.wfile.write(bytes([0x81, len(message)]) + message)  # one unmasked text frame
                self.wfile.flush()
                self.close_connection = True
                try:  # hold the socket until the other side closes it
                    while self.rfile.read(1):
                        pass
                except OSError:
                    return

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

            def log_message(self, *_args: object) -> None:
                pass

        return Handler
