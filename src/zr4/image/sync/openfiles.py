"""Which files under the output folder some process still holds open for writing (Linux ``/proc``).

A quiet period alone cannot tell a finished file from one whose writer paused (an encoder waiting
for the next frames): the writer still has it open. ``/proc/<pid>/fd/*`` names every open file and
``/proc/<pid>/fdinfo/<fd>`` its ``flags`` (octal, ``O_ACCMODE`` = 3: 1 write-only, 2 read-write);
see proc(5). In the image ComfyUI, its ffmpeg children and the sync run in one PID namespace as one
user, so the writer is visible. Where ``/proc`` cannot be read the caller falls back to the quiet
period alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_O_ACCMODE = 0o3
_PROC = "/proc"


def _writing(pid_dir: str, fd: str) -> bool:
    try:
        with open(f"{pid_dir}/fdinfo/{fd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("flags:"):
                    return (int(line.split()[1], 8) & _O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        return False
    return False


def open_for_writing(root: Path) -> set[str] | None:
    """Real paths of files under ``root`` held open for writing by a visible process; None without /proc."""
    if not os.path.isdir(f"{_PROC}/self/fd"):
        return None
    prefix = os.path.realpath(root).rstrip("/") + "/"
    found: set[str] = set()
    try:
        pids = [name for name in os.listdir(_PROC) if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        pid_dir = f"{_PROC}/{pid}"
        try:
            fds = os.listdir(f"{pid_dir}/fd")
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{pid_dir}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix) and target not in found and _writing(pid_dir, fd):
                found.add(target)
    return found


class OpenFiles:
    """``open_for_writing`` cached: one /proc walk per scheduling pass, not per file.

    The cache lives ``max_age_s``, or longer where a walk is slow (a host with many processes): at
    least ``cost_factor`` times the last walk's duration, so walking takes at most a few percent of
    one core while a burst of fresh files is being scheduled.
    """

    def __init__(self, root: Path, max_age_s: float = 0.2, cost_factor: float = 20.0) -> None:
        self.root = root
        self.max_age_s = max_age_s
        self.cost_factor = cost_factor
        self._at = float("-inf")
        self._walk_s = 0.0
        self._paths: set[str] | None = None

    def held(self, rel_path: str) -> bool:
        """True while a process holds ``rel_path`` open for writing."""
        now = time.monotonic()
        if now - self._at > max(self.max_age_s, self.cost_factor * self._walk_s):
            self._paths = open_for_writing(self.root)
            self._at = time.monotonic()
            self._walk_s = self._at - now
        if not self._paths:
            return False
        return os.path.realpath(self.root / rel_path) in self._paths
