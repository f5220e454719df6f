"""Step 2 of `zr4 start`: the boot's model files, fetched on a thread while the boot goes on.

ComfyUI starts without any model file, and every file is moved into place whole once verified, so a
loader never sees part of one. The pinned node packs read no model file when imported: they
register their folders (kijai/ComfyUI-WanAnimatePreprocess@1a35b81a:nodes.py adds ``detection`` and
opens the ONNX files only in ``OnnxDetectionModelLoader.loadmodel``;
kijai/ComfyUI-WanVideoWrapper@f6e2d6dd:nodes_model_loading.py adds ``unet_gguf``), and no module of
the five runs a file read at import time other than VideoHelperSuite's search for ffmpeg
(Kosinkadink/ComfyUI-VideoHelperSuite@3234937f:videohelpersuite/utils.py). ComfyUI lists a folder's
files when asked and again once one lands (the listing is cached per folder modification time,
comfyanonymous/ComfyUI@f59f71cf:folder_paths.py ``cached_filename_list_``). The start therefore waits only for the plan (which files, and the exact
names the workflow of step 3 must load); the bytes arrive while ComfyUI starts, in the order a job
first uses them, counted into the boot's status (:mod:`zr4.image.boot_report`) for the status page,
`zr4 health` and the jobs that wait for them.

A failure does not stop the start: it goes into the status with its fix and into the log, and
ComfyUI runs without the models (a job fails at once with the same line).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zr4.core import boot_status as bs
from zr4.errors import Zr4Error
from zr4.image.boot_report import BootReport, FileProgress
from zr4.image.models.progress import Progress

Log = Callable[[str], None]
STOP_WAIT_S = 5.0  # at the end of the start: how long the download may take to stop


class DownloadStopped(Exception):
    """The start is ending: the download stops where it is (the next start resumes it)."""


@dataclass
class ModelsOutcome:
    """What step 3 needs: the variant and every resolved file, and lines for the log."""

    variant: str
    targets: list[Any] = field(default_factory=list)  # FileTarget of each file (for the workflow)
    lines: list[str] = field(default_factory=list)


class ReportingProgress(Progress):
    """The model manager's progress (log lines), counted into the boot's status as well.

    It also stops a download the start is shutting down: the byte callbacks run on the download's
    own threads, so raising there ends the transfer within one buffer.
    """

    def __init__(self, report: BootReport, models_root: Path, stop: threading.Event, **options: Any) -> None:
        super().__init__(**options)
        self._report = report
        self._root = models_root
        self._stop_event = stop
        self._sizes: dict[str, int | None] = {}

    def file_started(self, rel: str, size: int | None, done: int) -> None:
        if self._stop_event.is_set():
            raise DownloadStopped(rel)
        super().file_started(rel, size, done)
        self._sizes[rel] = size
        self._report.file_started(rel, size, done)

    def advance(self, rel: str, length: int) -> None:
        super().advance(rel, length)
        self._report.file_bytes(rel, length)
        if self._stop_event.is_set():
            raise DownloadStopped(rel)

    def thrown_away(self, rel: str, length: int) -> None:
        super().thrown_away(rel, length)
        self._report.file_reset(rel, length)

    def file_finished(self, rel: str) -> None:
        super().file_finished(rel)
        size = self._sizes.get(rel)
        path = self._root / rel
        published = path.is_file() and (size is None or path.stat().st_size == size)
        self._report.file_finished(rel, published)


def _lines(result: Any) -> list[str]:
    from zr4.core.sizes import human_bytes

    plan = result.plan
    lines = [f"{len(plan.files)} files verified in {plan.models_root} ({plan.variant})"]
    if result.fetched:
        lines.append(f"fetched {len(result.fetched)} file(s), {human_bytes(result.fetched_bytes)}")
    return lines


class ModelDownload:
    """Plan and fetch this boot's models on a background thread; :meth:`wait_for_plan` blocks only
    until the files are known."""

    def __init__(
        self,
        env: Mapping[str, str],
        models_dir: Path,
        manifest_path: Path | None,
        report: BootReport,
        log: Log,
    ) -> None:
        self.env = dict(env)
        self.models_dir = models_dir
        self.manifest_path = manifest_path
        self.report = report
        self.log = log
        self._stop = threading.Event()
        self._planned = threading.Event()
        self._outcome = ModelsOutcome("")
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zr4-models", daemon=True)
        self._thread.start()

    def wait_for_plan(self, interrupted: Callable[[], bool] = lambda: False) -> ModelsOutcome:
        """The files of this boot once planned (or nothing, when planning failed or was interrupted)."""
        while not self._planned.wait(0.1):
            if interrupted():
                break
        return self._outcome

    def stop(self, timeout_s: float = STOP_WAIT_S) -> bool:
        """Ask a running download to stop; True once the thread has ended."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _on_plan(self, plan: Any) -> None:
        from zr4.image.models.ensure import VERIFIED

        files = [
            FileProgress(
                item.target.rel,
                item.target.size,
                (item.target.size or 0) if item.status == VERIFIED else item.have_bytes,
                "done" if item.status == VERIFIED else "waiting",
            )
            for item in plan.files
        ]
        self.report.models_planned(str(plan.models_root), plan.variant, files)
        self._outcome = ModelsOutcome(plan.variant, [item.target for item in plan.files])
        if not plan.complete:
            from zr4.core.sizes import human_bytes

            self.log(
                f"  {sum(1 for f in files if f.state != 'done')} of {len(files)} files to fetch "
                f"({human_bytes(plan.bytes_to_fetch)}) in {plan.models_root}, while ComfyUI starts"
            )
        self._planned.set()

    def _run(self) -> None:
        from zr4.image.models import ensure_models, load_manifest, settings_from_env

        try:
            settings = settings_from_env(self.env, models_dir=self.models_dir)
            manifest = load_manifest(self.manifest_path)
            progress = ReportingProgress(self.report, settings.models_dir, self._stop, log_interval_s=10.0)
            result = ensure_models(
                settings, manifest=manifest, progress=progress, log=self.log, on_plan=self._on_plan
            )
        except DownloadStopped:
            self.log("models: the download stopped with the start; the next start resumes it")
            return
        except Zr4Error as error:
            self._failed(error)
            return
        except Exception as error:  # a bug: the boot goes on and says so
            self._failed(error)
            raise
        finally:
            self._planned.set()
        self.report.models_complete()
        for line in _lines(result):
            self.log(f"  models: {line}")
        seconds = self.report.timings.get("models_complete_s")
        self.log(
            f"models complete, {seconds:.2f} s after the process started"
            if seconds is not None
            else "models complete"
        )

    def _failed(self, error: BaseException) -> None:
        self.error = error
        reason, fix = self.report.models_failed(error)
        self.log(f"ERROR: models: {reason}")
        self.log(f"ERROR: models: fix: {fix}")


