"""The sha256 of a file computed beside its multipart upload, on CPU the upload does not need.

Why a thread of its own: a large file's sha256 (for the journal and the day's ``metadata.json``)
would otherwise need a full read before the upload or after it. Why paced: unpaced, the thread read
the whole file in the first half second and took a core from the S3 server just when the upload
needed it; it now reads no further than the bytes s3transfer reports sent (``on_progress``), so
its reads hit the page cache the upload has just filled. Why at idle priority: on the 2-CPU benchmark
machine the sha256 of 1 GB (0.56 s of CPU) still lengthened the transfer by ~0.3 s, competing with
the server for CPU, while the machine had idle time the hash fitted in; on a pod it would compete
with ComfyUI the same way. The thread asks Linux for ``SCHED_IDLE`` (sched(7)): it runs only on a
CPU nothing else wants. So that a busy machine cannot starve the result, :meth:`PacedHash.result`
takes over where the thread has got to and hashes the rest on the caller's thread at its priority
(an unprivileged thread may not leave ``SCHED_IDLE`` again, so the thread itself cannot be sped up).
Measurements: bench/results/sync.md.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from s3transfer.subscribers import BaseSubscriber

THREAD_NAME = "zr4-sync-sha256"
READ_BYTES = 8 * 1024 * 1024


def lower_own_priority() -> bool:
    """Put the calling thread in ``SCHED_IDLE``; False where the platform lacks it or refuses."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # pid 0: this thread (Linux)
    except OSError:
        return False
    return True


class PacedHash(BaseSubscriber):
    """sha256 of ``path`` on an idle-priority thread, no further ahead than the upload has sent.

    Pass it to s3transfer as a subscriber. After the upload succeeds, :meth:`result` gives the
    digest; after it fails, call :meth:`abandon` (the thread would otherwise wait for progress that
    never comes). Both handles are opened here, so a file removed during the upload still hashes.
    """

    def __init__(self, path: Path) -> None:
        # Owned past this call: the thread closes its handle, result()/abandon() the other.
        self._thread_handle = open(path, "rb")  # noqa: SIM115
        try:
            self._tail_handle = open(path, "rb")  # noqa: SIM115
        except BaseException:
            self._thread_handle.close()
            raise
        # What the thread has published: the digest of the first ``_hashed`` bytes. The thread
        # never updates a published object (it updates a copy), so the caller may take it over.
        self._sha = hashlib.sha256()
        self._hashed = 0
        self._error: BaseException | None = None
        self._sent = 0
        self._wanted = 0  # the offset the thread waits for: progress below it wakes nobody
        self._stopped = False  # result() or abandon(): the thread publishes nothing more and ends
        self._progress = threading.Condition()
        self.idle_priority: bool | None = None  # set by the thread: whether SCHED_IDLE was granted
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    @property
    def hashed_bytes(self) -> int:
        """How far the background thread has got (the caller hashes the rest in :meth:`result`)."""
        with self._progress:
            return self._hashed

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        # Negative after a retried request (s3transfer rewinds its progress): the sum stays right.
        # Called for every block the HTTP client reads (~8,000 times per GB): the thread is woken
        # only once the offset it waits for has been sent.
        with self._progress:
            self._sent += bytes_transferred
            if self._sent >= self._wanted:
                self._progress.notify()

    def _run(self) -> None:
        self.idle_priority = lower_own_priority()
        try:
            with self._thread_handle as handle:
                size = os.fstat(handle.fileno()).st_size
                while True:
                    with self._progress:
                        offset = self._hashed
                        self._wanted = min(offset + READ_BYTES, size)
                        self._progress.wait_for(lambda: self._stopped or self._sent >= self._wanted)
                        if self._stopped:
                            return
                        sha = self._sha.copy()
                    chunk = handle.read(READ_BYTES)  # at ``offset``: only this thread reads it
                    if not chunk:
                        return
                    sha.update(chunk)
                    with self._progress:
                        if self._stopped:
                            return
                        self._sha, self._hashed = sha, offset + len(chunk)
        except BaseException as error:
            with self._progress:
                if not self._stopped:
                    self._error = error

    def _stop(self) -> tuple[Any, int, BaseException | None]:
        with self._progress:
            self._stopped = True
            self._progress.notify()
            return self._sha, self._hashed, self._error

    def abandon(self) -> None:
        """The upload failed: the thread ends at its next wake-up and nothing more is read."""
        self._stop()
        self._tail_handle.close()

    def result(self) -> str:
        """The file's sha256, once the upload has succeeded: the rest is hashed here, at our priority."""
        sha, hashed, error = self._stop()
        with self._tail_handle as handle:
            if error is not None:
                raise error
            handle.seek(hashed)
            while chunk := handle.read(READ_BYTES):
                sha.update(chunk)
        return str(sha.hexdigest())
