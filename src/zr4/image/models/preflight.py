"""Disk preflight: refuse to start a download that cannot fit."""

from __future__ import annotations

import os
from pathlib import Path

from zr4.core.model_files.errors import DiskSpaceError
from zr4.core.sizes import human_bytes

GIB = 1 << 30
# Headroom kept free beyond the bytes to fetch: ComfyUI writes outputs and temp files to the volume.
DEFAULT_MARGIN_BYTES = 2 * GIB


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def check_disk(needed_bytes: int, free: int, where: Path, margin_bytes: int = DEFAULT_MARGIN_BYTES) -> None:
    """Raise DiskSpaceError unless ``free >= needed + margin`` (pure: numbers in, decision out)."""
    if needed_bytes <= 0:
        return
    required = needed_bytes + margin_bytes
    if free < required:
        raise DiskSpaceError(
            f"not enough disk space in {where}: {human_bytes(needed_bytes)} still to download + "
            f"{human_bytes(margin_bytes)} margin = {human_bytes(required)} needed, {human_bytes(free)} free; "
            "free space, use a larger volume, or set MODELS_DIR to a bigger disk",
            needed_bytes=required,
            free_bytes=free,
        )
