"""Where a serverless job's files go once ComfyUI wrote them: R2, file by file, or a bounded folder.

:class:`R2Store` uploads exactly one job's outputs (the files its prompt's output nodes reported),
by the sync package's own steps and journal (:meth:`SyncEngine.upload_file`), so the keys, the
``metadata.json`` day index and ``R2_DELETE_AFTER_UPLOAD`` behave as for ``zr4 sync``. A pass over the
whole output folder would take (and, with ``R2_DELETE_AFTER_UPLOAD``, delete) the files of another
job running beside this one on a second ComfyUI that shares the folder. The worker's jobs share one
engine and take turns on it; the journal's lock is held only while a job uploads. When another
process holds that lock (``zr4 sync run`` with ``ENABLE_R2_SYNC=true``), that daemon uploads the file
itself and the job waits for its object.

:class:`OutputLedger` keeps the output folder bounded when nothing syncs it (no R2): the files of
the last ``ZR4_KEEP_OUTPUTS`` jobs stay, older ones (only files this worker's jobs wrote) are deleted.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.client.job_cancel import JobControl
from zr4.errors import Zr4Error

UPLOAD_ATTEMPTS = 4
DAEMON_WAIT_S = 120.0  # how long a job waits for `zr4 sync run` to upload its video
INDEX_WAIT_S = 30.0


class StoreError(Zr4Error):
    """A job's video could not be stored; one line."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    url: str
    expires_in_s: int

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "url": self.url, "expires_in_s": self.expires_in_s}


class R2Store:
    """R2 for one worker process: one sync engine, used by one job at a time."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings.with_(stable_seconds=0.0)  # ComfyUI reported the files complete
        self._turn = threading.Lock()
        self._made = threading.Lock()
        self._engine: Any = None

    def _engine_now(self) -> Any:
        from zr4.image.sync.daemon import SyncEngine

        with self._made:
            if self._engine is None:
                self._engine = SyncEngine(self.settings)
            return self._engine

    def store(
        self, rel_paths: Sequence[str], video: str, presign_s: int, control: JobControl | None = None
    ) -> StoredObject:
        """Upload ``rel_paths`` (the job's files, ``video`` among them) and presign the video's object.

        Files of the list that are not there (a metadata PNG switched off) are skipped; the video
        must be there.
        """
        from zr4.image.sync.daemon import SyncError, journal_lock

        control = control or JobControl()
        keys: dict[str, str] = {}
        daemon = False
        with self._turn, contextlib.ExitStack() as held:
            try:
                held.enter_context(journal_lock(self.settings, "the serverless worker's upload"))
            except SyncError:
                daemon = True
            else:
                keys = self._upload(rel_paths, video, control)
        key = self._wait_for_daemon(video, control) if daemon else keys[video]
        url = self._engine_now().client.generate_presigned_url(
            "get_object", Params={"Bucket": self.settings.bucket, "Key": key}, ExpiresIn=presign_s
        )
        return StoredObject(self.settings.bucket, key, url, presign_s)

    def _upload(self, rel_paths: Sequence[str], video: str, control: JobControl) -> dict[str, str]:
        from zr4.image.sync.scanner import stat_file
        from zr4.image.sync.uploader import ALREADY_PRESENT, UPLOADED, VANISHED

        engine = self._engine_now()
        keys: dict[str, str] = {}
        for rel in rel_paths:
            control.check()  # a stopped job sends nothing more (a file under way finishes)
            state = stat_file(self.settings.output_dir, rel)
            if state is None:
                if rel == video:
                    raise StoreError(f"R2 upload of {rel} failed: it is not in {self.settings.output_dir}")
                continue
            outcome = None
            for attempt in range(UPLOAD_ATTEMPTS):
                try:
                    outcome = engine.upload_file(state)
                except Exception as error:
                    self._give_up_or_wait(rel, error, attempt)
                    continue
                if outcome.kind in (UPLOADED, ALREADY_PRESENT, VANISHED):
                    break
                state = stat_file(self.settings.output_dir, rel) or state  # changed: read it again
            if outcome is not None and outcome.kind == VANISHED and rel != video:
                continue  # a companion file removed meanwhile: the video is what the job returns
            if outcome is None or outcome.kind not in (UPLOADED, ALREADY_PRESENT):
                raise StoreError(f"R2 upload of {rel} failed: the file kept changing or vanished")
            keys[rel] = outcome.key
        # metadata.json lists the new objects; what misses the deadline is indexed by the next pass.
        engine.flush_index(timeout_s=INDEX_WAIT_S)
        return keys

    def _give_up_or_wait(self, rel: str, error: BaseException, attempt: int) -> None:
        from zr4.image.sync.client import classify, explain
        from zr4.image.sync.redact import redact

        classified = classify(error)
        message = redact(explain(classified, self.settings), self.settings.secrets())
        if classified.kind.permanent or attempt + 1 >= UPLOAD_ATTEMPTS:
            raise StoreError(f"R2 upload of {rel} failed: {message}") from None
        time.sleep(min(8.0, 0.5 * 2**attempt))

    def _wait_for_daemon(self, video: str, control: JobControl) -> str:
        """The key under which the sync daemon put ``video`` (its day folder, or its pod-suffixed name)."""
        from zr4.image.sync.scanner import day_for, object_key, pod_suffixed, stat_file
        from zr4.image.sync.uploader import head_object

        state = stat_file(self.settings.output_dir, video)
        day = day_for(state.mtime_ns if state is not None else time.time_ns())
        prefix = self.settings.prefix
        keys = [
            object_key(prefix, day, video),
            object_key(prefix, day, pod_suffixed(video, self.settings.pod_id)),
        ]
        client = self._engine_now().client
        deadline = time.monotonic() + DAEMON_WAIT_S
        while True:
            for key in keys:
                with contextlib.suppress(Exception):
                    if head_object(client, self.settings.bucket, key) is not None:
                        return key
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{video}: another zr4 sync (`zr4 sync run`) holds {self.settings.journal_path} and had "
                    f"not uploaded it after {DAEMON_WAIT_S:.0f} s"
                )
            if control.wait(1.0):
                control.check()


class OutputLedger:
    """The output files of the last ``keep`` jobs of this worker; older ones are deleted as new ones come.

    Only files a job of this process reported are ever deleted, and only while they are regular files.
    """

    def __init__(self, output_dir: Path, keep: int) -> None:
        self.output_dir = output_dir
        self.keep = max(0, keep)
        self._lock = threading.Lock()
        self._jobs: collections.deque[tuple[str, ...]] = collections.deque()

    def add(self, rel_paths: Sequence[str]) -> list[str]:
        """Record one job's files; returns the files of older jobs that were deleted."""
        with self._lock:
            self._jobs.append(tuple(rel_paths))
            old: list[str] = []
            while len(self._jobs) > self.keep:
                old += self._jobs.popleft()
        return [rel for rel in old if remove_output(self.output_dir, rel)]


def remove_output(output_dir: Path, rel: str) -> bool:
    path = output_dir / rel
    with contextlib.suppress(OSError):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            return True
    return False


def remove_partial_outputs(output_dir: Path, tag: str) -> list[str]:
    """A failed or stopped job's files (named ``<prefix>_<tag>_…`` by its VHS_VideoCombine)."""
    removed = []
    with contextlib.suppress(OSError):
        for path in output_dir.rglob(f"*_{tag}_*"):
            rel = path.relative_to(output_dir).as_posix()
            if not any(part.startswith(".") for part in Path(rel).parts) and remove_output(output_dir, rel):
                removed.append(rel)
    return removed
