"""When the status page and each ComfyUI first answer: polled by `zr4 start` for the boot's status.

The proxy serves the status page in place of ComfyUI's until ComfyUI answers; it learns that from
the status file, where this watcher records it (and the seconds since the start process began, the
boot phases `bench/start_times.py` measures).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

POLL_S = 0.2
Log = Callable[[str], None]


@dataclass(frozen=True)
class Probe:
    """``url`` answering (any HTTP status) means ``what`` is up; then ``on_ready`` is called once."""

    what: str
    url: str
    on_ready: Callable[[], None]


def answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # an answer: the server is up (the proxy's login page needs no token, ComfyUI's stats neither)
    except (urllib.error.URLError, OSError):
        return False


class ReadinessWatch:
    """Polls every probe until it answers, on a daemon thread, until :meth:`stop`."""

    def __init__(self, probes: Sequence[Probe], log: Log, elapsed: Callable[[], float]) -> None:
        self._pending = list(probes)
        self._log = log
        self._elapsed = elapsed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zr4-readiness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, probes: Sequence[Probe]) -> None:
        self._pending.extend(probes)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            for probe in list(self._pending):
                if self._stop.is_set():
                    return
                if answers(probe.url):
                    self._pending.remove(probe)
                    probe.on_ready()
                    self._log(f"{probe.what} answers, {self._elapsed():.2f} s after the process started")
