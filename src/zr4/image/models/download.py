"""Resumable, verified download of one file over HTTP(S), in parallel byte ranges when it is large.

Bytes go to ``<dest>.partial``. Two small files beside it say what it is and how far it got:
``<dest>.partial.json`` (source, expected size and sha256, written once per attempt) and
``<dest>.partial.ranges``, an append-only log of ``(start, end)`` spans already written (16 bytes
per buffer written, no fsync: a kill -9 keeps the page cache, so the log never claims bytes the
file lacks; a power loss is caught by the final sha256). A later process, after a kill -9 or a pod
restart, fetches only the spans missing, with HTTP ``Range`` requests.

A file of at least ``parallel_min_bytes`` is fetched over ``connections`` connections, each taking
the next ``piece_bytes`` piece in file order (the Hub's CDN limits each connection; one connection
is the speed of one). sha256 is computed on its own thread, reading back the contiguous prefix as it
grows (hot in the page cache), so hashing never blocks a socket. The file is moved into place with
``os.replace`` only when size and hash match, so ComfyUI never sees half a model.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from zr4.core.atomic import leftover_temporaries, write_text_atomically
from zr4.core.documents import read_json_object
from zr4.core.model_files.errors import IntegrityError, ModelsError, NetworkError, StorageError
from zr4.image.models.hub import describe_http_failure

if TYPE_CHECKING:
    import http.client

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 8
_REHASH_CHUNK = 8 << 20
_SPAN = struct.Struct("<QQ")


@dataclass(frozen=True)
class DownloadOptions:
    """Retry, parallelism and buffering knobs; defaults suit a flaky, per-connection-capped link."""

    retries: int = 6  # failed attempts in a row (an attempt that made progress resets the count)
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    stall_timeout_s: float = 60.0  # no byte for this long: drop the connection and retry
    chunk_bytes: int = 1 << 20  # one read from the socket, one write, one span in the log
    connections: int = 8  # per file, for files of at least parallel_min_bytes
    parallel_min_bytes: int = 64 << 20
    piece_bytes: int = 32 << 20
    sync_every_bytes: int = 256 << 20  # written back on a thread as it arrives, so the final fsync is short


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


def ranges_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial.ranges")


def storage_error(error: OSError, path: Path, doing: str) -> StorageError:
    """One line for a file-system failure: which path, what happened, what to do."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        hint = (
            "the disk is full: free space or use a larger volume; the next run resumes where this one stopped"
        )
    elif error.errno == errno.EROFS:
        hint = "the volume is mounted read-only: mount it read-write or set MODELS_DIR to a writable folder"
    elif error.errno in (errno.EACCES, errno.EPERM):
        hint = "this user may not write there: fix the folder's owner/permissions or set MODELS_DIR"
    else:
        hint = "check the volume"
    return StorageError(f"cannot {doing} {path}: {reason}; {hint}")


def read_sidecar(dest: Path) -> dict[str, Any] | None:
    return read_json_object(sidecar_path(dest))


def _write_sidecar(dest: Path, source: Source) -> None:
    record = {
        "version": 2,
        "identity": source.identity or source.url,
        "size": source.size,
        "sha256": source.sha256,
        "updated": time.time(),
    }
    write_text_atomically(sidecar_path(dest), json.dumps(record), mode=None)


def _sidecar_matches(record: dict[str, Any] | None, source: Source) -> bool:
    return (
        record is not None
        and record.get("identity") == (source.identity or source.url)
        and record.get("size") == source.size
        and record.get("sha256") == source.sha256
    )


