"""What `zr4 build` shows while the engine runs.

zr4 asks the engine for plain output (BuildKit ``--progress=plain``, podman/buildah's step lines)
so that :mod:`zr4.build.progress` can time the stages and find the failing step; that turns off
docker's own terminal display. On a terminal this puts a live view back with ``rich.progress``:
one row per stage (steps finished of the stage's count, the step running now, time), under the
engine's output scrolling above it. Elsewhere (CI logs, a pipe) the engine's lines pass through
as they come, with nothing drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TextIO

from zr4.build.progress import Step

_FINISHED = ("done", "cached")


class BuildDisplay:
    """A context manager; ``echo`` prints one engine line, ``update`` redraws the stage rows."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self._tty = self._stream.isatty() if tty is None else tty
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> BuildDisplay:
        if self._tty:
            from rich.console import Console
            from rich.progress import (
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.table import Column

            self._rich = Progress(
                SpinnerColumn(finished_text="✓"),
                TextColumn("{task.fields[stage]}", table_column=Column(no_wrap=True, min_width=12)),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                # the step's command takes what is left of the line, cut with an ellipsis
                TextColumn(
                    "{task.description}",
                    markup=False,
                    table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
                ),
                console=Console(file=self._stream, force_terminal=True),
                refresh_per_second=4,
                expand=True,
            )
            self._rich.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def echo(self, line: str) -> None:
        """One line of the engine's output, printed above the rows on a terminal."""
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    def update(self, steps: Iterable[Step]) -> None:
        """Redraw the rows from the parser's steps (stages in the order they first appeared)."""
        if self._rich is None:
            return
        by_stage: dict[str, list[Step]] = {}
        for step in steps:
            if step.count is not None:  # engine housekeeping (load definition, export) has no count
                by_stage.setdefault(step.stage, []).append(step)
        for stage, stage_steps in by_stage.items():
            count = max(step.count or 0 for step in stage_steps)
            finished = sum(1 for step in stage_steps if step.status in _FINISHED)
            running = [step for step in stage_steps if step.status == "running"]
            failed = [step for step in stage_steps if step.status == "error"]
            now = (failed or running or stage_steps)[-1]
            description = ("failed: " if failed else "") + now.command
            task = self._tasks.get(stage)
            if task is None:
                self._tasks[stage] = self._rich.add_task(
                    description, total=count, completed=finished, stage=stage
                )
            else:
                self._rich.update(task, description=description, total=count, completed=finished)
