"""The warm-start record: which files were verified, with the stat that proves they are unchanged.

``<models>/.zr4/verified.json`` maps a path below the models root to its size, mtime (ns), sha256
and origin. At boot a file whose ``stat`` still matches its record is trusted without reading it
or asking the network, so 30 GB of models check in milliseconds. GGUF choices (level -> file name
of a repository listing) are recorded too, so a warm boot needs no listing either.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zr4.core.atomic import write_text_atomically
from zr4.core.documents import read_json_object
from zr4.image.models.locking import FileLock

STATE_DIR = ".zr4"


@dataclass(frozen=True)
class VerifiedRecord:
    size: int
    mtime_ns: int
    sha256: str
    source: str  # repo@revision:path or URL it was fetched from
    commit: str | None = None


def state_dir(models_root: Path) -> Path:
    return models_root / STATE_DIR


class Journal:
    """Read once at start; updates are merged into the file under a lock (other processes write too)."""

    def __init__(self, models_root: Path) -> None:
        self.path = state_dir(models_root) / "verified.json"
        self._lock_path = state_dir(models_root) / "verified.lock"
        self.files: dict[str, VerifiedRecord] = {}
        self.choices: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        data = self._read()
        self.files = {}
        for rel, raw in (data.get("files") or {}).items():
            with contextlib.suppress(TypeError, KeyError):
                self.files[rel] = VerifiedRecord(**raw)
        self.choices = {str(k): str(v) for k, v in (data.get("choices") or {}).items()}

    def _read(self) -> dict[str, Any]:
        return read_json_object(self.path) or {}

    def is_verified(
        self, models_root: Path, rel: str, source: str, sha256: str | None
    ) -> VerifiedRecord | None:
        """The record if ``rel`` is on disk unchanged since it was verified from ``source``."""
        record = self.files.get(rel)
        if record is None or record.source != source or (sha256 is not None and record.sha256 != sha256):
            return None
        try:
            stat = os.stat(models_root / rel)
        except OSError:
            return None
        if stat.st_size != record.size or stat.st_mtime_ns != record.mtime_ns:
            return None
        return record

    def record(
        self, models_root: Path, rel: str, sha256: str, source: str, commit: str | None
    ) -> VerifiedRecord:
        stat = os.stat(models_root / rel)
        record = VerifiedRecord(stat.st_size, stat.st_mtime_ns, sha256, source, commit)
        self._update(files={rel: record})
        return record

    def remember_choice(self, key: str, value: str) -> None:
        self._update(choices={key: value})

    def forget(self, rel: str) -> None:
        self._update(drop=rel)

    def _update(
        self,
        files: dict[str, VerifiedRecord] | None = None,
        choices: dict[str, str] | None = None,
        drop: str | None = None,
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self._lock_path):
            data = self._read()
            stored_files = dict(data.get("files") or {})
            stored_choices = dict(data.get("choices") or {})
            for rel, record in (files or {}).items():
                stored_files[rel] = asdict(record)
            if drop is not None:
                stored_files.pop(drop, None)
            stored_choices.update(choices or {})
            document = {"version": 1, "files": stored_files, "choices": stored_choices}
            write_text_atomically(self.path, json.dumps(document, indent=1, sort_keys=True), mode=None)
        self.reload()
