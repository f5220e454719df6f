"""Advisory file locks so processes sharing one volume never fetch the same file twice (``filelock``).

``filelock.FileLock`` on Linux is ``flock``: the lock belongs to an open file description, two
processes (or two threads with their own lock object) exclude each other, and the kernel drops it
when a process dies, even by kill -9, so a crashed downloader never leaves a stale lock. The lock
file is kept on release (``preserve_lock_file``), which also turns off filelock's "soft" fallback
(a marker file that a kill -9 would leave behind): see filelock's ``BaseFileLock`` parameters
(https://py-filelock.readthedocs.io/en/latest/api.html).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import filelock


class FileLock:
    """Exclusive lock on ``path`` (created if missing); blocks until acquired, saying so once."""

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
        self._lock = filelock.FileLock(str(path), thread_local=False, preserve_lock_file=True)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
            return
        except filelock.Timeout:
            if self._on_wait is not None:
                self._on_wait()
        try:
            self._lock.acquire(
                timeout=-1 if self._timeout_s is None else self._timeout_s, poll_interval=self._poll_s
            )
        except filelock.Timeout:
            raise TimeoutError(f"lock {self.path} is held by another process") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
