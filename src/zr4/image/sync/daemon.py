"""The sync loop: ``run_daemon`` (watch until stopped) and ``sync_once`` (one full pass).

At start the output folder is reconciled with the journal (files not recorded as uploaded with
their current size and mtime become candidates, interrupted ``uploading`` entries are checked
against the bucket before any byte is sent again) and uploaded-but-unindexed entries are indexed.
Errors never end the daemon: transient ones back off per file, permanent ones (credentials,
missing bucket, clock) print one line and pause uploads, which are re-tried every
``permanent_retry_seconds``. Local files are only removed with ``R2_DELETE_AFTER_UPLOAD=true``
after the object was verified.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from zr4.core.atomic import write_text_atomically
from zr4.core.documents import read_json_object
from zr4.core.redact import redact
from zr4.core.sizes import human_bytes
from zr4.errors import Zr4Error
from zr4.image.sync.client import (
    Classified,
    ErrorKind,
    classify,
    explain,
    make_s3_client,
    make_transfer_manager,
)
from zr4.image.sync.journal import UPLOADING, Journal
from zr4.image.sync.metadata_index import MetadataIndex, entry_for
from zr4.image.sync.openfiles import OpenFiles
from zr4.image.sync.scanner import (
    FileState,
    is_complete,
    is_temporary,
    printable_path,
    scan,
    stat_file,
)
from zr4.image.sync.settings import SyncSettings
from zr4.image.sync.uploader import (
    ALREADY_PRESENT,
    CHANGED,
    UPLOADED,
    VANISHED,
    DayListing,
    Outcome,
    UploadContext,
    UploadHooks,
    upload_one,
)
from zr4.image.sync.watcher import InotifyWatcher, PollingWatcher, make_watcher

LOGGER_NAME = "zr4.sync"
log = logging.getLogger(LOGGER_NAME)

_HEARTBEAT_SECONDS = 2.0
_TICK_SECONDS = 0.2
_INDEX_DEBOUNCE_SECONDS = 1.0


class SyncError(Zr4Error):
    """The sync cannot run (settings, lock, or a permanent server error in ``sync once``)."""


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)  # object keys sent
    already_present: list[str] = field(default_factory=list)  # keys found with the same size + sha256
    deleted_local: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # still being written when the pass ended
    failed: dict[str, str] = field(default_factory=dict)  # relative path → reason
    bytes_uploaded: int = 0
    seconds: float = 0.0
    error: str | None = None  # a permanent error that stopped the pass

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None and not self.incomplete


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_is_alive(settings: SyncSettings, max_age_s: float = 30.0) -> bool:
    """For ``zr4 health``: a heartbeat younger than ``max_age_s`` from a live process."""
    beat = read_heartbeat(settings)
    if beat is None:
        return False
    try:
        age = time.time() - float(beat["time"])
        pid = int(beat["pid"])
    except (ValueError, KeyError, TypeError):  # not a heartbeat zr4 wrote
        return False
    return age <= max_age_s and _pid_alive(pid)


def read_heartbeat(settings: SyncSettings) -> dict[str, Any] | None:
    return read_json_object(settings.heartbeat_path)


@contextlib.contextmanager
def journal_lock(settings: SyncSettings, command: str) -> Iterator[None]:
    """One sync process per journal; a second one (``command``) is refused with the holder's pid."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.lock_path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SyncError(
                f"another zr4 sync (pid {holder}) is using {settings.journal_path}: `{command}` cannot "
                "run beside it; a running `zr4 sync run` already uploads new outputs within seconds "
                f"(stop it, or wait for it to finish, then run `{command}` again)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