def discard_partial(dest: Path) -> None:
    for leftover in (partial_path(dest), sidecar_path(dest), ranges_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    for leftover in leftover_temporaries(sidecar_path(dest)):  # from a writer killed mid-write
        with contextlib.suppress(OSError):
            leftover.unlink()


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def done_spans(dest: Path, source: Source) -> list[tuple[int, int]]:
    """Spans of ``dest``'s partial file a download of ``source`` would keep ([] if it restarts)."""
    part = partial_path(dest)
    record = read_sidecar(dest)
    if not _sidecar_matches(record, source):
        return []
    try:
        on_disk = part.stat().st_size
    except OSError:
        return []
    assert record is not None
    if record.get("version") == 1:  # written by a sequential download: the file is the prefix
        spans = [(0, on_disk)]
    else:
        try:
            raw = ranges_path(dest).read_bytes()
        except OSError:
            return []
        count = len(raw) // _SPAN.size
        spans = [_SPAN.unpack_from(raw, i * _SPAN.size) for i in range(count)]
    limit = min(on_disk, source.size) if source.size is not None else on_disk
    return [(s, min(e, limit)) for s, e in _merge(spans) if s < limit]


def resumable_bytes(dest: Path, source: Source) -> int:
    """Bytes of ``dest``'s partial file a download of ``source`` would keep (0 if it restarts)."""
    return sum(end - start for start, end in done_spans(dest, source))


@dataclass
class _Piece:
    start: int
    end: int | None  # None: to the end of an unknown-size body
    done: int = 0  # bytes written from start

    @property
    def next_offset(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.end is not None and self.start + self.done >= self.end


@dataclass
class _State:
    """Shared by the receivers and the hasher; guarded by ``cond``."""

    segments: list[_Piece]  # every byte of the file in order: kept spans (complete) and pieces to fetch
    cond: threading.Condition = field(default_factory=threading.Condition)
    fetched: int = 0
    failed: BaseException | None = None
    finished: bool = False

    def frontier(self) -> int:
        """End of the contiguous written prefix."""
        position = 0
        for segment in self.segments:
            if segment.start > position:
                break
            position = segment.start + segment.done
            if not segment.complete:
                break
        return position


class _Hasher:
    """sha256 of the written prefix on its own thread, reading back what the receivers wrote."""

    def __init__(self, fd: int, state: _State) -> None:
        self.digest = hashlib.sha256()
        self.hashed = 0
        self._fd = fd
        self._state = state
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zr4-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = bytearray(_REHASH_CHUNK)
        view = memoryview(buffer)
        state = self._state
        try:
            while True:
                with state.cond:
                    while state.frontier() <= self.hashed and not state.finished:
                        state.cond.wait(0.5)
                    target = state.frontier()
                    if target <= self.hashed and state.finished:
                        return
                while self.hashed < target:
                    want = min(len(buffer), target - self.hashed)
                    got = os.preadv(self._fd, [view[:want]], self.hashed)
                    if got <= 0:
                        raise OSError(errno.EIO, "short read hashing the partial file")
                    self.digest.update(view[:got])
                    self.hashed += got
        except BaseException as error:  # surfaced by finish()
            self._error = error

    def finish(self) -> str:
        with self._state.cond:
            self._state.finished = True
            self._state.cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.digest.hexdigest()

    def abandon(self) -> None:
        """Stop after a failed attempt; its result, and any error of its own, no longer matter."""
        with contextlib.suppress(BaseException):
            self.finish()


class _Syncer:
    """fdatasync on its own thread every ``every_bytes`` fetched, so durability costs no time at the end."""

    def __init__(self, fd: int, every_bytes: int, state: _State) -> None:
        self._fd = fd
        self._every = every_bytes
        self._state = state
        self._synced = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zr4-fdatasync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            fetched = self._state.fetched
            if fetched - self._synced >= self._every:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
                self._synced = fetched

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _connect(url: str, timeout_s: float) -> http.client.HTTPConnection:
    # Imported here: http.client pulls in ssl and email (~30 ms), which a warm start never needs.
    import http.client

    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return connection_class(parts.hostname or "", parts.port, timeout=timeout_s)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + ("?" + parts.query if parts.query else "")


class _Fetcher:
    """One connection, kept alive across the pieces it fetches; follows redirects, remembers the last."""

    def __init__(self, source: Source, timeout_s: float) -> None:
        self.url = source.url
        self.headers = {key: value for key, value in source.headers.items()}
        self.headers["Accept-Encoding"] = "identity"
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._netloc = ""

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get(self, start: int, end: int | None) -> http.client.HTTPResponse:
        """GET bytes ``start``..``end`` (exclusive; None: to the end), following redirects."""
        import http.client

        headers = dict(self.headers)
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + (str(end - 1) if end is not None else "")
        for _ in range(_MAX_REDIRECTS):
            parts = urlsplit(self.url)
            if self._connection is None or parts.netloc != self._netloc:
                self.close()
                self._connection = _connect(self.url, self._timeout_s)
                self._netloc = parts.netloc
            try:
                self._connection.request("GET", _target(self.url), headers=headers)
                response = self._connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise _Transient(f"connect to {parts.netloc}: {type(error).__name__}: {error}") from error
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                response.read()
                if not location:
                    raise ModelsError(f"HTTP {response.status} without Location from {self.url}")
                new_url = urljoin(self.url, location)
                if urlsplit(new_url).netloc != parts.netloc:
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    self.headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
                self.url = new_url
                continue
            return response
        raise ModelsError(f"too many redirects fetching {self.url}")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.split("-", 1)[0]
    try:
        return int(start), (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


class _Run:
    """One attempt at the whole file: receivers over the pieces, the hasher, the span log."""

    def __init__(
        self,
        source: Source,
        dest: Path,
        opts: DownloadOptions,
        kept: list[tuple[int, int]],
        on_bytes: Callable[[int], None],
        log: Callable[[str], None],
        sleep: Callable[[float], None],
    ) -> None:
        self.source = source
        self.dest = dest
        self.opts = opts
        self.on_bytes = on_bytes
        self.log = log
        self.sleep = sleep
        self.part = partial_path(dest)
        size = source.size
        segments = [_Piece(s, e, e - s) for s, e in kept]
        missing: list[tuple[int, int | None]] = []
        position = 0
        for start, end in kept:
            if start > position:
                missing.append((position, start))
            position = end
        if size is None:
            missing.append((position, None))
        elif position < size:
            missing.append((position, size))
        parallel = size is not None and size >= opts.parallel_min_bytes and opts.connections > 1
        piece = max(opts.chunk_bytes, opts.piece_bytes) if parallel else None
        self.pieces: list[_Piece] = []
        for gap_start, gap_end in missing:
            if piece is None or gap_end is None:
                self.pieces.append(_Piece(gap_start, gap_end))
                continue
            for offset in range(gap_start, gap_end, piece):
                self.pieces.append(_Piece(offset, min(offset + piece, gap_end)))
        segments.extend(self.pieces)
        segments.sort(key=lambda p: p.start)
        self.state = _State(segments)
        self.workers = min(opts.connections, len(self.pieces)) if parallel else 1
        self._queue = list(self.pieces)
        self._queue_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self.total = size

    def _next_piece(self) -> _Piece | None:
        with self._queue_lock:
            return self._queue.pop(0) if self._queue else None

    def run(self, fd: int, log_fd: int) -> None:
        if not self.pieces:
            return
        self._fd, self._log_fd = fd, log_fd
        threads = [
            threading.Thread(target=self._worker, name=f"zr4-range-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.state.failed is not None:
            raise self.state.failed

    def _worker(self) -> None:
        fetcher = _Fetcher(self.source, self.opts.stall_timeout_s)
        try:
            while self.state.failed is None:
                piece = self._next_piece()
                if piece is None:
                    return
                self._fetch_piece(fetcher, piece)
        except BaseException as error:
            with self.state.cond:
                if self.state.failed is None:
                    self.state.failed = error
                self.state.cond.notify_all()
        finally:
            fetcher.close()

    def _fetch_piece(self, fetcher: _Fetcher, piece: _Piece) -> None:
        failures = 0
        while not piece.complete:
            if self.state.failed is not None:
                return
            before = piece.done
            try:
                self._stream(fetcher, piece)
                if piece.end is None:
                    return  # an unknown-size body ended cleanly
            except _Transient as reason:
                fetcher.close()
                failures = 0 if piece.done > before else failures + 1
                if failures >= self.opts.retries:
                    raise NetworkError(
                        f"{self.dest.name}: giving up after {failures} failed attempts ({reason}); "
                        f"{resumable_note(self.state)} kept in {self.part.name}, the next run resumes there"
                    ) from None
                delay = min(self.opts.backoff_max_s, self.opts.backoff_base_s * (2 ** max(failures - 1, 0)))
                delay *= 0.5 + random.random() / 2
                self.log(f"{self.dest.name}: {reason}; retry in {delay:.1f}s")
                self.sleep(delay)

    def _stream(self, fetcher: _Fetcher, piece: _Piece) -> None:
        import http.client

        offset = piece.next_offset
        # The last piece (or the only one) asks for "the rest" (bytes=N-), as any resuming client does.
        response = fetcher.get(offset, None if piece.end == self.total else piece.end)
        status = response.status
        if status == 416 or (status == 200 and offset > 0):
            fetcher.close()
            raise _RestartFromZero(f"server answered {status} to a Range request")
        if status == 429 or status >= 500:
            fetcher.close()
            raise _Transient(f"HTTP {status} from {urlsplit(fetcher.url).netloc}")
        if status not in (200, 206):
            fetcher.close()
            raise describe_http_failure(
                status, self.source.repo, self.source.revision, self.source.path, self.source.url
            )
        if status == 206:
            start, total = _content_range(response.getheader("Content-Range"))
            if start != offset:
                fetcher.close()
                raise _RestartFromZero(f"server resumed at {start}, not {offset}")
            if self.total is None and total is not None:
                self.total = total
        elif piece.end is not None and piece.end != self.total:
            fetcher.close()  # a 200 for a piece in the middle: the server ignores Range
            raise _RestartFromZero("server ignored the Range request")
        expected = (piece.end - offset) if piece.end is not None else None
        if expected is None and status == 200 and response.getheader("Content-Length", "").isdigit():
            expected = int(response.getheader("Content-Length", "0"))
        received = 0
        while expected is None or received < expected:
            want = (
                self.opts.chunk_bytes if expected is None else min(self.opts.chunk_bytes, expected - received)
            )
            try:
                # read1: what one recv() returns, written at once. readinto() would wait for a full
                # chunk, and a kill -9 would lose up to a chunk per connection.
                data = response.read1(want)
            except (OSError, http.client.HTTPException) as error:
                raise _Transient(
                    f"connection dropped at byte {offset + received}: {type(error).__name__}: {error}"
                ) from error
            if not data:
                break
            self._write(piece, offset + received, memoryview(data))
            received += len(data)
        if expected is not None and received < expected:
            fetcher.close()
            raise _Transient(f"connection closed at byte {offset + received} of {piece.end or self.total}")
        # read1() never marks a response finished, even with its last byte read; until read() does,
        # http.client refuses the next request on this kept-alive connection (ResponseNotReady) after
        # the server has already sent the body: the piece came twice, after a backoff.
        response.read()
        if piece.end is None:
            piece.end = piece.start + piece.done
            with self.state.cond:
                self.state.cond.notify_all()

    def _write(self, piece: _Piece, at: int, data: memoryview) -> None:
        written = 0
        while written < len(data):
            try:
                written += os.pwrite(self._fd, data[written:], at + written)
            except OSError as error:
                raise storage_error(error, self.part, "write") from error
        try:
            with self._log_lock:
                os.write(self._log_fd, _SPAN.pack(at, at + len(data)))
        except OSError as error:
            raise storage_error(error, ranges_path(self.dest), "write") from error
        with self.state.cond:
            piece.done += len(data)
            self.state.fetched += len(data)
            self.state.cond.notify_all()
        self.on_bytes(len(data))


def resumable_note(state: _State) -> str:
    kept = sum(segment.done for segment in state.segments)
    return f"{kept} bytes"


def _open_partial(stack: contextlib.ExitStack, dest: Path, fresh: bool) -> tuple[int, int]:
    """The partial file and its span log, each closed by ``stack`` (the first even when the second
    cannot be opened)."""
    part = partial_path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
    except OSError as error:
        raise storage_error(error, part, "create") from error
    stack.callback(os.close, fd)
    try:
        log_fd = os.open(
            ranges_path(dest), os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if fresh else 0), 0o644
        )
    except OSError as error:
        raise storage_error(error, ranges_path(dest), "create") from error
    stack.callback(os.close, log_fd)
    return fd, log_fd


def _begin(
    dest: Path, source: Source, on_reset: Callable[[int], None], log: Callable[[str], None]
) -> list[tuple[int, int]]:
    """The spans kept from an earlier attempt ([] after discarding a partial that does not match),
    with the sidecar written for this one."""
    kept = done_spans(dest, source)
    if not kept:
        part = partial_path(dest)
        with contextlib.suppress(OSError):
            if part.stat().st_size:
                on_reset(part.stat().st_size)
        discard_partial(dest)
    else:
        log(f"resuming {dest.name}: {sum(e - s for s, e in kept)} bytes already here")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _write_sidecar(dest, source)
    except OSError as error:
        raise storage_error(error, sidecar_path(dest), "write") from error
    return kept


def _fetch(run: _Run, dest: Path, opts: DownloadOptions, fresh: bool) -> tuple[int, str]:
    """One attempt: fetch the missing spans, hash the file as it grows, fsync it; (size, sha256).

    The descriptors are closed, and the hasher stopped, before anything propagates."""
    with contextlib.ExitStack() as stack:
        fd, log_fd = _open_partial(stack, dest, fresh)
        hasher = _Hasher(fd, run.state)
        stack.callback(hasher.abandon)
        syncer = _Syncer(fd, opts.sync_every_bytes, run.state)
        try:
            run.run(fd, log_fd)
        finally:
            syncer.stop()
        digest = hasher.finish()
        size = os.fstat(fd).st_size
        if run.total is not None and size > run.total:
            os.ftruncate(fd, run.total)
            size = run.total
        try:
            os.fsync(fd)
        except OSError as error:
            raise storage_error(error, partial_path(dest), "write") from error
        return size, digest


def _install(dest: Path) -> None:
    """The verified partial file becomes ``dest``; its sidecar and span log go."""
    try:
        os.replace(partial_path(dest), dest)
    except OSError as error:
        raise storage_error(error, dest, "move into place") from error
    for leftover in (sidecar_path(dest), ranges_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    _fsync_dir(dest.parent)


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
    ``IntegrityError`` naming the file. File-system failures raise ``StorageError`` (one line).
    """
    opts = options or DownloadOptions()
    restarts = 0
    integrity_try = 1
    while True:
        kept = _begin(dest, source, on_reset, log)
        kept_bytes = sum(e - s for s, e in kept)
        run = _Run(source, dest, opts, kept, on_bytes, log, sleep)
        try:
            size, digest = _fetch(run, dest, opts, fresh=not kept)
        except _RestartFromZero as reason:
            opts = replace(opts, connections=1)  # a server that ignores Range gets one plain GET
            restarts += 1
            on_reset(kept_bytes + run.state.fetched)
            discard_partial(dest)
            if restarts >= opts.retries:
                raise NetworkError(f"{dest.name}: the server keeps refusing to resume ({reason})") from None
            log(f"{dest.name}: {reason}; starting over")
            continue
        problem = _mismatch(source, size, digest)
        if problem is None:
            _install(dest)
            return Downloaded(dest, size, digest, run.state.fetched, kept_bytes)
        on_reset(size)
        discard_partial(dest)
        if integrity_try == 1:
            integrity_try = 2
            log(f"{dest.name}: {problem}; deleted the partial file, downloading it again")
            continue
        raise IntegrityError(
            f"{dest.name} from {source.identity or source.url}: {problem} (twice); nothing was installed"
        )


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
    "done_spans",
    "download",
    "hash_file",
    "partial_path",
    "ranges_path",
    "resumable_bytes",
    "sidecar_path",
    "storage_error",
]
