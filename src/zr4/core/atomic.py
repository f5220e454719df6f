"""Writing a small text file so that a reader sees either the old or the new content, never half.

ComfyUI, a second container on the same volume, or git may read these files at any moment; the
content goes to a hidden temporary sibling (``.<name>.<8 hex digits>``) that is renamed over the
target. Every text file zr4 replaces in place goes through here: the boot's workflows and paths,
the auth token, the model downloads' sidecars and journal, the sync heartbeat, the stack locks.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_SUFFIX_HEX = 8
_ATTEMPTS = 100


def write_text_atomically(path: Path, text: str, mode: int | None = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename.

    ``mode`` is the file's permission bits; None gives what ``open()`` gives a new file (0o666 less
    the umask), for files whose readers are the user's own tools. ``durable`` fsyncs before the
    rename, so a power loss leaves the old or the new content; a file rewritten every few seconds
    whose loss costs nothing (the sync heartbeat) skips it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def leftover_temporaries(path: Path) -> list[Path]:
    """The temporaries of ``path`` a killed writer left behind (only names this module makes)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{{_SUFFIX_HEX}}}")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / name for name in names if pattern.fullmatch(name))


def _create_temporary(path: Path, permissions: int) -> tuple[int, Path]:
    """A new, exclusively created sibling of ``path``; ``permissions`` pass through the umask."""
    for _ in range(_ATTEMPTS):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(_SUFFIX_HEX // 2)}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(candidate, flags, permissions), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {_ATTEMPTS} tries")
