"""Upload one complete file, idempotently: a journal step before, a bucket check, then the bytes.

Order of one upload (each journal write is committed before the next step):
hash (a small file: read once, hashed and sent from memory; a large file: hashed on a thread while
s3transfer sends it, unless ``R2_DELETE_AFTER_UPLOAD`` needs its sha256 in the object's metadata
first) → journal ``uploading`` → already there? (the day folder's LIST; a HEAD for a listed key:
same size + sha256, or for a large file the same pod, path, size and mtime → done) → PutObject, or
s3transfer multipart above one part size →
journal ``uploaded`` → with ``R2_DELETE_AFTER_UPLOAD`` only: verify (single part: the returned ETag
is the MD5 we computed; multipart: HEAD shows size and sha256), local delete, journal ``deleted``.
A kill -9 anywhere repeats at most the HEAD and the transfer of that one object, to the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from zr4.image.sync.journal import Journal
from zr4.image.sync.paced_hash import READ_BYTES, PacedHash
from zr4.image.sync.scanner import (
    FileState,
    content_type_for,
    day_for,
    day_prefix,
    object_key,
    pod_suffixed,
    stat_file,
)
from zr4.image.sync.settings import MIN_PART_BYTES, SyncSettings

# Outcome kinds
UPLOADED = "uploaded"
ALREADY_PRESENT = "already_present"
CHANGED = "changed"  # the file changed while we read it: not complete after all
VANISHED = "vanished"


@dataclass(frozen=True)
class Outcome:
    rel_path: str
    kind: str
    key: str = ""
    size: int = 0
    seconds: float = 0.0
    deleted_local: bool = False


@dataclass(frozen=True)
class RemoteObject:
    size: int
    sha256: str | None
    pod_id: str | None
    etag: str | None = None
    source_path: str | None = None
    source_mtime_ns: str | None = None


class UploadHooks:
    """Adds ``If-None-Match``/``If-Match`` to the request that completes a multipart upload.

    s3transfer does not pass these through (``ALLOWED_UPLOAD_ARGS`` in s3transfer/manager.py), so
    they are added to CompleteMultipartUpload in botocore's ``before-parameter-build`` hook, per key;
    only where the server honours them (``conditional``; R2 does, rclone serve s3 does not).
    Single-part uploads are one PutObject that takes them directly.
    """

    def __init__(self, client: Any) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, dict[str, str]] = {}
        self.conditional = False
        for operation in ("PutObject", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-parameter-build.s3.{operation}", self._inject)

    def _inject(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            condition = self._conditions.get(params.get("Key", ""))
        if condition:
            params.update(condition)

    @contextlib.contextmanager
    def applied(self, key: str, condition: dict[str, str]) -> Iterator[None]:
        with self._lock:
            if self.conditional:
                self._conditions[key] = condition
        try:
            yield
        finally:
            with self._lock:
                self._conditions.pop(key, None)


class DayListing:
    """Keys under ``<prefix>/<day>/`` from one LIST, kept current with our own uploads.

    A key absent from the listing is uploaded without a HEAD first. Where conditional writes work
    the listing never expires: ``If-None-Match: *`` makes a write that raced another writer fail
    with 412, and then we look. Elsewhere it is re-listed when older than ``max_age_s``, so a
    same-named object another pod wrote is still seen (one LIST per folder and interval instead of
    one HEAD per file).
    """

    def __init__(self, client: Any, bucket: str, max_age_s: float = 10.0) -> None:
        self._client = client
        self._bucket = bucket
        self._lock = threading.Lock()
        self._days: dict[str, tuple[float, set[str]]] = {}
        self._listing: dict[str, threading.Lock] = {}
        self.max_age_s = max_age_s

    def may_exist(self, day_folder: str, key: str) -> bool:
        with self._lock:
            folder_lock = self._listing.setdefault(day_folder, threading.Lock())
        # One LIST at a time per folder: the workers that find it stale wait for it, not list again.
        with folder_lock:
            with self._lock:
                cached = self._days.get(day_folder)
            if cached is None or time.monotonic() - cached[0] > self.max_age_s:
                listed_at = time.monotonic()
                listed: set[str] = set()
                for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self._bucket, Prefix=day_folder
                ):
                    listed.update(o["Key"] for o in page.get("Contents", []))
                with self._lock:
                    self._days[day_folder] = cached = (listed_at, listed)
        return key in cached[1]

    def add(self, day_folder: str, key: str) -> None:
        with self._lock:
            if day_folder in self._days:
                self._days[day_folder][1].add(key)


def _precondition_failed(error: BaseException) -> bool:
    if not isinstance(error, botocore.exceptions.ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in (409, 412) or code in {"PreconditionFailed", "ConditionalRequestConflict"}


def hash_file(path: Path, with_md5: bool) -> tuple[str, str | None]:
    """(sha256, md5 or None) in one read."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest() if md5 is not None else None


