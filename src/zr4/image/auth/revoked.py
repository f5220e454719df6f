"""Sessions ended by a logout, kept on the volume until they would have expired anyway.

A session cookie is signed, not looked up, so a logout can end it only by remembering its id. The
ids live in ``$ZR4_AUTH_DIR/revoked-sessions`` (one ``<id> <expiry unix time>`` per line, file 0600
in the 0700 folder), rewritten whole on each logout with the expired ones left out, and read when
the proxy starts, so a restart (the supervisor's, or the pod's) does not bring a session back.
Only a valid session can be revoked, so only someone who once had the token adds lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from zr4.core.atomic import write_text_atomically
from zr4.core.auth_settings import private_dir

FILE_NAME = "revoked-sessions"
_LINE = re.compile(r"([A-Za-z0-9_-]{1,64}) ([0-9]{1,12})", re.ASCII)


class RevokedSessions:
    """Revoked session ids and when each would have expired; ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._until: dict[str, int] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as error:
            raise OSError(error.errno, f"cannot read {path}: {error.strerror}") from None
        now = self._clock()
        for line in text.splitlines():
            match = _LINE.fullmatch(line.strip())
            if match is not None and int(match[2]) > now:
                self._until[match[1]] = int(match[2])

    def __contains__(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)

    def revoke(self, session_id: str, until: int) -> None:
        """Remember ``session_id`` until ``until``; raises OSError if the file cannot be written
        (the session stays revoked in memory, until the proxy restarts)."""
        now = self._clock()
        self._until = {sid: end for sid, end in self._until.items() if end > now}
        self._until[session_id] = until
        if self.path is None:
            return
        private_dir(self.path.parent)
        lines = "".join(f"{sid} {end}\n" for sid, end in sorted(self._until.items(), key=lambda kv: kv[1]))
        write_text_atomically(self.path, lines, mode=0o600)
