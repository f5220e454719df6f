"""A supervised child process: restarted when it dies, stopped with SIGTERM then SIGKILL.

Used by `zr4 start` for the R2 sync daemon: if it crashes, a new one starts after a back-off
(1 s doubling to 30 s while it keeps dying within 10 s of its start, back to 1 s after a longer run).
The sync keeps a durable journal, so a restart resumes where the dead process stopped.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

Log = Callable[[str], None]


def next_delay(previous_s: float, uptime_s: float, first_s: float, max_s: float, stable_s: float) -> float:
    """Back-off before the next restart: doubles while the child dies young, resets after a stable run."""
    if uptime_s >= stable_s:
        return first_s
    return min(max_s, max(first_s, previous_s * 2))


class Supervisor:
    """Keep ``argv`` running in a background thread until :meth:`stop`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Log,
        *,
        first_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        stable_s: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self._log = log
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._stable_s = stable_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.starts = 0
        self.exits: list[int] = []

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        try:
            process = subprocess.Popen(self.argv, env=self.env)
        except OSError as error:
            self._log(f"{self.name}: cannot start {self.argv[0]}: {error.strerror}")
            return None
        self.starts += 1
        return process

    def _loop(self) -> None:
        delay = self._first_delay_s
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                process = self._spawn()
                self._process = process
            if process is None:
                uptime = 0.0
            else:
                started = time.monotonic()
                code = process.wait()
                uptime = time.monotonic() - started
                self.exits.append(code)
                if self._stopping.is_set():
                    return
            delay = next_delay(delay, uptime, self._first_delay_s, self._max_delay_s, self._stable_s)
            status = "could not start" if process is None else f"exited with code {process.returncode}"
            self._log(f"{self.name} {status} after {uptime:.1f} s; restarting in {delay:.0f} s")
            self._stopping.wait(delay)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM the child, SIGKILL it after ``timeout_s``; no restart afterwards. Returns its code."""
        self._stopping.set()
        with self._lock:
            process = self._process
        code: int | None = None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._log(f"{self.name} did not stop within {timeout_s:.0f} s; killing it")
                process.kill()
                code = process.wait()
        elif process is not None:
            code = process.returncode
        if self._thread is not None:
            self._thread.join(timeout=5)
        return code
