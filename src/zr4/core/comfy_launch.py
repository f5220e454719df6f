"""The ComfyUI command line `zr4 start` runs, and running it with signals forwarded.

The command is the fixed part (listen address, port, output folder), then the flags step 1
decided: the planner's merged with the user's ``COMFYUI_ARGS`` by
:func:`zr4.core.comfy_flags.merge_args` (a user's flag wins over a planned flag of the same
exclusive group; flags ComfyUI would reject are reported and left out, because argparse exiting on
them would crash-loop the pod) and checked against the machine
(:func:`zr4.core.comfy_flags.check_environment`: a flag whose package ComfyUI's environment
lacks, or whose path is missing, is left out with the reason). Nothing is decided here, so what
step 1 prints is what ComfyUI gets.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from zr4.core.comfy_flags import ZR4_OWNED_FLAGS

# Set by zr4 itself from its own settings; a COMFYUI_ARGS copy of them is reported, not passed.
OWNED_FLAGS = ZR4_OWNED_FLAGS
DEFAULT_PORT = 8188
DEFAULT_LISTEN = "0.0.0.0"


@dataclass(frozen=True)
class LaunchPlan:
    """The argv for ComfyUI, the folder it runs in, and the flags after the fixed part."""

    argv: tuple[str, ...]
    cwd: Path
    flags: tuple[str, ...] = ()

    def describe(self) -> str:
        return " ".join(self.argv)


def comfyui_command(
    *,
    python: str,
    comfyui_dir: Path,
    output_dir: Path,
    flags: Sequence[str],
    listen: str = DEFAULT_LISTEN,
    port: int = DEFAULT_PORT,
) -> LaunchPlan:
    """``$COMFYUI_PYTHON main.py --listen … --port … --output-directory …`` + ``flags`` (decided)."""
    argv = (
        python,
        str(comfyui_dir / "main.py"),
        "--listen",
        listen,
        "--port",
        str(port),
        "--output-directory",
        str(output_dir),
        *flags,
    )
    return LaunchPlan(argv=argv, cwd=comfyui_dir, flags=tuple(flags))


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