class SyncEngine:
    """State of one sync run, and its two ways to run: :meth:`watch_until` (what :func:`run_daemon`
    runs) and :meth:`one_pass` (:func:`sync_once`)."""

    def __init__(self, settings: SyncSettings, client: Any | None = None) -> None:
        self.settings = settings
        self.client = client if client is not None else make_s3_client(settings)
        self.transfer = make_transfer_manager(self.client, settings)
        self.journal = Journal(settings.journal_path)
        self.index = MetadataIndex(self.client, settings)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            settings.file_concurrency, thread_name_prefix="zr4-sync"
        )
        self.records = self.journal.all()
        self.candidates: dict[str, float] = {}  # relative path → earliest next check (monotonic)
        self.in_flight: dict[str, concurrent.futures.Future[Outcome]] = {}
        self.attempts: dict[str, int] = {}
        self.paused_until = 0.0
        self.last_permanent: str | None = None
        self.last_error: str | None = None
        self.index_due = 0.0
        self.report = SyncReport()
        self.excluded = (settings.state_dir,)
        self.open_files = OpenFiles(settings.output_dir)
        self.hooks = UploadHooks(self.client)
        self.listing = DayListing(self.client, settings.bucket)
        self.uploads = UploadContext(
            settings, self.client, self.transfer, self.journal, self.hooks, self.listing
        )
        self.conditional_known = False
        self.conditional_next_try = 0.0
        self.busy_until = 0.0
        self._probe_lock = threading.Lock()
        # metadata.json is written off the loop, so a slow server never stalls watching or the heartbeat.
        self.background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zr4-sync-index")
        self.index_future: concurrent.futures.Future[bool] | None = None

    def detect_conditional_writes(self) -> None:
        """Once per run: does the server honour If-None-Match? (Errors: ask again later.)

        Runs in an upload worker, never in the loop: an unreachable server must not stall it.
        Until it is known, uploads take the path for servers without conditional writes.
        """
        if self.conditional_known or time.monotonic() < self.conditional_next_try:
            return
        with self._probe_lock:
            if self.conditional_known or time.monotonic() < self.conditional_next_try:
                return
            try:
                supported = self.index.conditional
            except Exception:
                self.conditional_next_try = time.monotonic() + self.settings.permanent_retry_seconds
                return
            self.hooks.conditional = supported
            if supported:
                self.listing.max_age_s = float("inf")
            self.conditional_known = True

    def _upload(self, state: FileState) -> Outcome:
        self.detect_conditional_writes()
        return upload_one(state, self.uploads)

    def upload_file(self, state: FileState) -> Outcome:
        """Upload one named file now, outside the loop, by the loop's own steps (the serverless worker
        uploads exactly its job's outputs); the caller holds :func:`journal_lock`."""
        outcome = self._upload(state)
        record = self.journal.get(state.rel_path)
        if record is not None:
            self.records[state.rel_path] = record
        return outcome

    # --- candidates -----------------------------------------------------------------------
    def _needs_upload(self, state: FileState) -> bool:
        record = self.records.get(state.rel_path)
        return not (
            record and record.done and record.size == state.size and record.mtime_ns == state.mtime_ns
        )

    def add_candidate(self, rel_path: str, when: float | None = None) -> None:
        if is_temporary(rel_path):
            return
        when = time.monotonic() if when is None else when
        current = self.candidates.get(rel_path)
        if current is None or when < current:
            self.candidates[rel_path] = when

    def rescan(self) -> None:
        for rel, state in scan(self.settings.output_dir, self.excluded).items():
            if rel not in self.in_flight and self._needs_upload(state):
                self.add_candidate(rel)

    def reconcile(self) -> None:
        """Journal vs folder at start; uploaded-but-unindexed entries get indexed."""
        self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        self.rescan()
        if self.journal.unindexed():
            self.index_due = time.monotonic()
        self.background.submit(self.abort_interrupted_multipart)

    def abort_interrupted_multipart(self) -> None:
        """Abort multipart uploads a kill left open on our ``uploading`` keys (they hold storage).

        Best effort: the re-upload starts a new one anyway, and R2 also aborts them after 7 days.
        """
        keys = {r.key for r in self.records.values() if r.state == UPLOADING and r.key}
        for key in sorted(keys):
            try:
                listed = self.client.list_multipart_uploads(Bucket=self.settings.bucket, Prefix=key)
                for upload in listed.get("Uploads", []):
                    if upload.get("Key") == key:
                        self.client.abort_multipart_upload(
                            Bucket=self.settings.bucket, Key=key, UploadId=upload["UploadId"]
                        )
                        log.info("aborted an interrupted multipart upload of %s", key)
            except Exception as error:
                log.debug("could not list multipart uploads of %s: %s", key, _short(error, self.settings))
                return

    # --- scheduling ----------------------------------------------------------------------------
    def schedule(self, stopping: bool = False) -> None:
        now = time.monotonic()
        now_ns = time.time_ns()
        limit = self.settings.file_concurrency * 2
        if now < self.paused_until:
            # Paused after a permanent error: nothing is due before the pause ends.
            for rel, when in self.candidates.items():
                if when < self.paused_until:
                    self.candidates[rel] = self.paused_until
            return
        for rel, when in sorted(self.candidates.items(), key=lambda item: item[1]):
            if stopping:
                return
            if len(self.in_flight) >= limit:
                self.busy_until = now + _TICK_SECONDS  # wake when a slot may be free, not before
                return
            if when > now or rel in self.in_flight:
                continue
            state = stat_file(self.settings.output_dir, rel)
            if state is None or not self._needs_upload(state):
                del self.candidates[rel]
                continue
            if not is_complete(state, now_ns, self.settings.stable_seconds):
                wait_s = (state.mtime_ns + int(self.settings.stable_seconds * 1e9) - now_ns) / 1e9
                self.candidates[rel] = now + max(0.05, wait_s + 0.02)
                continue
            if self.still_open(state, now_ns):
                self.candidates[rel] = now + max(0.2, self.settings.stable_seconds)
                continue
            record = self.records.get(rel)
            if record and record.next_try > time.time() and record.size == state.size:
                self.candidates[rel] = now + (record.next_try - time.time())
                continue
            del self.candidates[rel]
            self.in_flight[rel] = self.pool.submit(self._upload, state)

    def still_open(self, state: FileState, now_ns: int) -> bool:
        """Quiet, but its writer has not closed it yet (and it is within the grace period)."""
        within_grace = now_ns - state.mtime_ns < int(self.settings.open_grace_seconds * 1e9)
        return within_grace and self.open_files.held(state.rel_path)

    def collect(self) -> None:
        for rel, future in list(self.in_flight.items()):
            if not future.done():
                continue
            del self.in_flight[rel]
            error = future.exception()
            if error is None:
                self._on_outcome(future.result())
            else:
                self._on_error(rel, error)

    def _on_outcome(self, outcome: Outcome) -> None:
        rel = outcome.rel_path
        self.attempts.pop(rel, None)
        if outcome.kind in (UPLOADED, ALREADY_PRESENT):
            record = self.journal.get(rel)
            if record is not None:
                self.records[rel] = record
            if self.last_permanent is not None:
                log.info("uploads work again")
                self.last_permanent = None
            self.paused_until = 0.0
            if outcome.kind == UPLOADED:
                self.report.uploaded.append(outcome.key)
                self.report.bytes_uploaded += outcome.size
                rate = outcome.size / max(outcome.seconds, 1e-6) / 1e6
                log.info(
                    "uploaded %s (%s, %.1f s, %.0f MB/s)",
                    outcome.key,
                    human_bytes(outcome.size),
                    outcome.seconds,
                    rate,
                )
            else:
                self.report.already_present.append(outcome.key)
                log.info("already in bucket: %s", outcome.key)
            if outcome.deleted_local:
                self.report.deleted_local.append(rel)
                log.info("deleted local %s after verified upload", printable_path(rel))
            self.index_due = min(self.index_due or float("inf"), time.monotonic() + _INDEX_DEBOUNCE_SECONDS)
        elif outcome.kind == CHANGED:
            self.add_candidate(rel, time.monotonic() + self.settings.stable_seconds)
        elif outcome.kind == VANISHED:
            log.warning("%s disappeared before it was uploaded", printable_path(rel))

    def _on_error(self, rel: str, error: BaseException) -> None:
        classified = classify(error)
        message = redact(explain(classified, self.settings), self.settings.secrets())
        self.last_error = message
        state = stat_file(self.settings.output_dir, rel)
        if classified.kind.permanent:
            self.paused_until = time.monotonic() + self.settings.permanent_retry_seconds
            if message != self.last_permanent:
                log.error(
                    "%s; local files are kept, retrying every %.0f s",
                    message,
                    self.settings.permanent_retry_seconds,
                )
                self.last_permanent = message
            self.add_candidate(rel, self.paused_until)
            self.report.failed[rel] = message
            return
        attempts = self.attempts.get(rel, 0) + 1
        self.attempts[rel] = attempts
        delay = min(self.settings.max_backoff_seconds, 0.5 * 2 ** (attempts - 1))
        detail = _short(error, self.settings)
        log.warning("%s: %s; retry %d in %.1f s", printable_path(rel), detail, attempts, delay)
        self.report.failed[rel] = detail
        if state is not None:
            self.journal.mark_failed(rel, state.size, state.mtime_ns, detail, time.time() + delay)
            record = self.journal.get(rel)
            if record is not None:
                self.records[rel] = record
            self.add_candidate(rel, time.monotonic() + delay)

    def flush_index_soon(self) -> None:
        """From the loop: start a background index update when one is due and none is running."""
        if not self.index_due or time.monotonic() < self.index_due:
            return
        if self.index_future is not None and not self.index_future.done():
            return
        self.index_due = 0.0
        self.index_future = self.background.submit(self._write_index)

    def flush_index(self, timeout_s: float | None = None) -> bool:
        """Now (shutdown, end of ``sync once``), waiting at most ``timeout_s``: False on error/timeout."""
        if self.index_future is not None and not self.index_future.done():
            with contextlib.suppress(Exception):
                self.index_future.result(timeout=timeout_s)
        if self.index_future is not None and not self.index_future.done():
            return False
        self.index_future = self.background.submit(self._write_index)
        try:
            return self.index_future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            return False

    def _write_index(self) -> bool:
        """Write fragments and metadata.json for uploaded-but-unindexed entries; False on error."""
        pending = self.journal.unindexed()
        if not pending:
            return True
        by_day: dict[str, list[str]] = {}
        for record in pending:
            by_day.setdefault(record.day or "", []).append(record.rel_path)
        try:
            for day, rels in sorted(by_day.items()):
                entries = [entry_for(r, self.settings) for r in self.journal.day_records(day)]
                self.index.update_day(day, entries)
                self.journal.mark_indexed(rels)
            if self.journal.unindexed():  # uploads finished meanwhile
                self.index_due = time.monotonic() + _INDEX_DEBOUNCE_SECONDS
        except Exception as error:
            log.warning("metadata.json not updated yet: %s; will retry", _short(error, self.settings))
            self.index_due = time.monotonic() + min(self.settings.max_backoff_seconds, 5.0)
            return False
        return True

    def write_heartbeat(self, watcher_kind: str) -> None:
        beat = {
            "pid": os.getpid(),
            "time": time.time(),
            "watcher": watcher_kind,
            "candidates": len(self.candidates),
            "in_flight": len(self.in_flight),
            "uploaded": len(self.report.uploaded),
            "last_error": self.last_permanent or self.last_error,
        }
        # `zr4 health` and the user read this file: it is output like any log line. It is rewritten
        # every few seconds and only says "alive now": no fsync.
        text = redact(json.dumps(beat), self.settings.secrets())
        write_text_atomically(self.settings.heartbeat_path, text, mode=None, durable=False)

    def drain(self, deadline_s: float) -> bool:
        """Wait for in-flight uploads up to the deadline; True when none is left."""
        end = time.monotonic() + deadline_s
        while self.in_flight and time.monotonic() < end:
            concurrent.futures.wait(
                list(self.in_flight.values()), timeout=min(0.2, max(0.0, end - time.monotonic()))
            )
            self.collect()
        return not self.in_flight

    # --- the daemon: watch until stopped --------------------------------------------------------
    def watch_until(self, stop_event: threading.Event, watcher: InotifyWatcher | PollingWatcher) -> None:
        """Upload what ``watcher`` reports until ``stop_event`` is set, then finish within the
        shutdown deadline; closes the watcher and the engine."""
        try:
            self.reconcile()
            self._watch(stop_event, watcher)
            self._stop_watching()
        finally:
            watcher.close()
            index_busy = self.index_future is not None and not self.index_future.done()
            self.close(cancel=bool(self.in_flight) or index_busy)

    def _watch(self, stop_event: threading.Event, watcher: InotifyWatcher | PollingWatcher) -> None:
        polling = isinstance(watcher, PollingWatcher)
        scan_every = self.settings.poll_seconds if polling else self.settings.rescan_seconds
        last_scan = time.monotonic()
        last_beat = 0.0
        while not stop_event.is_set():
            timeout = self._wait_s(last_scan + scan_every)
            if polling:
                stop_event.wait(timeout)  # polling: the rescan below is the watch
                changes = None
            else:
                changes = watcher.wait(timeout)
            if stop_event.is_set():
                break
            try:
                if changes is not None:
                    for rel in changes.paths:
                        self.add_candidate(rel)
                if (changes is not None and changes.rescan) or time.monotonic() - last_scan >= scan_every:
                    self.rescan()
                    last_scan = time.monotonic()
                self.collect()
                self.schedule()
                self.flush_index_soon()
                if time.monotonic() - last_beat >= _HEARTBEAT_SECONDS:
                    self.write_heartbeat(watcher.kind)
                    last_beat = time.monotonic()
            except Exception as error:  # a full disk, a vanished folder...: log, wait, go on
                log.error("sync loop: %s; continuing", _short(error, self.settings))
                stop_event.wait(1.0)

    def _wait_s(self, rescan_at: float) -> float:
        """How long the loop may wait: until the next file is due, a slot frees or a rescan."""
        now = time.monotonic()
        next_due = max(min(self.candidates.values(), default=now + _TICK_SECONDS), self.busy_until)
        return min(max(0.0, next_due - now), _TICK_SECONDS, max(0.0, rescan_at - now))

    def _stop_watching(self) -> None:
        """No new files; in-flight uploads and metadata.json get the shutdown deadline."""
        log.info(
            "stopping: taking no new files, %d upload(s) in flight get %.0f s",
            len(self.in_flight),
            self.settings.shutdown_seconds,
        )
        deadline = time.monotonic() + self.settings.shutdown_seconds
        finished = self.drain(self.settings.shutdown_seconds)
        # metadata.json with what remains of the deadline; what misses it is indexed at the next start.
        self.flush_index(timeout_s=max(0.0, deadline - time.monotonic()))
        if not finished:
            log.warning(
                "%d upload(s) unfinished at the deadline; they resume at the next start",
                len(self.in_flight),
            )
        self.write_heartbeat("stopped")

    # --- sync once: one full pass --------------------------------------------------------------
    def one_pass(self, wait_incomplete_s: float, max_attempts: int) -> SyncReport:
        """Every complete file uploaded once and indexed (see :func:`sync_once`); closes the engine."""
        # One pass, as `rclone copy` does: each day folder is listed once, at its first file. Re-listing
        # every 10 s (the daemon's guard against a same-named object from another pod, on servers
        # without conditional writes) would cost a LIST of the whole folder per interval.
        self.listing.max_age_s = float("inf")
        try:
            self.reconcile()
            give_up = time.monotonic() + wait_incomplete_s
            while self.candidates or self.in_flight:
                self.collect()
                if self.last_permanent is not None:
                    self.report.error = self.last_permanent
                    break
                self._drop_exhausted(max_attempts)
                if time.monotonic() > give_up:
                    self._give_up_incomplete()
                self.schedule()
                self._wait_for_progress()
            self.drain(self.settings.shutdown_seconds)
            if self.report.error is None and not self.flush_index():
                self.report.error = self.last_error or "metadata.json could not be updated"
            self._forget_recovered_failures()
        finally:
            self.close(cancel=bool(self.in_flight))
        return self.report

    def _drop_exhausted(self, max_attempts: int) -> None:
        for rel, count in self.attempts.items():
            if count >= max_attempts and rel in self.candidates:
                del self.candidates[rel]

    def _give_up_incomplete(self) -> None:
        """Past the wait: files still being written (or held open) are reported, not waited for."""
        for rel in list(self.candidates):
            state = stat_file(self.settings.output_dir, rel)
            if state is not None and (
                not is_complete(state, time.time_ns(), self.settings.stable_seconds)
                or self.still_open(state, time.time_ns())
            ):
                self.report.incomplete.append(rel)
                del self.candidates[rel]

    def _wait_for_progress(self) -> None:
        """Until an upload finishes (a tick at most), else until the next candidate is due."""
        if self.in_flight:
            concurrent.futures.wait(
                list(self.in_flight.values()),
                timeout=_TICK_SECONDS,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
        elif self.candidates:
            next_due = min(self.candidates.values())
            time.sleep(min(1.0, max(0.01, next_due - time.monotonic())))

    def _forget_recovered_failures(self) -> None:
        """Files that finally succeeded are no longer failures."""
        for rel in list(self.report.failed):
            record = self.journal.get(rel)
            state = stat_file(self.settings.output_dir, rel)
            if (
                record
                and record.done
                and (state is None or (record.size, record.mtime_ns) == (state.size, state.mtime_ns))
            ):
                del self.report.failed[rel]

    def close(self, cancel: bool) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=True)
        self.background.shutdown(wait=not cancel, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.transfer.shutdown(cancel=cancel)
        self.journal.close()


def _short(error: BaseException, settings: SyncSettings) -> str:
    classified: Classified = classify(error)
    if classified.kind in (ErrorKind.TRANSIENT, ErrorKind.UNREACHABLE):
        text = f"{explain(classified, settings)} [{type(error).__name__}]"
    else:
        text = f"{type(error).__name__}: {error}"
    return redact(text, settings.secrets())


def run_daemon(
    settings: SyncSettings,
    stop_event: threading.Event,
    client: Any | None = None,
    prefer_inotify: bool = True,
) -> int:
    """Watch and upload until ``stop_event`` is set, then finish in-flight uploads; returns 0.

    Meant to run as the supervised child process ``zr4 sync run`` (SIGTERM sets ``stop_event``).
    """
    with journal_lock(settings, "zr4 sync run"):
        engine = SyncEngine(settings, client)
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        watcher = make_watcher(settings.output_dir, prefer_inotify)
        log.info(
            "watching %s (%s) → bucket %r prefix %r at %s, pod %s",
            settings.output_dir,
            watcher.kind,
            settings.bucket,
            settings.prefix,
            settings.endpoint_url,
            settings.pod_id,
        )
        engine.watch_until(stop_event, watcher)
        log.info("stopped")
    return 0


def sync_once(
    settings: SyncSettings,
    client: Any | None = None,
    wait_incomplete_s: float = 60.0,
    max_attempts: int = 4,
) -> SyncReport:
    """One full pass: every complete file uploaded once, the metadata indexed, then return.

    Files still being written are waited for up to ``wait_incomplete_s``; transient errors are
    retried ``max_attempts`` times; a permanent error ends the pass (``report.error``).
    """
    started = time.monotonic()
    with journal_lock(settings, "zr4 sync once"):
        report = SyncEngine(settings, client).one_pass(wait_incomplete_s, max_attempts)
    report.seconds = time.monotonic() - started
    return report
