"""Progress: bars per file and in total on a terminal, one line every few seconds in logs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from zr4.runtime.models.preflight import human_bytes

_BAR_WIDTH = 28


@dataclass
class _FileState:
    size: int | None
    done: int
    started: float


def _bar(done: int, total: int | None) -> str:
    if not total:
        return "[" + "?" * _BAR_WIDTH + "]"
    filled = int(_BAR_WIDTH * min(done, total) / total)
    return "[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "]"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Thread-safe counters plus a renderer thread (redraws on a TTY, periodic lines otherwise)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        log_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = 0.25 if self._tty else log_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, _FileState] = {}
        self._total = 0
        self._done = 0
        self._received = 0
        self._started = clock()
        self._drawn_lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counters -------------------------------------------------------------------------------
    def begin(self, total_bytes: int, already_bytes: int) -> None:
        with self._lock:
            self._total = total_bytes
            self._done = already_bytes
            self._started = self._clock()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zr4-progress", daemon=True)
            self._thread.start()

    def file_started(self, rel: str, size: int | None, done: int) -> None:
        with self._lock:
            self._files[rel] = _FileState(size, done, self._clock())

    def advance(self, rel: str, length: int) -> None:
        with self._lock:
            state = self._files.get(rel)
            if state is not None:
                state.done += length
            self._done += length
            self._received += length

    def thrown_away(self, rel: str, length: int) -> None:
        with self._lock:
            state = self._files.get(rel)
            if state is not None:
                state.done = max(0, state.done - length)
            self._done = max(0, self._done - length)

    def file_finished(self, rel: str) -> None:
        with self._lock:
            self._files.pop(rel, None)

    # -- output ---------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        with self._lock:
            self._clear()
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._clear()
            if self._received:
                self._stream.write(self._summary_line() + "\n")
                self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self._tty:
                    self._clear()
                    lines = [self._summary_line()] + [
                        self._file_line(rel, st) for rel, st in self._files.items()
                    ]
                    self._stream.write("\n".join(lines) + "\n")
                    self._drawn_lines = len(lines)
                elif self._files:
                    self._stream.write(self._summary_line() + "\n")
                self._stream.flush()

    def _clear(self) -> None:
        if self._tty and self._drawn_lines:
            self._stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0

    def _rate(self) -> float:
        elapsed = max(self._clock() - self._started, 1e-6)
        return self._received / elapsed

    def _summary_line(self) -> str:
        rate = self._rate()
        percent = 100.0 * self._done / self._total if self._total else 100.0
        left = max(self._total - self._done, 0)
        eta = _duration(left / rate) if rate > 0 and left else "-"
        return (
            f"[models] {human_bytes(self._done)} / {human_bytes(self._total)} ({percent:.0f}%) "
            f"{human_bytes(rate)}/s, eta {eta}, {len(self._files)} file(s) active"
        )

    def _file_line(self, rel: str, state: _FileState) -> str:
        percent = f"{100.0 * state.done / state.size:5.1f}%" if state.size else "  ?  "
        return f"  {_bar(state.done, state.size)} {percent} {human_bytes(state.done):>9} {rel}"
