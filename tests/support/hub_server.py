"""A local HTTP server that speaks the parts of the Hugging Face Hub protocol zr4 and
huggingface_hub use, plus a second "CDN" server that LFS downloads are redirected to.

Hub host (``endpoint``):
- ``HEAD/GET /{repo}/resolve/{revision}/{path}``: LFS files answer ``302`` to the CDN with
  ``X-Repo-Commit``, ``X-Linked-Etag`` (= sha256), ``X-Linked-Size``, ``ETag``; small non-LFS
  files are served directly. Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound,
  EntryNotFound, GatedRepo) like the real Hub, which huggingface_hub turns into its exceptions.
- ``GET /api/models/{repo}/revision/{revision}`` (model_info), ``GET /api/models/{repo}/tree/{revision}``
  (list_repo_files / list_repo_tree), ``POST /api/models/{repo}/paths-info/{revision}`` (get_paths_info).
CDN host (``cdn_endpoint``): ``GET/HEAD /blobs/{sha256}`` with ``Range`` support.

Fault knobs (set on the ``FakeHub`` object while it runs): ``drop_after[path]`` (list of byte
counts: each CDN GET of that path drops the connection after that many body bytes),
``corrupt[path]`` (number of responses with one byte flipped), ``fail_status[path]`` (list of
statuses answered before serving, e.g. [503]), ``stall[path]`` (once, halfway through the body:
send nothing for up to that many seconds, or until the client closes the connection; each stall is
recorded in ``stalls``), ``rate_bytes_per_s`` (throttle), per-repo ``token`` (401 without / 403
with a wrong one). Counters: ``bytes_served[path]`` and ``requests``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

_CHUNK = 256 << 10


@dataclass
class HubFile:
    repo: str
    path: str
    size: int
    sha256: str
    lfs: bool
    data: bytes | None = None
    file: Path | None = None

    @property
    def git_oid(self) -> str:
        if self.lfs:
            pointer = (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            )
            body = pointer.encode()
        else:
            body = self.data or b""
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.file is not None
        with open(self.file, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


@dataclass(frozen=True)
class Stall:
    """One ``stall`` as it happened: where in the body, how long, and whether the client gave up."""

    path: str
    at_byte: int  # file offset of the first byte not sent: where a resuming client asks to go on
    seconds: float
    client_closed: bool  # the client closed the connection during the stall (not the stall's end)


@dataclass
class HubRepo:
    name: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    token: str | None = None  # private/gated: requests need "Authorization: Bearer <token>"
    gated: bool = False


def deterministic_bytes(size: int, seed: str) -> bytes:
    """Reproducible pseudo-random content (cheap: a hashed block repeated with a counter)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB
    counter = 0
    while len(out) < size:
        out += counter.to_bytes(8, "little") + block[8:]
        counter += 1
    return bytes(out[:size])