def models_without_download(
    env: Mapping[str, str], models_dir: Path, manifest_path: Path | None, report: BootReport, *, skip: bool
) -> ModelsOutcome | None:
    """The outcome when nothing is to be fetched (no models needed, or ``skip``:
    SKIP_MODEL_DOWNLOAD=true); None when the download must run."""
    from zr4.image.models import load_manifest, settings_from_env

    settings = settings_from_env(env, models_dir=models_dir)
    if not settings.enable_steadydancer:
        report.models_settled_without_download(bs.OFF, "ENABLE_STEADYDANCER=false: no models needed")
        return ModelsOutcome(settings.variant, [], ["ENABLE_STEADYDANCER=false: no models needed"])
    if not skip:
        return None
    targets, variant = local_targets(settings, load_manifest(manifest_path))
    note = "SKIP_MODEL_DOWNLOAD=true: not checked or downloaded"
    report.models_settled_without_download(bs.SKIPPED, note)
    return ModelsOutcome(variant, targets, [note])


def local_targets(settings, manifest):  # type: ignore[no-untyped-def]
    """The files of this boot as found on disk, without the network (for SKIP_MODEL_DOWNLOAD)."""
    from zr4.core.model_files.selection import (
        normalize_gguf_level,
        pick_gguf_file,
        select_entries,
        target_for,
    )

    targets = []
    for entry in select_entries(manifest, settings):
        if entry.pick == "gguf_level":
            level = normalize_gguf_level(settings.gguf_level, manifest)
            folder = settings.models_dir / entry.folder
            listing = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
            chosen = pick_gguf_file(listing, level, entry.avoid)
            if chosen is not None:
                targets.append(target_for(entry, path=chosen, level=level))
        else:
            targets.append(target_for(entry))
    return targets, settings.variant