def head_object(client: Any, bucket: str, key: str) -> RemoteObject | None:
    """The object's size and our metadata, or None when absent. Other errors propagate."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"404", "NoSuchKey", "NotFound"} and status == 404:
            return None
        raise
    # Servers differ in the case of metadata names (rclone answers "Sha256").
    meta = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
    # The ETag is what a conditional re-upload must name (If-Match): without it the write is refused.
    return RemoteObject(
        int(response.get("ContentLength", -1)),
        meta.get("sha256"),
        _unquote(meta.get("pod-id")),
        response.get("ETag"),
        _unquote(meta.get("source-path")),
        meta.get("source-mtime-ns"),
    )


def _quote(value: str) -> str:
    # S3 user metadata travels in HTTP headers: ASCII only.
    # A file name that is not UTF-8 reaches us with lone surrogates: quote its raw bytes.
    return urllib.parse.quote(value, safe="-_.~/:@ ", errors="surrogateescape")


def _unquote(value: str | None) -> str | None:
    return urllib.parse.unquote(value) if value is not None else None


def object_metadata(settings: SyncSettings, sha256: str | None, state: FileState) -> dict[str, str]:
    meta = {} if sha256 is None else {"sha256": sha256}
    meta |= {
        "pod-id": _quote(settings.pod_id),
        "source-path": _quote(state.rel_path),
        "source-mtime-ns": str(state.mtime_ns),
    }
    if settings.profile_name:
        meta["profile"] = _quote(settings.profile_name)
    return meta


def _same(a: FileState | None, b: FileState) -> bool:
    return a is not None and a.size == b.size and a.mtime_ns == b.mtime_ns


def _already_there(remote: RemoteObject | None, state: FileState, sha256: str | None, pod_id: str) -> bool:
    """The bucket holds this version of the file: same sha256, or (large file, hash not known yet)
    the object this pod uploaded from this path at this size and mtime."""
    if remote is None or remote.size != state.size:
        return False
    if sha256 is not None and remote.sha256 is not None:
        return remote.sha256 == sha256
    return (
        remote.pod_id == pod_id
        and remote.source_path == state.rel_path
        and remote.source_mtime_ns == str(state.mtime_ns)
    )


class _Stop(Exception):
    """Ends one upload early and quietly: the file vanished or changed; ``outcome`` says which."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.kind)
        self.outcome = outcome


@dataclass(frozen=True)
class UploadContext:
    """What every upload of one sync run shares: the settings, the S3 client and s3transfer's
    manager, the journal, the conditional-write hooks and (in a run that lists) the day listings."""

    settings: SyncSettings
    client: Any
    transfer_manager: Any
    journal: Journal
    hooks: UploadHooks
    listing: DayListing | None = None


