"""A local Python package index, served over HTTP, for running uv for real without a public index.

The tests build tiny real wheels (``py3-none-any``: a module, ``METADATA``, ``WHEEL`` and ``RECORD``,
zipped with fixed timestamps so the same project and version always has the same sha256) and serve
them as a PEP 503 simple index in its JSON form (PEP 691, ``application/vnd.pypi.simple.v1+json``):

- ``GET /simple/`` lists the projects; ``GET /simple/<name>/`` lists a project's files with
  ``hashes``, ``size`` and PEP 700's ``upload-time`` (``--exclude-newer`` drops a file without one:
  astral-sh/uv@26a9dd4b2125bc271b47855e1fa0c49af3365db5:crates/uv-resolver/src/version_map.rs) and
  PEP 714's ``core-metadata`` hash, so uv reads ``<wheel>.metadata`` instead of the wheel.
- ``GET /files/<file>`` and ``GET /files/<file>.metadata`` serve the wheel and its ``METADATA``.

Every answer says ``Cache-Control: no-cache``, so a uv run after the index changes sees the change
(a test that finds an old pin kept must not owe it to uv's HTTP cache). ``requests`` records every
path asked for. ``publish`` adds a release while the server runs, as a public index gains one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Wheel:
    """One built wheel: its file name, bytes and ``METADATA``."""

    project: str
    version: str
    filename: str
    data: bytes
    metadata: bytes
    uploaded: dt.datetime

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_wheel(project: str, version: str, requires: Sequence[str], uploaded: dt.datetime) -> Wheel:
    """A minimal installable wheel of ``project`` ``version`` that requires ``requires`` (PEP 508 lines)."""
    module = re.sub(r"[-.]+", "_", canonical_name(project))
    dist_info = f"{module}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {project}\n"
        f"Version: {version}\n" + "".join(f"Requires-Dist: {line}\n" for line in requires)
    ).encode()
    members = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: zr4-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_digest(data)},{len(data)}\n" for path, data in members.items())
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            info = zipfile.ZipInfo(path, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    filename = f"{module}-{version}-py3-none-any.whl"
    return Wheel(project, version, filename, buffer.getvalue(), metadata, uploaded)


class PackageIndex:
    """The projects and files the server answers with; ``publish`` may be called while it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wheels: dict[str, list[Wheel]] = {}
        self.requests: list[str] = []
        self.url = ""

    def publish(
        self, project: str, version: str, uploaded: dt.datetime, requires: Sequence[str] = ()
    ) -> Wheel:
        wheel = build_wheel(project, version, requires, uploaded)
        with self._lock:
            self._wheels.setdefault(canonical_name(project), []).append(wheel)
        return wheel

    def _project_page(self, name: str) -> dict[str, object] | None:
        with self._lock:
            wheels = list(self._wheels.get(name, ()))
        if not wheels:
            return None
        files = [
            {
                "filename": wheel.filename,
                "url": f"{self.url}/files/{wheel.filename}",
                "hashes": {"sha256": wheel.sha256},
                "size": len(wheel.data),
                "upload-time": wheel.uploaded.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "core-metadata": {"sha256": hashlib.sha256(wheel.metadata).hexdigest()},
            }
            for wheel in wheels
        ]
        versions = sorted({wheel.version for wheel in wheels})
        return {"meta": {"api-version": "1.1"}, "name": name, "files": files, "versions": versions}

    def _file(self, filename: str) -> bytes | None:
        with self._lock:
            wheels = [wheel for group in self._wheels.values() for wheel in group]
        for wheel in wheels:
            if filename == wheel.filename:
                return wheel.data
            if filename == wheel.filename + ".metadata":
                return wheel.metadata
        return None

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path``."""
        with self._lock:
            self.requests.append(path)
            names = sorted(self._wheels)
        parts = [unquote(part) for part in path.split("?", 1)[0].split("/") if part]
        if parts == ["simple"]:
            listing = {"meta": {"api-version": "1.1"}, "projects": [{"name": name} for name in names]}
            return 200, SIMPLE_JSON, json.dumps(listing).encode()
        if len(parts) == 2 and parts[0] == "simple":
            page = self._project_page(canonical_name(parts[1]))
            if page is not None:
                return 200, SIMPLE_JSON, json.dumps(page).encode()
        if len(parts) == 2 and parts[0] == "files":
            data = self._file(parts[1])
            if data is not None:
                return 200, "application/octet-stream", data
        return 404, "text/plain", b"not found\n"


def _handler(index: PackageIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = index.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_index() -> Iterator[PackageIndex]:
    """A running index on 127.0.0.1 (a free port); ``index.url + "/simple"`` is its index URL."""
    index = PackageIndex()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    index.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
