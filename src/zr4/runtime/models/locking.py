"""Advisory file locks (``flock``) so processes sharing one volume never fetch the same file twice.

``flock`` locks belong to an open file description: two processes, or two threads with their own
``open()``, exclude each other; the kernel drops the lock when a process dies (even by kill -9),
so a crashed downloader never leaves a stale lock. Linux emulates flock over NFS with POSIX locks.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


class FileLock:
    """Exclusive lock on ``path`` (created if missing); blocks, polling, until acquired."""

    def __init__(
        self,
        path: Path,
        *,
        on_wait: Callable[[], None] | None = None,
        poll_s: float = 0.2,
        timeout_s: float | None = None,
    ) -> None:
        self.path = path
        self._on_wait = on_wait
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if not told and self._on_wait is not None:
                    self._on_wait()
                    told = True
                if self._timeout_s is not None and time.monotonic() - started > self._timeout_s:
                    os.close(fd)
                    raise TimeoutError(f"lock {self.path} is held by another process") from None
                time.sleep(self._poll_s)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
