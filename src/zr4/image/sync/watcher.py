"""Change notification for the output directory: Linux inotify through ctypes, else polling.

The watcher only says *which paths may have changed*; completeness is decided by the scanner from
a fresh ``stat``. Events can be lost (queue overflow, a folder created before its watch was added),
so the daemon also rescans the whole tree now and then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import time
from pathlib import Path

# Constants from <sys/inotify.h> (Linux man-pages inotify(7)).
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_WATCH_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_CREATE
    | IN_ATTRIB
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class Changes:
    """What one wait returned: paths (relative, POSIX) that changed, or a request for a full rescan."""

    def __init__(self, paths: set[str] | None = None, rescan: bool = False) -> None:
        self.paths = paths or set()
        self.rescan = rescan


class PollingWatcher:
    """No events: every wait ends in a rescan request after ``timeout``."""

    kind = "polling"

    def __init__(self, root: Path) -> None:
        self.root = root

    def wait(self, timeout: float) -> Changes:
        time.sleep(max(0.0, timeout))
        return Changes(rescan=True)

    def close(self) -> None:
        pass


class InotifyWatcher:
    """Recursive inotify watch of ``root``; raises OSError when inotify is unavailable."""

    kind = "inotify"

    def __init__(self, root: Path) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux-only")
        libc_name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(libc_name, use_errno=True)
        self._libc.inotify_init1.argtypes = [ctypes.c_int]
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self._fd = fd
        self.root = root
        self._dirs: dict[int, Path] = {}
        self._add_tree(root)

    def _add_watch(self, folder: Path) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:  # fs.inotify.max_user_watches reached
                raise OSError(err, "inotify watch limit reached (fs.inotify.max_user_watches)")
            return False
        self._dirs[wd] = folder
        return True

    def _add_tree(self, folder: Path) -> None:
        if not self._add_watch(folder):
            if folder == self.root:
                raise OSError(errno.ENOENT, f"cannot watch {folder}")
            return
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                self._add_tree(Path(entry.path))

    def wait(self, timeout: float) -> Changes:
        try:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        except InterruptedError:
            return Changes()
        if not ready:
            return Changes()
        changes = Changes()
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            if not data:
                break
            self._parse(data, changes)
        return changes

    def _parse(self, data: bytes, changes: Changes) -> None:
        offset = 0
        while offset + _EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            raw_name = data[offset + _EVENT_HEADER.size : offset + _EVENT_HEADER.size + length]
            offset += _EVENT_HEADER.size + length
            name = os.fsdecode(raw_name.rstrip(b"\0"))
            if mask & IN_Q_OVERFLOW:
                changes.rescan = True
                continue
            folder = self._dirs.get(wd)
            if mask & IN_IGNORED:
                self._dirs.pop(wd, None)
                continue
            if folder is None or not name:
                continue
            path = folder / name
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO) and not name.startswith("."):
                    # Files may land in a new folder before its watch exists: rescan to catch them.
                    self._add_tree(path)
                    changes.rescan = True
                continue
            try:
                changes.paths.add(path.relative_to(self.root).as_posix())
            except ValueError:
                continue

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_watcher(root: Path, prefer_inotify: bool = True) -> InotifyWatcher | PollingWatcher:
    """inotify where it works, else polling (also when the watch limit is reached)."""
    if prefer_inotify:
        try:
            return InotifyWatcher(root)
        except OSError:
            pass
    return PollingWatcher(root)
