"""The durable record of every output file's sync state (SQLite on the persistent volume).

Each state change is one committed transaction, so a kill -9 at any instant leaves the journal at
the last completed step (WAL with ``synchronous=NORMAL`` is durable across a process crash; a power
loss may roll back the newest steps, which only costs a re-check against the bucket). The steps are
ordered so that replaying any of them is harmless: ``uploading`` is written before the upload
starts (a restart then checks the bucket before sending again), ``uploaded`` after the object is
verified, ``indexed`` after the day's metadata fragment lists it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PENDING = "pending"
UPLOADING = "uploading"
UPLOADED = "uploaded"
DELETED = "deleted"  # uploaded, verified, then removed locally (R2_DELETE_AFTER_UPLOAD)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    rel_path    TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      TEXT,
    key         TEXT,
    day         TEXT,
    state       TEXT NOT NULL,
    indexed     INTEGER NOT NULL DEFAULT 0,
    uploaded_at REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try    REAL NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS files_unindexed ON files (indexed, state);
CREATE INDEX IF NOT EXISTS files_day ON files (day);
"""


def _db_path(rel_path: str) -> str | bytes:
    """SQLite text must be UTF-8: a name that is not (lone surrogates, PEP 383) is stored as its bytes."""
    try:
        rel_path.encode("utf-8")
        return rel_path
    except UnicodeEncodeError:
        return os.fsencode(rel_path)


def _from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


@dataclass(frozen=True)
class FileRecord:
    rel_path: str
    size: int
    mtime_ns: int
    sha256: str | None
    key: str | None
    day: str | None
    state: str
    indexed: bool
    uploaded_at: float | None
    attempts: int
    next_try: float
    last_error: str | None

    @property
    def done(self) -> bool:
        return self.state in (UPLOADED, DELETED)


class Journal:
    """Thread-safe; one connection, every write committed before the call returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[FileRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT rel_path, size, mtime_ns, sha256, key, day, state, indexed, uploaded_at, attempts,"
                " next_try, last_error FROM files " + sql,
                args,
            ).fetchall()
        return [
            FileRecord(
                _from_db(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10], r[11]
            )
            for r in rows
        ]

    def get(self, rel_path: str) -> FileRecord | None:
        rows = self._rows("WHERE rel_path = ?", (_db_path(rel_path),))
        return rows[0] if rows else None

    def all(self) -> dict[str, FileRecord]:
        return {r.rel_path: r for r in self._rows("")}

    def unindexed(self) -> list[FileRecord]:
        return self._rows("WHERE indexed = 0 AND state IN (?, ?) ORDER BY key", (UPLOADED, DELETED))

    def day_records(self, day: str) -> list[FileRecord]:
        return self._rows("WHERE day = ? AND state IN (?, ?) ORDER BY key", (day, UPLOADED, DELETED))

    def mark_uploading(
        self, rel_path: str, size: int, mtime_ns: int, sha256: str | None, key: str, day: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (rel_path, size, mtime_ns, sha256, key, day, state, indexed)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT(rel_path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns,"
                " sha256=excluded.sha256, key=excluded.key, day=excluded.day, state=excluded.state,"
                " indexed=0",
                (_db_path(rel_path), size, mtime_ns, sha256, key, day, UPLOADING),
            )

    def mark_uploaded(
        self, rel_path: str, uploaded_at: float | None = None, sha256: str | None = None
    ) -> None:
        """``sha256``: when it was computed during the upload (large files), it is recorded now."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state = ?, uploaded_at = ?, attempts = 0, next_try = 0, last_error = NULL,"
                " sha256 = COALESCE(?, sha256) WHERE rel_path = ?",
                (
                    UPLOADED,
                    uploaded_at if uploaded_at is not None else time.time(),
                    sha256,
                    _db_path(rel_path),
                ),
            )

    def mark_failed(self, rel_path: str, size: int, mtime_ns: int, error: str, next_try: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (rel_path, size, mtime_ns, state, attempts, next_try, last_error)"
                " VALUES (?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT(rel_path) DO UPDATE SET attempts = attempts + 1, next_try = excluded.next_try,"
                " last_error = excluded.last_error,"
                " state = CASE WHEN state IN (?, ?) THEN state ELSE ? END",
                (_db_path(rel_path), size, mtime_ns, PENDING, next_try, error, UPLOADED, DELETED, PENDING),
            )

    def mark_indexed(self, rel_paths: list[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE files SET indexed = 1 WHERE rel_path = ?", [(_db_path(p),) for p in rel_paths]
            )

    def mark_deleted(self, rel_path: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE files SET state = ? WHERE rel_path = ?", (DELETED, _db_path(rel_path)))
