"""The boot's status file as `zr4 start` keeps it (the format: :mod:`zr4.core.boot_status`).

:class:`BootReport` holds the state the steps report into (the model files and their bytes, each
ComfyUI's readiness, a failure and its fix) and a thread that writes it, atomically: at once on a
change of state, at most every :data:`WRITE_EVERY_S` while only byte counts move, and at least
every :data:`~zr4.core.boot_status.HEARTBEAT_S` so a reader can tell a slow download from a dead
one. Every line a reader shows (the headline, the download's summary, one per file) is worded
here, once, so the status page, `zr4 health` and a waiting job say the same thing.

:func:`failure_of` turns a model manager error into its reason and the one thing to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.core import boot_status as bs
from zr4.core.atomic import write_text_atomically
from zr4.core.model_files.errors import (
    DiskSpaceError,
    GgufLevelError,
    HubAuthError,
    HubNotFoundError,
    IntegrityError,
    NetworkError,
    StorageError,
)
from zr4.core.redact import redact
from zr4.core.sizes import human_bytes
from zr4.image.models.preflight import DEFAULT_MARGIN_BYTES
from zr4.image.models.progress import duration_text

WRITE_EVERY_S = 0.5
RATE_WINDOW_S = 10.0  # the rate is the bytes of the last 10 s: a stall shows within seconds


@dataclass
class FileProgress:
    rel: str
    size: int | None
    done: int = 0
    state: str = "waiting"  # waiting | active | done | stopped

    def text(self) -> str:
        if self.state == "done":
            return f"{human_bytes(self.size if self.size is not None else self.done)} done"
        total = human_bytes(self.size) if self.size is not None else "?"
        percent = f" ({100 * self.done / self.size:.0f} %)" if self.size else ""
        word = {"active": "downloading", "stopped": "stopped"}.get(self.state, "waiting")
        return f"{human_bytes(self.done)} of {total}{percent}, {word}"


def _enospc(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__
    return "disk is full" in str(error)


def failure_of(error: BaseException, remaining_bytes: int | None = None) -> tuple[str, str]:
    """(reason, fix) for a failed model step: the error's own line, and the one thing to do."""
    message = redact(str(error)) or type(error).__name__
    if isinstance(error, HubAuthError):
        fix = (
            "set HF_TOKEN to a Hugging Face token that may read the repository (and accept the "
            "model's terms on its Hub page), then restart the pod"
        )
    elif isinstance(error, DiskSpaceError):
        if error.needed_bytes is not None and error.free_bytes is not None:
            fix = (
                f"free {human_bytes(error.needed_bytes - error.free_bytes)} in MODELS_DIR or use a larger "
                f"volume: {human_bytes(error.needed_bytes)} needed, {human_bytes(error.free_bytes)} free"
            )
        else:
            fix = "free space in MODELS_DIR or use a larger volume, then restart the pod"
    elif isinstance(error, StorageError) and _enospc(error):
        if remaining_bytes is not None:
            needed = remaining_bytes + DEFAULT_MARGIN_BYTES
            fix = (
                f"the volume is full: about {human_bytes(needed)} more is needed ({human_bytes(remaining_bytes)} "
                f"still to download + {human_bytes(DEFAULT_MARGIN_BYTES)} margin); free space or use a larger "
                "volume, then restart the pod: the download resumes where it stopped"
            )
        else:
            fix = "the volume is full: free space or use a larger volume, then restart the pod"
    elif isinstance(error, StorageError):
        fix = "make MODELS_DIR writable by the image's user (the reason says how), then restart the pod"
    elif isinstance(error, NetworkError):
        fix = "check the pod's network and HF_ENDPOINT, then restart the pod: what was fetched is kept"
    elif isinstance(error, GgufLevelError):
        fix = "set STEADYDANCER_GGUF_MODEL to a level the repository has, then restart the pod"
    elif isinstance(error, HubNotFoundError):
        fix = (
            "check HF_ENDPOINT and the model settings (STEADYDANCER_VARIANT, STEADYDANCER_GGUF_MODEL); "
            "a file zr4's manifest names is not on the Hub"
        )
    elif isinstance(error, IntegrityError):
        fix = "restart the pod to fetch the file again; if it fails again, the file on the Hub changed"
    else:
        fix = "see the container log, then restart the pod"
    return message, fix


