"""PacedHash on its own: a real file, progress reported by hand as s3transfer reports it.

The hash must be the file's sha256 however far its idle-priority thread got before the upload ended
(nowhere, part of the way, all of it), must not read ahead of the bytes sent, and must run at
``SCHED_IDLE`` where Linux offers it (the reason it no longer slows the upload it sits beside).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zr4.image.sync.paced_hash import READ_BYTES, THREAD_NAME, PacedHash

MIB = 1024 * 1024


def _file(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="needs Linux SCHED_IDLE")
def test_the_hash_thread_runs_at_idle_priority(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 2 * MIB)
    before = _threads()
    hashing = PacedHash(path)
    try:
        _wait(lambda: hashing.idle_priority is not None, "the thread to start")
        (thread,) = _threads() - before
        assert thread.native_id is not None
        assert os.sched_getscheduler(thread.native_id) == os.SCHED_IDLE
        assert hashing.idle_priority is True
    finally:
        hashing.abandon()


def test_nothing_sent_yet_the_caller_hashes_it_all(tmp_path: Path) -> None:
    path, expected = _file(tmp_path, 3 * READ_BYTES + 5)
    hashing = PacedHash(path)
    time.sleep(0.05)  # the thread has had time to read ahead, were it not paced
    assert hashing.hashed_bytes == 0
    assert hashing.result() == expected


def test_the_thread_reads_no_further_than_sent_and_the_caller_takes_over(tmp_path: Path) -> None:
    path, expected = _file(tmp_path, 3 * READ_BYTES + 5)
    hashing = PacedHash(path)
    hashing.on_progress(None, READ_BYTES + READ_BYTES // 2)
    _wait(lambda: hashing.hashed_bytes >= READ_BYTES, "the first block to be hashed")
    time.sleep(0.05)
    assert hashing.hashed_bytes == READ_BYTES  # the second block is not all sent yet
    assert hashing.result() == expected


def test_all_sent_the_thread_hashes_to_the_end(tmp_path: Path) -> None:
    size = 2 * READ_BYTES + 3
    path, expected = _file(tmp_path, size)
    hashing = PacedHash(path)
    hashing.on_progress(None, size)
    _wait(lambda: hashing.hashed_bytes == size, "the whole file to be hashed")
    assert hashing.result() == expected


def test_a_file_removed_during_the_upload_still_hashes(tmp_path: Path) -> None:
    path, expected = _file(tmp_path, READ_BYTES + 7)
    hashing = PacedHash(path)
    hashing.on_progress(None, READ_BYTES // 2)
    path.unlink()
    assert hashing.result() == expected


def test_abandon_ends_the_thread(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 2 * READ_BYTES)
    before = _threads()
    hashing = PacedHash(path)
    _wait(lambda: bool(_threads() - before), "the thread to start")
    hashing.abandon()
    _wait(lambda: not (_threads() - before), "the thread to end")
