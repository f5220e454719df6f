"""Progress of ``zr4 models download``: ``rich.progress`` bars on a terminal, one line every few seconds in logs.

The counters are rich's own tasks (one for the total, one per file in flight), so speed and time
left are rich's estimates in both modes. rich is imported only when a download starts: a boot with
every model present never pays for it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from zr4.core.sizes import human_bytes


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Thread-safe: the downloaders report bytes, rich draws (TTY) or a thread prints lines (logs)."""

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, log_interval_s: float = 10.0
    ) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = log_interval_s
        self._lock = threading.Lock()
        self._rich: Any = None
        self._total_task: Any = None
        self._tasks: dict[str, Any] = {}
        self._received = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counters -------------------------------------------------------------------------------
    def begin(self, total_bytes: int, already_bytes: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        with self._lock:
            if self._rich is not None:
                return
            console = Console(
                file=self._stream, force_terminal=self._tty, width=120 if not self._tty else None
            )
            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=28),
                TaskProgressColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not self._tty,
                refresh_per_second=4,
            )
            self._total_task = self._rich.add_task("[models]", total=total_bytes, completed=already_bytes)
            self._rich.start()
        if not self._tty:
            self._thread = threading.Thread(target=self._log_lines, name="zr4-progress", daemon=True)
            self._thread.start()

    def file_started(self, rel: str, size: int | None, done: int) -> None:
        with self._lock:
            if self._rich is not None:
                self._tasks[rel] = self._rich.add_task(f"  {rel}", total=size, completed=done)

    def advance(self, rel: str, length: int) -> None:
        with self._lock:
            self._received += length
            if self._rich is None:
                return
            task = self._tasks.get(rel)
            if task is not None:
                self._rich.advance(task, length)
            self._rich.advance(self._total_task, length)

    def thrown_away(self, rel: str, length: int) -> None:
        with self._lock:
            if self._rich is None:
                return
            task = self._tasks.get(rel)
            if task is not None:
                self._rich.update(task, completed=max(0, self._completed(task) - length))
            self._rich.update(self._total_task, completed=max(0, self._completed(self._total_task) - length))

    def file_finished(self, rel: str) -> None:
        with self._lock:
            task = self._tasks.pop(rel, None)
            if task is not None and self._rich is not None:
                self._rich.remove_task(task)

    # -- output ---------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        with self._lock:
            if self._rich is not None and self._tty:
                self._rich.console.print(text, markup=False, highlight=False)
                return
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._rich is None:
                return
            line = self._summary_line() if self._received else None
            self._rich.stop()
            self._rich = None
        if line is not None:
            self._stream.write(line + "\n")
            self._stream.flush()

    def _log_lines(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self._rich is None or not self._tasks:
                    continue
                line = self._summary_line()
            self._stream.write(line + "\n")
            self._stream.flush()

    def _completed(self, task_id: Any) -> float:
        return float(self._rich.tasks[self._rich.task_ids.index(task_id)].completed)

    def _summary_line(self) -> str:
        task = self._rich.tasks[self._rich.task_ids.index(self._total_task)]
        total = task.total or 0
        percent = 100.0 * task.completed / total if total else 100.0
        speed = task.finished_speed or task.speed or 0.0
        eta = duration_text(task.time_remaining) if speed and task.completed < total else "-"
        return (
            f"[models] {human_bytes(task.completed)} / {human_bytes(total)} ({percent:.0f}%) "
            f"{human_bytes(speed)}/s, eta {eta}, {len(self._tasks)} file(s) active"
        )