class FakeHub:
    """Hub + CDN servers on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.drop_after: dict[str, list[int]] = {}
        self.corrupt: dict[str, int] = {}
        self.fail_status: dict[str, list[int]] = {}
        self.stall: dict[str, float] = {}
        self.stalls: list[Stall] = []
        self.rate_bytes_per_s: float | None = None
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str | None]] = []
        self.active_bodies = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # -- content --------------------------------------------------------------------------------
    def add_repo(self, name: str, *, token: str | None = None, gated: bool = False) -> HubRepo:
        if name not in self.repos:
            commit = hashlib.sha1(f"commit:{name}".encode()).hexdigest()
            self.repos[name] = HubRepo(name, commit, token=token, gated=gated)
        repo = self.repos[name]
        repo.token, repo.gated = token if token is not None else repo.token, gated or repo.gated
        return repo

    def add_file(
        self,
        repo: str,
        path: str,
        data: bytes | None = None,
        *,
        file: Path | None = None,
        sha256: str | None = None,
        lfs: bool = True,
    ) -> HubFile:
        if (data is None) == (file is None):
            raise ValueError("give data or file")
        if data is not None:
            size, digest = len(data), hashlib.sha256(data).hexdigest()
        else:
            assert file is not None
            size = file.stat().st_size
            digest = sha256 or _sha256_file(file)
        entry = HubFile(repo, path, size, digest, lfs, data=data, file=file)
        self.add_repo(repo).files[path] = entry
        return entry

    def served(self, path: str) -> int:
        with self._lock:
            return self.bytes_served[path]

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no response body is being written (e.g. after killing a client)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.active_bodies == 0:
                    return
            time.sleep(0.01)
        raise TimeoutError("the fake Hub is still sending")

    @property
    def total_served(self) -> int:
        with self._lock:
            return sum(self.bytes_served.values())

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, cdn=False))
        cdn_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, cdn=True))
        for server in (hub_server, cdn_server):
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.endpoint = f"http://127.0.0.1:{hub_server.server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{cdn_server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends a stall in progress
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- lookups used by the handler ------------------------------------------------------------
    def blob(self, sha256: str) -> HubFile | None:
        for repo in self.repos.values():
            for entry in repo.files.values():
                if entry.sha256 == sha256:
                    return entry
        return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _handler(hub: FakeHub, *, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        # -- helpers --------------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, payload: Any, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, code: str | None, message: str) -> None:
            headers = {"Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
                headers["X-Error-Message"] = message
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _authorized(self, repo: HubRepo) -> bool:
            if repo.token is None:
                return True
            auth = self.headers.get("Authorization", "")
            if auth == f"Bearer {repo.token}":
                return True
            code = "GatedRepo" if repo.gated else "RepoNotFound"
            if auth:
                self._error(403, code, f"Access to model {repo.name} is restricted")
            else:
                self._error(401, code, f"Repository {repo.name} needs authentication")
            return False

        def _repo(self, name: str, revision: str | None) -> HubRepo | None:
            repo = hub.repos.get(name)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {name} not found")
                return None
            if not self._authorized(repo):
                return None
            if revision is not None and revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo

        def _record(self) -> None:
            with hub._lock:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))

        # -- routes ---------------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            self._record()
            parts = urlsplit(self.path)
            segments = [unquote(s) for s in parts.path.split("/")[1:]]
            try:
                if cdn:
                    if len(segments) == 2 and segments[0] == "blobs":
                        entry = hub.blob(segments[1])
                        if entry is None:
                            self._error(404, None, "no such blob")
                        else:
                            self._serve_bytes(entry)
                        return
                elif segments[:2] == ["api", "models"] and len(segments) == 4:
                    self._api(f"{segments[2]}/{segments[3]}", "revision", "main", "", parts.query)
                    return
                elif segments[:2] == ["api", "models"] and len(segments) >= 6:
                    self._api(
                        f"{segments[2]}/{segments[3]}",
                        segments[4],
                        segments[5],
                        "/".join(segments[6:]),
                        parts.query,
                    )
                    return
                elif len(segments) >= 5 and segments[2] == "resolve":
                    self._resolve(f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:]))
                    return
                self._error(404, None, f"no route for {self.path}")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _resolve(self, name: str, revision: str, path: str) -> None:
            repo = self._repo(name, revision)
            if repo is None:
                return
            entry = repo.files.get(path)
            if entry is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
                return
            if hub.fail_status.get(path) and self.command == "GET":
                status = hub.fail_status[path].pop(0)
                self._error(status, None, "injected failure")
                return
            headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            if entry.lfs:
                headers.update(
                    {
                        "ETag": f'"{entry.sha256}"',
                        "X-Linked-Etag": f'"{entry.sha256}"',
                        "X-Linked-Size": str(entry.size),
                        "Location": f"{hub.cdn_endpoint}/blobs/{entry.sha256}?repo={quote(name)}&expires=9999999999",
                    }
                )
                self._send(302, b"", headers)
                return
            headers["ETag"] = f'"{entry.git_oid}"'
            self._serve_bytes(entry, headers)

        def _serve_bytes(self, entry: HubFile, extra: dict[str, str] | None = None) -> None:
            start, end = 0, entry.size
            status = 200
            range_header = self.headers.get("Range")
            if range_header and range_header.startswith("bytes="):
                first, _, last = range_header[6:].partition("-")
                start = int(first or 0)
                end = int(last) + 1 if last else entry.size
                if start >= entry.size:
                    self._send(416, b"", {"Content-Range": f"bytes */{entry.size}"})
                    return
                end = min(end, entry.size)
                status = 206
            self.send_response(status)
            headers = {
                "ETag": f'"{entry.sha256}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            headers.update(extra or {})
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{entry.size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            with hub._lock:
                hub.active_bodies += 1
            try:
                self._body(entry, start, end)
            finally:
                with hub._lock:
                    hub.active_bodies -= 1

        def _body(self, entry: HubFile, start: int, end: int) -> None:
            path = entry.path
            with hub._lock:
                drops = hub.drop_after.get(path)
                drop_at = start + drops.pop(0) if drops else None
                corrupt = hub.corrupt.get(path, 0) > 0
                if corrupt:
                    hub.corrupt[path] -= 1
                stall = hub.stall.pop(path, None)
            flip_at = entry.size // 2 if corrupt else None
            limit = end if drop_at is None else min(end, drop_at)
            rate = hub.rate_bytes_per_s
            plain = (
                entry.file is not None
                and flip_at is None
                and rate is None
                and stall is None
                and drop_at is None
            )
            if plain:  # fast path: zero-copy
                assert entry.file is not None
                with open(entry.file, "rb") as handle:
                    offset, sent_total = start, 0
                    while offset < end:
                        sent = os.sendfile(
                            self.connection.fileno(), handle.fileno(), offset, min(end - offset, 8 << 20)
                        )
                        if sent <= 0:
                            break
                        offset += sent
                        sent_total += sent
                        with hub._lock:
                            hub.bytes_served[path] += sent
                return
            began = time.monotonic()
            position, sent_total = start, 0
            while position < limit:
                chunk_end = min(position + _CHUNK, limit)
                chunk = entry.read(position, chunk_end)
                if flip_at is not None and position <= flip_at < chunk_end:
                    mutable = bytearray(chunk)
                    mutable[flip_at - position] ^= 0xFF
                    chunk = bytes(mutable)
                if stall is not None and position - start >= (end - start) // 2:
                    if self._hang(path, position, stall):
                        self.close_connection = True
                        return
                    stall = None
                self.wfile.write(chunk)
                sent_total += len(chunk)
                with hub._lock:
                    hub.bytes_served[path] += len(chunk)
                position = chunk_end
                if rate:
                    ahead = sent_total / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            if drop_at is not None and limit < end:
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

        def _hang(self, path: str, position: int, seconds: float) -> bool:
            """Send nothing for up to ``seconds``; True when the client closed the connection meanwhile.

            Mid-body the client sends nothing, so the socket turning readable means its end closed.
            """
            began = time.monotonic()
            closed = False
            while not closed and not hub._stopping.is_set():
                left = began + seconds - time.monotonic()
                if left <= 0:
                    break
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                if readable:
                    try:
                        closed = self.connection.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        closed = True
                    if not closed:
                        time.sleep(min(left, 0.05))  # unexpected bytes: do not spin on them
            with hub._lock:
                hub.stalls.append(Stall(path, position, time.monotonic() - began, closed))
            return closed

        def _api(self, name: str, kind: str, revision: str, rest: str, query: str) -> None:
            repo = self._repo(name, revision)
            if repo is None:
                return
            if kind == "revision" and self.command == "GET":
                siblings = [{"rfilename": p} for p in sorted(repo.files)]
                self._json(
                    {
                        "_id": repo.commit[:24],
                        "id": name,
                        "modelId": name,
                        "sha": repo.commit,
                        "private": repo.token is not None,
                        "siblings": siblings,
                        "tags": [],
                        "downloads": 0,
                        "likes": 0,
                    }
                )
                return
            if kind == "tree" and self.command == "GET":
                recursive = parse_qs(query).get("recursive", ["false"])[0].lower() == "true"
                self._json(self._tree(repo, rest, recursive))
                return
            if kind == "paths-info" and self.command == "POST":
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                if "json" in self.headers.get("Content-Type", ""):
                    paths = list(json.loads(body).get("paths", []))
                else:
                    paths = parse_qs(body).get("paths", [])
                self._json([_file_json(repo.files[p]) for p in paths if p in repo.files])
                return
            self._error(404, None, f"no API route {kind}")

        def _tree(self, repo: HubRepo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
            prefix = prefix.strip("/")
            out: list[dict[str, Any]] = []
            folders: set[str] = set()
            for path in sorted(repo.files):
                if prefix and not path.startswith(prefix + "/"):
                    continue
                relative = path[len(prefix) + 1 :] if prefix else path
                if "/" in relative and not recursive:
                    folders.add((prefix + "/" if prefix else "") + relative.split("/", 1)[0])
                    continue
                if recursive:
                    parts = path.split("/")[:-1]
                    for depth in range(len(prefix.split("/")) if prefix else 0, len(parts)):
                        folders.add("/".join(parts[: depth + 1]))
                out.append(_file_json(repo.files[path]))
            out += [
                {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)
            ]
            return out

    return Handler


def _file_json(entry: HubFile) -> dict[str, Any]:
    info: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": entry.path}
    if entry.lfs:
        info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
    return info


def main() -> None:
    """Serve files from a folder (``python -m support.hub_server REPO DIR``) for manual runs and benches."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rate", type=float, default=None, help="bytes per second")
    args = parser.parse_args()
    hub = FakeHub()
    for file in sorted(args.folder.rglob("*")):
        if file.is_file():
            hub.add_file(args.repo, file.relative_to(args.folder).as_posix(), file=file)
    hub.rate_bytes_per_s = args.rate
    with hub:
        print(json.dumps({"endpoint": hub.endpoint, "cdn": hub.cdn_endpoint}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
