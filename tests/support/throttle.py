"""A TCP forwarder that caps the bytes per second sent upstream, for tests that must act mid-transfer.

Why: a local S3 server takes a 120 MB upload in about a second, so a test that kills the uploader
"mid-upload" races it, and loses on a fast or a loaded machine alike. Behind this forwarder the
upload lasts as long as the cap says, whatever the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

CHUNK_BYTES = 64 * 1024


class Throttle:
    """Forward ``127.0.0.1:<port>`` to ``upstream``, sending client bytes at most ``bytes_per_s``."""

    def __init__(self, upstream_host: str, upstream_port: int, bytes_per_s: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.bytes_per_s = bytes_per_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, capped: bool) -> None:
        began, sent = time.monotonic(), 0
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                sink.sendall(data)
                if capped:
                    sent += len(data)
                    ahead = sent / self.bytes_per_s - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for end in self._sockets:
                end.close()

    def __enter__(self) -> Throttle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
