"""The ComfyUI command line `zr4 start` runs, and running it with signals forwarded.

Building the command is pure: the fixed part (listen address, port, output folder), then the
planner's flags merged with the user's ``COMFYUI_ARGS`` by :func:`zr4.runtime.comfy_flags.merge_args`
(a user's flag wins over a planned flag of the same exclusive group; flags ComfyUI would reject are
reported and left out, because argparse exiting on them would crash-loop the pod), then checked
against the machine (:func:`zr4.runtime.comfy_flags.check_environment`: a flag whose package
ComfyUI's environment lacks, or whose path is missing, is dropped with the reason).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from zr4.runtime.comfy_flags import (
    FlagEnvironment,
    RejectedArg,
    check_environment,
    flag_set,
    merge_args,
)

# Set by zr4 itself from its own settings; a COMFYUI_ARGS copy of them is reported, not passed.
OWNED_FLAGS = ("--listen", "--port", "--output-directory")
DEFAULT_PORT = 8188
DEFAULT_LISTEN = "0.0.0.0"


@dataclass(frozen=True)
class LaunchPlan:
    """The argv for ComfyUI and what happened to the user's arguments on the way."""

    argv: tuple[str, ...]
    cwd: Path
    rejected: tuple[RejectedArg, ...] = ()
    dropped_planned: tuple[str, ...] = ()
    flags: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return " ".join(self.argv)


def comfyui_command(
    *,
    python: str,
    comfyui_dir: Path,
    output_dir: Path,
    planned_flags: Sequence[str],
    user_args: str | Sequence[str] | None,
    comfyui_version: str,
    listen: str = DEFAULT_LISTEN,
    port: int = DEFAULT_PORT,
    environment: FlagEnvironment | None = None,
) -> LaunchPlan:
    """``$COMFYUI_PYTHON main.py --listen … --port … --output-directory …`` + planned + user flags.

    ``environment`` (default: ``python``'s packages, ``comfyui_dir`` for relative paths) decides
    which of the merged flags this machine can honour.
    """
    flags = flag_set(comfyui_version)
    merged, user_split, dropped = merge_args(planned_flags, user_args, flags, owned=OWNED_FLAGS)
    environment = environment or FlagEnvironment.for_python(python, comfyui_dir)
    merged, unusable = check_environment(merged, flags, environment)
    argv = (
        python,
        str(comfyui_dir / "main.py"),
        "--listen",
        listen,
        "--port",
        str(port),
        "--output-directory",
        str(output_dir),
        *merged,
    )
    return LaunchPlan(
        argv=argv,
        cwd=comfyui_dir,
        rejected=(*user_split.rejected, *unusable),
        dropped_planned=dropped,
        flags=merged,
    )


def exit_code_of(returncode: int) -> int:
    """A child's status as a shell reports it: killed by signal N becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class ForwardingSignals:
    """While active, SIGTERM/SIGINT/SIGHUP sent to this process are passed to ``target()``'s process.

    ``on_signal`` is told about each one (for the log). The previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(
        self,
        target: Callable[[], subprocess.Popen[bytes] | None],
        on_signal: Callable[[int], None] | None = None,
    ) -> None:
        self._target = target
        self._on_signal = on_signal
        self._previous: dict[int, object] = {}
        self.received: list[int] = []
        self.event = threading.Event()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self.event.set()
        if self._on_signal is not None:
            self._on_signal(signum)
        process = self._target()
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    def __enter__(self) -> ForwardingSignals:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def launch(plan: LaunchPlan, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ComfyUI with this process's stdout/stderr (the container log)."""
    return subprocess.Popen(list(plan.argv), cwd=str(plan.cwd), env=dict(env))
