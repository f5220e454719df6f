"""Root's only job at container start: make zr4's own folders on the volume and hand them to the image user.

RunPod mounts its volume at ``/workspace`` owned by root, and a template cannot choose the container's
user, so the image starts as root (no ``USER``). ``start.sh`` runs this module as root, then drops to
the unprivileged user with ``setpriv`` for everything else, ComfyUI included. Only zr4's folders are
touched (models, outputs, the sync state, the auth token's folder), never the rest of the volume; entries already owned by the
user are left alone, and symbolic links are not followed.

Standard library only: it runs before anything else, from zr4's venv.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from zr4.core import image_layout


def zr4_folders(env: Mapping[str, str]) -> list[Path]:
    """The folders zr4 writes on the volume, from the same variables the runtime reads."""
    return [
        Path(env.get("MODELS_DIR") or image_layout.MODELS_DIR),
        Path(env.get("OUTPUT_DIR") or image_layout.OUTPUT_DIR),
        Path(env.get("R2_SYNC_STATE_DIR") or image_layout.SYNC_STATE_DIR),
        Path(env.get("ZR4_AUTH_DIR") or image_layout.AUTH_DIR),
    ]


def _make(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns every folder it created (top first), so each can be handed over too."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _tree(folder: Path) -> Iterator[Path]:
    yield folder
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            yield Path(root, name)


def prepare(env: Mapping[str, str], uid: int, gid: int) -> list[str]:
    """Create and chown zr4's folders; returns one line per folder for the log."""
    lines: list[str] = []
    for folder in zr4_folders(env):
        created = _make(folder)
        changed = 0
        for path in (*created, *_tree(folder)):
            status = path.lstat()
            if (status.st_uid, status.st_gid) != (uid, gid):
                os.lchown(path, uid, gid)
                changed += 1
        lines.append(f"{folder}: owned by {uid}:{gid} ({changed} entries handed over)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m zr4.image.volume_prep USER`` (as root, from start.sh)."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m zr4.image.volume_prep USER", file=sys.stderr)
        return 2
    try:
        user = pwd.getpwnam(args[0])
    except KeyError:
        print(f"[zr4 start] no user {args[0]!r} in this image (ZR4_USER)", file=sys.stderr)
        return 1
    try:
        for line in prepare(os.environ, user.pw_uid, user.pw_gid):
            print(f"[zr4 start] {line}", flush=True)
    except OSError as error:
        print(f"[zr4 start] cannot prepare {error.filename} for {args[0]}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