class BootReport:
    """The status document of one boot, written to ``path`` by a thread of its own."""

    def __init__(self, path: Path, process_started: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._dirty = True
        self._thread: threading.Thread | None = None
        self.started = process_started
        self.timings: dict[str, float] = {}
        self._ports: list[int] = []
        self._ready: set[int] = set()
        self._comfyui = bs.COMFYUI_WAITING
        self._comfyui_exit: int | None = None
        self._models_state = bs.PLANNING
        self._models_note = ""
        self._root = ""
        self._variant = ""
        self._files: dict[str, FileProgress] = {}
        self._error: dict[str, str] | None = None
        self._samples: deque[tuple[float, int]] = deque()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the first document now (the proxy starts right after), then keep writing."""
        self.write()
        self._thread = threading.Thread(target=self._loop, name="zr4-boot-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._changed.wait(WRITE_EVERY_S)
            if self._stop.is_set():
                return
            urgent = self._changed.is_set()
            self._changed.clear()
            now = time.monotonic()
            if urgent or (self._dirty and now - last >= WRITE_EVERY_S) or now - last >= bs.HEARTBEAT_S:
                # The status is a convenience: a full temp disk must not stop the boot.
                with contextlib.suppress(OSError):
                    self.write()
                last = now

    def _touch(self, urgent: bool = False) -> None:
        self._dirty = True
        if urgent:
            self._changed.set()

    def _mark(self, name: str) -> None:
        self.timings.setdefault(name, round(self._clock() - self.started, 3))

    # --- what the steps report -------------------------------------------------------------------

    def set_ports(self, ports: Sequence[int]) -> None:
        with self._lock:
            self._ports = list(ports)
            self._touch(urgent=True)

    def proxy_answers(self) -> None:
        with self._lock:
            self._mark("proxy_answering_s")

    def comfyui_launched(self) -> None:
        with self._lock:
            self._comfyui = bs.COMFYUI_STARTING
            self._touch(urgent=True)

    def comfyui_answers(self, port: int) -> None:
        with self._lock:
            self._ready.add(port)
            if all(p in self._ready for p in self._ports):
                self._comfyui = bs.COMFYUI_READY
                self._mark("comfyui_ready_s")
            self._touch(urgent=True)

    def comfyui_exited(self, code: int) -> None:
        with self._lock:
            self._comfyui, self._comfyui_exit = bs.COMFYUI_EXITED, code
            self._ready.clear()
            self._touch(urgent=True)

    def models_settled_without_download(self, state: str, note: str) -> None:
        """SKIP_MODEL_DOWNLOAD or no models needed: nothing to wait for."""
        with self._lock:
            self._models_state, self._models_note = state, note
            self._touch(urgent=True)

    def models_planned(self, root: str, variant: str, files: Iterable[FileProgress]) -> None:
        with self._lock:
            self._root, self._variant = root, variant
            self._files = {item.rel: item for item in files}
            self._models_state = bs.DOWNLOADING
            self._sample()
            self._touch(urgent=True)

    def file_started(self, rel: str, size: int | None, done: int) -> None:
        with self._lock:
            item = self._files.setdefault(rel, FileProgress(rel, size))
            item.size, item.done, item.state = size if size is not None else item.size, done, "active"
            self._touch()

    def file_bytes(self, rel: str, count: int) -> None:
        with self._lock:
            item = self._files.get(rel)
            if item is not None:
                item.done += count
                self._sample()
                self._touch()

    def file_reset(self, rel: str, count: int) -> None:
        with self._lock:
            item = self._files.get(rel)
            if item is not None:
                item.done = max(0, item.done - count)
                self._touch()

    def file_finished(self, rel: str, published: bool) -> None:
        with self._lock:
            item = self._files.get(rel)
            if item is not None:
                if published:
                    item.state = "done"
                    item.done = item.size if item.size is not None else item.done
                elif item.state == "active":
                    item.state = "stopped"
                self._touch(urgent=True)

    def models_complete(self) -> None:
        with self._lock:
            for item in self._files.values():
                item.state = "done"
                item.done = item.size if item.size is not None else item.done
            self._models_state = bs.COMPLETE
            self._mark("models_complete_s")
            self._touch(urgent=True)

    def models_failed(self, error: BaseException) -> tuple[str, str]:
        """Record the failure; returns (reason, fix) for the log."""
        with self._lock:
            reason, fix = failure_of(error, self._remaining())
            for item in self._files.values():
                if item.state == "active":
                    item.state = "stopped"
            self._models_state = bs.FAILED
            self._error = {"message": reason, "fix": fix}
            self._touch(urgent=True)
            return reason, fix

    # --- the document ----------------------------------------------------------------------------

    def _sample(self) -> None:
        now = time.monotonic()
        self._samples.append((now, sum(item.done for item in self._files.values())))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()

    def _remaining(self) -> int | None:
        sizes = [item.size for item in self._files.values()]
        if not sizes or any(size is None for size in sizes):
            return None
        return sum((item.size or 0) - item.done for item in self._files.values() if item.state != "done")

    def _rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        span = max(time.monotonic(), t1) - t0
        return max(0.0, (b1 - b0) / span) if span >= 1.0 else None

    def _models(self) -> dict[str, Any]:
        files = list(self._files.values())
        total = sum(item.size or 0 for item in files)
        done = sum(min(item.done, item.size) if item.size else item.done for item in files)
        finished = sum(1 for item in files if item.state == "done")
        state = self._models_state
        rate = self._rate() if state == bs.DOWNLOADING else None
        remaining = self._remaining()
        eta = remaining / rate if rate and remaining is not None else None
        if state == bs.DOWNLOADING:
            percent = f" ({100 * done / total:.0f} %)" if total else ""
            speed = f", {human_bytes(rate)}/s" if rate is not None else ""
            left = f", {duration_text(eta)} left" if eta is not None else ""
            summary = (
                f"{human_bytes(done)} of {human_bytes(total)}{percent}{speed}{left}; "
                f"{finished} of {len(files)} files done"
            )
        elif state == bs.COMPLETE:
            summary = f"all {len(files)} files in place ({human_bytes(total)})"
        elif state == bs.PLANNING:
            summary = "asking the Hub which files to fetch and how large they are"
        elif state == bs.FAILED:
            summary = f"failed after {human_bytes(done)} of {human_bytes(total)}; {finished} of {len(files)} files done"
        else:
            summary = self._models_note
        return {
            "state": state,
            "variant": self._variant,
            "root": self._root,
            "total_bytes": total,
            "done_bytes": done,
            "rate_bytes_per_s": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "summary": summary,
            "files": [
                {
                    "rel": item.rel,
                    "size": item.size,
                    "done": item.done,
                    "state": item.state,
                    "text": item.text(),
                }
                for item in files
            ],
            "error": self._error,
        }

    def _headline(self, models: dict[str, Any]) -> tuple[str, str]:
        state = models["state"]
        if self._comfyui == bs.COMFYUI_EXITED:
            return "stopped", f"ComfyUI exited with code {self._comfyui_exit}"
        if state == bs.FAILED:
            return bs.FAILED, f"The model download failed: {models['error']['message']}"
        comfyui_ready = self._comfyui == bs.COMFYUI_READY
        if state in (bs.PLANNING, bs.DOWNLOADING):
            doing = (
                "Looking up the model files"
                if state == bs.PLANNING
                else f"Downloading the models: {models['summary']}"
            )
            after = "ComfyUI is ready" if comfyui_ready else "ComfyUI is starting"
            return "models", f"{doing}. {after}."
        if not comfyui_ready:
            return "comfyui", "The models are in place. ComfyUI is starting."
        return "ready", "ComfyUI is ready."

    def _comfyui_text(self) -> str:
        if self._comfyui == bs.COMFYUI_WAITING:
            return "waiting for the boot's steps 2-4"
        if self._comfyui == bs.COMFYUI_EXITED:
            return f"exited with code {self._comfyui_exit}"
        ready = ", ".join(str(p) for p in sorted(self._ready))
        if self._comfyui == bs.COMFYUI_READY:
            return f"answers on port {ready}" if len(self._ready) == 1 else f"answers on ports {ready}"
        return (
            f"starting ({len(self._ready)} of {len(self._ports)} answer)"
            if len(self._ports) > 1
            else "starting"
        )

    def document(self) -> dict[str, Any]:
        with self._lock:
            models = self._models()
            phase, headline = self._headline(models)
            self._dirty = False
            return {
                "version": bs.VERSION,
                "started": round(self.started, 3),
                "updated": round(self._clock(), 3),
                "phase": phase,
                "headline": headline,
                "comfyui": {
                    "state": self._comfyui,
                    "ports": list(self._ports),
                    "ready": sorted(self._ready),
                    "text": self._comfyui_text(),
                },
                "models": models,
                "timings": dict(self.timings),
            }

    def write(self) -> None:
        import json

        write_text_atomically(self.path, json.dumps(self.document(), indent=1) + "\n")
