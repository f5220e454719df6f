"""Resumable, verified download of one file over HTTP(S).

Bytes go to ``<dest>.partial`` with a small ``<dest>.partial.json`` sidecar that records what the
partial file is (source, expected size and sha256) and how far it got. A later process, after a
kill -9 or a pod restart, continues with an HTTP ``Range`` request. sha256 is computed while the
bytes arrive (on a second thread, so hashing overlaps the network); the file is moved into place
with ``os.replace`` only when size and hash match, so ComfyUI never sees half a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from zr4.runtime.models.errors import IntegrityError, ModelsError, NetworkError
from zr4.runtime.models.hub import describe_http_failure

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 8
_REHASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class DownloadOptions:
    """Retry and buffering knobs; defaults suit a flaky link to a pod."""

    retries: int = 6  # failed attempts in a row (an attempt that made progress resets the count)
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    stall_timeout_s: float = 60.0  # no byte for this long: drop the connection and retry
    chunk_bytes: int = 1 << 20
    buffers: int = 32
    sidecar_every_bytes: int = 32 << 20
    sync_every_bytes: int = 64 << 20  # flushed to disk as it arrives, so the final fsync is short


@dataclass(frozen=True)
class Source:
    """Where the bytes come from and what they must be."""

    url: str
    headers: Mapping[str, str]
    size: int | None
    sha256: str | None
    sha256_prefix: str | None = None
    identity: str = ""  # stable description (repo@commit:path or URL) recorded with the partial
    repo: str | None = None
    revision: str = "main"
    path: str | None = None


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    fetched_bytes: int
    resumed_from: int


class _Transient(Exception):
    """A failure worth retrying (drop, stall, 5xx, 429)."""


class _RestartFromZero(Exception):
    """The server cannot continue this partial file (ignored or refused the Range)."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial.json")


