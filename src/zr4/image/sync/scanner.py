"""Which files in the output directory are ready to upload, and under which key (pure + one walk)."""

from __future__ import annotations

import datetime as dt
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Names writers use while a file is incomplete: browser/rsync/ffmpeg-style temporaries, editor swap
# files, our own downloader's ".partial" (STYLE.md: downloads are published as .partial, then moved).
_TEMP_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".download",
    ".incomplete",
    ".swp",
    ".swx",
    ".lock",
    "~",
)
_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".gif": "image/gif",
    ".png": "image/png",
    ".json": "application/json",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".wav": "audio/wav",
}


@dataclass(frozen=True)
class FileState:
    """What ``stat`` says about one file under the output directory."""

    rel_path: str  # POSIX-style, relative to the output directory
    size: int
    mtime_ns: int


def is_temporary(rel_path: str) -> bool:
    """True for hidden files/dirs and names that mark a file still being written."""
    parts = PurePosixPath(rel_path).parts
    if any(part.startswith(".") for part in parts):
        return True
    name = parts[-1].lower() if parts else ""
    return name.endswith(_TEMP_SUFFIXES) or ".tmp." in name or name.startswith("~$")


def content_type_for(rel_path: str) -> str:
    suffix = PurePosixPath(rel_path).suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(rel_path)
    return guessed or "application/octet-stream"


def day_for(mtime_ns: int) -> str:
    """UTC day of the file's last write: stable across restarts, so a file always maps to one key."""
    return dt.datetime.fromtimestamp(mtime_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d")


def day_prefix(prefix: str, day: str) -> str:
    return f"{prefix.strip('/')}/{day}/" if prefix.strip("/") else f"{day}/"


# Names zr4 itself writes at the top of a day folder (metadata_index: ``metadata.json`` and
# ``metadata.d/<pod>.json``). A user output of the same name gets one more leading underscore,
# as does every name of the form ``_*metadata.json`` / ``_*metadata.d``: the mapping stays one to one.
_RESERVED_TOP = re.compile(r"_*metadata\.(?:json|d)")


def printable_path(rel_path: str) -> str:
    """``rel_path`` as valid UTF-8: bytes of a name that is not UTF-8 become ``%XX``.

    ``os.scandir`` hands such bytes over as lone surrogates (PEP 383), which neither S3 keys,
    HTTP headers nor SQLite text can carry.
    """
    try:
        rel_path.encode("utf-8")
        return rel_path
    except UnicodeEncodeError:
        pass
    return "".join(f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch for ch in rel_path)


def key_path(rel_path: str) -> str:
    """The part of the object key below the day folder for the output ``rel_path``."""
    first, sep, rest = printable_path(rel_path).partition("/")
    if _RESERVED_TOP.fullmatch(first):
        first = "_" + first
    return first + sep + rest


def object_key(prefix: str, day: str, rel_path: str) -> str:
    """``<prefix>/YYYY-MM-DD/<relative path>`` (see :func:`key_path` for the two exceptions)."""
    return day_prefix(prefix, day) + key_path(rel_path)


def pod_suffixed(rel_path: str, pod_id: str) -> str:
    """``a/b.mp4`` → ``a/b.<pod>.mp4``: where another pod already owns the plain key."""
    path = PurePosixPath(rel_path)
    safe_pod = "".join(c if c.isalnum() or c in "-_" else "-" for c in pod_id) or "pod"
    return str(path.with_name(f"{path.stem}.{safe_pod}{path.suffix}"))


def is_complete(state: FileState, now_ns: int, stable_seconds: float) -> bool:
    """Size and mtime unchanged for ``stable_seconds``: every write moves mtime, so its age says so."""
    return now_ns - state.mtime_ns >= int(stable_seconds * 1e9)


def stat_file(root: Path, rel_path: str) -> FileState | None:
    """Fresh ``stat`` of one regular file (not a symlink), or None when it is gone."""
    try:
        st = os.stat(root / rel_path, follow_symlinks=False)
    except OSError:
        return None
    if not _is_regular(st.st_mode):
        return None
    return FileState(rel_path, st.st_size, st.st_mtime_ns)


def _is_regular(mode: int) -> bool:
    import stat as stat_mod

    return stat_mod.S_ISREG(mode)


def scan(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, FileState]:
    """Every non-temporary regular file under ``root`` (symlinks and hidden folders skipped)."""
    found: dict[str, FileState] = {}
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if os.path.realpath(entry.path) not in excluded:
                        stack.append(Path(entry.path))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = Path(entry.path).relative_to(root).as_posix()
            if is_temporary(rel):
                continue
            found[rel] = FileState(rel, st.st_size, st.st_mtime_ns)
    return found