class _Upload:
    """One file on its way to the bucket; the steps are methods, in the module docstring's order."""

    def __init__(self, state: FileState, sync: UploadContext) -> None:
        settings = sync.settings
        self.state = state
        self.sync = sync
        self.settings = settings
        self.path = settings.output_dir / state.rel_path
        self.single_part = state.size < max(settings.part_size_bytes, MIN_PART_BYTES)
        # A large file is hashed while it uploads (its sha256 goes to the journal and metadata.json),
        # not read once more before: unless the local copy is to be deleted, which needs the sha256
        # in the object's metadata to verify against first.
        self.defer_hash = not self.single_part and not settings.delete_after_upload
        self.body: bytes | None = None  # a single part: the bytes hashed are the bytes sent
        self.sha256: str | None = None
        self.md5: str | None = None
        self.day = ""
        self.folder = ""
        self.key = ""
        self.etag: str | None = None  # what a single-part PutObject answered

    def _stop(self, kind: str, key: str = "") -> _Stop:
        return _Stop(Outcome(self.state.rel_path, kind, key))

    def _unchanged(self) -> bool:
        return _same(stat_file(self.settings.output_dir, self.state.rel_path), self.state)

    def hash(self) -> None:
        """sha256 (and MD5 to verify before a local delete) unless deferred to the transfer; the
        file must still be the one scanned afterwards."""
        try:
            if self.single_part:
                # One read: a single-part ETag is the MD5 of what was stored.
                with open(self.path, "rb") as handle:
                    self.body = handle.read()
                self.sha256 = hashlib.sha256(self.body).hexdigest()
                if self.settings.delete_after_upload:
                    self.md5 = hashlib.md5(self.body, usedforsecurity=False).hexdigest()
            elif not self.defer_hash:
                self.sha256, self.md5 = hash_file(self.path, with_md5=False)
        except FileNotFoundError:
            raise self._stop(VANISHED) from None
        after_hash = stat_file(self.settings.output_dir, self.state.rel_path)
        if after_hash is None:
            raise self._stop(VANISHED)
        if not _same(after_hash, self.state):
            raise self._stop(CHANGED)

    def choose_key(self) -> None:
        """The key an interrupted upload of this file chose, else today's; journal ``uploading``."""
        previous = self.sync.journal.get(self.state.rel_path)
        self.day = previous.day if previous and previous.day else day_for(self.state.mtime_ns)
        self.folder = day_prefix(self.settings.prefix, self.day)
        self.key = (
            previous.key
            if previous and previous.key
            else object_key(self.settings.prefix, self.day, self.state.rel_path)
        )
        self._mark_uploading()

    def _mark_uploading(self) -> None:
        state = self.state
        self.sync.journal.mark_uploading(
            state.rel_path, state.size, state.mtime_ns, self.sha256, self.key, self.day
        )

    def put(self) -> tuple[str, RemoteObject | None]:
        """Send the file unless the bucket holds this version already: (kind, what the bucket held).

        A key another pod wrote a different file under today gets this pod's suffix; a write that
        a concurrent writer beat (412 where conditional writes work) looks again."""
        plain_key = self.key
        for attempt in range(4):
            if (
                attempt == 0
                and self.sync.listing is not None
                and not self.sync.listing.may_exist(self.folder, self.key)
            ):
                remote = None  # absent at listing time (see DayListing for why that is enough)
            else:
                remote = head_object(self.sync.client, self.settings.bucket, self.key)
            if (
                remote is not None
                and self.key == plain_key
                and remote.pod_id
                and remote.pod_id != self.settings.pod_id
                and (self.sha256 is None or remote.sha256 != self.sha256)
            ):
                # Another pod wrote a different file under this name today (ComfyUI counters restart per pod).
                suffixed = pod_suffixed(self.state.rel_path, self.settings.pod_id)
                self.key = object_key(self.settings.prefix, self.day, suffixed)
                self._mark_uploading()
                continue
            if _already_there(remote, self.state, self.sha256, self.settings.pod_id):
                return ALREADY_PRESENT, remote
            condition = {"IfNoneMatch": "*"} if remote is None else {"IfMatch": remote.etag or "*"}
            try:
                self._send(condition)
            except botocore.exceptions.ClientError as error:
                if self.sync.hooks.conditional and _precondition_failed(error):
                    continue  # someone wrote this key since our HEAD: look again
                raise
            return UPLOADED, remote
        raise OSError(f"{self.key} kept changing under concurrent writers; will retry")

    def _send(self, condition: dict[str, str]) -> None:
        """One PutObject (a single part) or s3transfer's multipart upload, hashing as it reads."""
        extra_args: dict[str, Any] = {
            "ContentType": content_type_for(self.state.rel_path),
            "Metadata": object_metadata(self.settings, self.sha256, self.state),
        }
        if self.body is not None:
            # One PutObject, straight: s3transfer's queues cost more than the request here.
            response = self.sync.client.put_object(
                Bucket=self.settings.bucket,
                Key=self.key,
                Body=self.body,
                **extra_args,
                **(condition if self.sync.hooks.conditional else {}),
            )
            self.etag = str(response.get("ETag", "")).strip('"')
            return
        try:
            hashing = PacedHash(self.path) if self.defer_hash else None
        except FileNotFoundError:
            raise self._stop(VANISHED) from None
        try:
            with self.sync.hooks.applied(self.key, condition):
                self.sync.transfer_manager.upload(
                    str(self.path),
                    self.settings.bucket,
                    self.key,
                    extra_args=extra_args,
                    subscribers=[hashing] if hashing is not None else None,
                ).result()
        except BaseException:
            if hashing is not None:
                hashing.abandon()
            raise
        if hashing is not None:
            self.sha256 = hashing.result()
        self.etag = None

    def verify(self) -> RemoteObject:
        """What the bucket holds after the upload, checked for size: the 200's word unless the local
        copy is to be deleted (then the single part's ETag as MD5, or a HEAD)."""
        if self.sync.listing is not None:
            self.sync.listing.add(self.folder, self.key)
        if not self._unchanged():
            raise self._stop(CHANGED, self.key)
        state, pod_id = self.state, self.settings.pod_id
        remote: RemoteObject | None
        if not self.settings.delete_after_upload:
            # A 200 to PutObject/CompleteMultipartUpload means stored; nothing is deleted on its word.
            remote = RemoteObject(state.size, self.sha256, pod_id, self.etag)
        elif self.single_part and self.md5 is not None and self.etag == self.md5:
            remote = RemoteObject(state.size, self.sha256, pod_id, self.etag)
        else:
            remote = head_object(self.sync.client, self.settings.bucket, self.key)
        if remote is None or remote.size != state.size:
            held = remote.size if remote else "nothing"
            raise OSError(f"verify failed for {self.key}: the bucket holds {held} bytes")
        return remote

    def delete_local(self, remote: RemoteObject | None) -> bool:
        """With ``R2_DELETE_AFTER_UPLOAD``: remove the file the bucket verifiably holds, unchanged."""
        verified = remote is not None and remote.size == self.state.size and remote.sha256 == self.sha256
        if not (self.settings.delete_after_upload and verified and self._unchanged()):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        self.sync.journal.mark_deleted(self.state.rel_path)
        return True


def upload_one(state: FileState, sync: UploadContext) -> Outcome:
    """Bring one complete file to the bucket once. Raises boto/network errors for the caller."""
    started = time.monotonic()
    upload = _Upload(state, sync)
    try:
        upload.hash()
        upload.choose_key()
        kind, remote = upload.put()
        if kind == UPLOADED:
            remote = upload.verify()
    except _Stop as stop:
        return stop.outcome
    sync.journal.mark_uploaded(state.rel_path, sha256=upload.sha256)
    deleted = upload.delete_local(remote)
    return Outcome(state.rel_path, kind, upload.key, state.size, time.monotonic() - started, deleted)