def read_sidecar(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_sidecar(dest: Path, source: Source, done_bytes: int) -> None:
    record = {
        "version": 1,
        "identity": source.identity or source.url,
        "size": source.size,
        "sha256": source.sha256,
        "bytes": done_bytes,
        "updated": time.time(),
    }
    tmp = sidecar_path(dest).with_name(sidecar_path(dest).name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, sidecar_path(dest))


def _sidecar_matches(record: dict[str, Any] | None, source: Source) -> bool:
    return (
        record is not None
        and record.get("identity") == (source.identity or source.url)
        and record.get("size") == source.size
        and record.get("sha256") == source.sha256
    )


def discard_partial(dest: Path) -> None:
    for leftover in (partial_path(dest), sidecar_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def resumable_bytes(dest: Path, source: Source) -> int:
    """Bytes of ``dest``'s partial file a download of ``source`` would keep (0 if it restarts)."""
    part = partial_path(dest)
    if not part.exists() or not _sidecar_matches(read_sidecar(dest), source):
        return 0
    size = part.stat().st_size
    if source.size is not None and size > source.size:
        return 0
    return size


class _Hasher:
    """sha256 on its own thread, fed the buffers the receiver already wrote to disk."""

    def __init__(self, buffers: int, chunk_bytes: int) -> None:
        self.digest = hashlib.sha256()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(chunk_bytes))
        self._work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zr4-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            buffer, length = item
            try:
                if self._error is None:
                    self.digest.update(memoryview(buffer)[:length])
            except BaseException as error:  # surfaced by finish()
                self._error = error
            finally:
                self._free.put(buffer)

    def buffer(self) -> bytearray:
        return self._free.get()

    def give(self, buffer: bytearray, length: int) -> None:
        self._work.put((buffer, length))

    def recycle(self, buffer: bytearray) -> None:
        self._free.put(buffer)

    def finish(self) -> str:
        self._work.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.digest.hexdigest()


class _Syncer:
    """fdatasync on its own thread every ``every_bytes`` written, so durability costs no time at the end."""

    def __init__(self, fd: int, every_bytes: int, start: int) -> None:
        self.written = start
        self._fd = fd
        self._every = every_bytes
        self._synced = start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zr4-fdatasync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            written = self.written
            if written - self._synced >= self._every:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
                self._synced = written

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _open(
    url: str, headers: Mapping[str, str], offset: int, timeout_s: float
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
    """GET ``url`` from ``offset``, following redirects; auth is not sent to another host."""
    request_headers = {key: value for key, value in headers.items()}
    request_headers["Accept-Encoding"] = "identity"
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    for _ in range(_MAX_REDIRECTS):
        parts = urlsplit(url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout_s)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        connection.request("GET", target, headers=request_headers)
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            response.read()
            connection.close()
            if not location:
                raise ModelsError(f"HTTP {response.status} without Location from {url}")
            new_url = urljoin(url, location)
            if urlsplit(new_url).netloc != parts.netloc:
                request_headers = {k: v for k, v in request_headers.items() if k.lower() != "authorization"}
            url = new_url
            continue
        return connection, response, url
    raise ModelsError(f"too many redirects fetching {url}")


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.split("-", 1)[0]
    try:
        return int(start), (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


def _stream_once(
    source: Source,
    handle: Any,
    offset: int,
    hasher: _Hasher,
    options: DownloadOptions,
    on_bytes: Callable[[int], None],
    dest: Path,
    state: dict[str, int],
    syncer: _Syncer | None = None,
) -> None:
    """One HTTP attempt from ``offset``; returns when the body is complete."""
    try:
        connection, response, final_url = _open(source.url, source.headers, offset, options.stall_timeout_s)
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connect to {urlsplit(source.url).netloc}: {error}") from error
    try:
        status = response.status
        if status == 416 and source.size is not None and offset == source.size:
            return
        if status == 416 or (status == 200 and offset > 0):
            raise _RestartFromZero(f"server answered {status} to a Range request")
        if status in (429,) or status >= 500:
            raise _Transient(f"HTTP {status} from {urlsplit(final_url).netloc}")
        if status not in (200, 206):
            raise describe_http_failure(status, source.repo, source.revision, source.path, source.url)
        total = source.size
        if status == 206:
            start, range_total = _content_range_start(response.getheader("Content-Range"))
            if start != offset:
                raise _RestartFromZero(f"server resumed at {start}, not {offset}")
            total = total if total is not None else range_total
        elif total is None and response.getheader("Content-Length", "").isdigit():
            total = int(response.getheader("Content-Length", "0"))
        state["total"] = total if total is not None else -1
        done = offset
        next_sidecar = done + options.sidecar_every_bytes
        while True:
            buffer = hasher.buffer()
            try:
                length = response.readinto(memoryview(buffer))
            except (OSError, http.client.HTTPException) as error:
                hasher.recycle(buffer)
                raise _Transient(
                    f"connection dropped at byte {done}: {type(error).__name__}: {error}"
                ) from error
            if not length:
                hasher.recycle(buffer)
                break
            handle.write(memoryview(buffer)[:length])
            hasher.give(buffer, length)
            done += length
            state["done"] = done
            if syncer is not None:
                syncer.written = done
            on_bytes(length)
            if done >= next_sidecar:
                handle.flush()
                _write_sidecar(dest, source, done)
                next_sidecar = done + options.sidecar_every_bytes
        if total is not None and done < total:
            raise _Transient(f"connection closed at byte {done} of {total}")
        if total is not None and done > total:
            raise IntegrityError(f"{dest.name}: server sent {done} bytes, expected {total}")
    finally:
        connection.close()


def download(
    source: Source,
    dest: Path,
    *,
    options: DownloadOptions | None = None,
    on_bytes: Callable[[int], None] = lambda _n: None,
    on_reset: Callable[[int], None] = lambda _n: None,
    log: Callable[[str], None] = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Downloaded:
    """Fetch ``source`` into ``dest`` (resuming a matching partial), verify, then ``os.replace``.

    ``on_bytes(n)`` reports bytes received; ``on_reset(n)`` reports ``n`` bytes thrown away (a
    restart). A size/sha256 mismatch deletes the partial and retries once, then raises
    ``IntegrityError`` naming the file.
    """
    opts = options or DownloadOptions()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    for integrity_try in (1, 2):
        resumed_from = resumable_bytes(dest, source)
        if resumed_from == 0:
            if part.exists() and part.stat().st_size:
                on_reset(part.stat().st_size)
            discard_partial(dest)
            part.touch()
        elif resumed_from:
            log(f"resuming {dest.name} at {resumed_from} bytes")
        _write_sidecar(dest, source, resumed_from)
        hasher = _Hasher(opts.buffers, opts.chunk_bytes)
        fetched = 0
        try:
            with open(part, "r+b") as handle:
                # Bytes already on disk are hashed again locally: hashlib state cannot be saved.
                handle.seek(0)
                remaining = resumed_from
                while remaining:
                    buffer = hasher.buffer()
                    length = handle.readinto(memoryview(buffer)[: min(len(buffer), remaining)])
                    if not length:
                        hasher.recycle(buffer)
                        break
                    hasher.give(buffer, length)
                    remaining -= length
                handle.seek(resumed_from)
                handle.truncate()
                offset = resumed_from
                failures = 0
                state = {"done": offset, "total": -1}
                syncer = _Syncer(handle.fileno(), opts.sync_every_bytes, offset)
                try:
                    while True:
                        try:
                            _stream_once(
                                source,
                                handle,
                                offset,
                                hasher,
                                opts,
                                _counting(on_bytes, state),
                                dest,
                                state,
                                syncer,
                            )
                            offset = state["done"]
                            break
                        except _RestartFromZero as reason:
                            log(f"{dest.name}: {reason}; starting over")
                            on_reset(state["done"])
                            hasher.finish()
                            hasher = _Hasher(opts.buffers, opts.chunk_bytes)
                            handle.seek(0)
                            handle.truncate()
                            state["done"] = offset = 0
                            syncer.written = 0
                            failures += 1
                            if failures >= opts.retries:
                                raise NetworkError(
                                    f"{dest.name}: the server keeps refusing to resume ({reason})"
                                ) from None
                        except _Transient as reason:
                            progressed = state["done"] > offset
                            offset = state["done"]
                            failures = 0 if progressed else failures + 1
                            if failures >= opts.retries:
                                handle.flush()
                                _write_sidecar(dest, source, offset)
                                raise NetworkError(
                                    f"{dest.name}: giving up after {failures} failed attempts ({reason}); "
                                    f"{offset} bytes kept in {part.name}, the next run resumes there"
                                ) from None
                            delay = min(opts.backoff_max_s, opts.backoff_base_s * (2 ** max(failures - 1, 0)))
                            delay *= 0.5 + random.random() / 2
                            log(f"{dest.name}: {reason}; retry in {delay:.1f}s")
                            handle.flush()
                            _write_sidecar(dest, source, offset)
                            sleep(delay)
                finally:
                    syncer.stop()
                handle.flush()
                os.fsync(handle.fileno())
                fetched = state.get("fetched", 0)
        except BaseException:
            with contextlib.suppress(BaseException):
                hasher.finish()
            with contextlib.suppress(OSError):
                _write_sidecar(dest, source, part.stat().st_size)
            raise
        digest = hasher.finish()
        size = part.stat().st_size
        problem = _mismatch(source, size, digest)
        if problem is None:
            os.replace(part, dest)
            with contextlib.suppress(FileNotFoundError):
                sidecar_path(dest).unlink()
            _fsync_dir(dest.parent)
            return Downloaded(dest, size, digest, fetched, resumed_from)
        on_reset(size)
        discard_partial(dest)
        if integrity_try == 1:
            log(f"{dest.name}: {problem}; deleted the partial file, downloading it again")
            continue
        raise IntegrityError(
            f"{dest.name} from {source.identity or source.url}: {problem} (twice); nothing was installed"
        )
    raise AssertionError("unreachable")


def _counting(on_bytes: Callable[[int], None], state: dict[str, int]) -> Callable[[int], None]:
    def count(length: int) -> None:
        state["fetched"] = state.get("fetched", 0) + length
        on_bytes(length)

    return count


def _mismatch(source: Source, size: int, digest: str) -> str | None:
    if source.size is not None and size != source.size:
        return f"size {size} bytes, expected {source.size}"
    if source.sha256 is not None and digest != source.sha256:
        return f"sha256 {digest}, expected {source.sha256}"
    if source.sha256_prefix is not None and not digest.startswith(source.sha256_prefix):
        return f"sha256 {digest} does not start with the published {source.sha256_prefix}"
    return None


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def hash_file(path: Path) -> str:
    """sha256 of a file on disk (to adopt a model copied in by hand)."""
    digest = hashlib.sha256()
    buffer = bytearray(_REHASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while length := handle.readinto(buffer):
            digest.update(view[:length])
    return digest.hexdigest()


__all__ = [
    "DownloadOptions",
    "Downloaded",
    "Source",
    "discard_partial",
    "download",
    "hash_file",
    "partial_path",
    "resumable_bytes",
    "sidecar_path",
]
