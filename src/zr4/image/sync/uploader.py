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


def upload_one(
    state: FileState,
    settings: SyncSettings,
    client: Any,
    transfer_manager: Any,
    journal: Journal,
    hooks: UploadHooks,
    listing: DayListing | None = None,
) -> Outcome:
    """Bring one complete file to the bucket once. Raises boto/network errors for the caller."""
    started = time.monotonic()
    path = settings.output_dir / state.rel_path
    single_part = state.size < max(settings.part_size_bytes, MIN_PART_BYTES)
    # A large file is hashed while it uploads (its sha256 goes to the journal and metadata.json),
    # not read once more before: unless the local copy is to be deleted, which needs the sha256
    # in the object's metadata to verify against first.
    defer_hash = not single_part and not settings.delete_after_upload
    body: bytes | None = None
    sha256: str | None = None
    md5: str | None = None
    try:
        if single_part:
            # One read: the bytes hashed are the bytes sent (MD5 only to verify before a local delete:
            # a single-part ETag is the MD5 of what was stored).
            with open(path, "rb") as handle:
                body = handle.read()
            sha256 = hashlib.sha256(body).hexdigest()
            if settings.delete_after_upload:
                md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        elif not defer_hash:
            sha256, md5 = hash_file(path, with_md5=False)
    except FileNotFoundError:
        return Outcome(state.rel_path, VANISHED)
    after_hash = stat_file(settings.output_dir, state.rel_path)
    if after_hash is None:
        return Outcome(state.rel_path, VANISHED)
    if not _same(after_hash, state):
        return Outcome(state.rel_path, CHANGED)

    previous = journal.get(state.rel_path)
    day = previous.day if previous and previous.day else day_for(state.mtime_ns)
    key = previous.key if previous and previous.key else object_key(settings.prefix, day, state.rel_path)
    journal.mark_uploading(state.rel_path, state.size, state.mtime_ns, sha256, key, day)

    plain_key = key
    remote: RemoteObject | None = None
    kind = ""
    folder = day_prefix(settings.prefix, day)
    for attempt in range(4):
        if attempt == 0 and listing is not None and not listing.may_exist(folder, key):
            remote = None  # absent at listing time (see DayListing for why that is enough)
        else:
            remote = head_object(client, settings.bucket, key)
        if (
            remote is not None
            and key == plain_key
            and remote.pod_id
            and remote.pod_id != settings.pod_id
            and (sha256 is None or remote.sha256 != sha256)
        ):
            # Another pod wrote a different file under this name today (ComfyUI counters restart per pod).
            key = object_key(settings.prefix, day, pod_suffixed(state.rel_path, settings.pod_id))
            journal.mark_uploading(state.rel_path, state.size, state.mtime_ns, sha256, key, day)
            continue
        if _already_there(remote, state, sha256, settings.pod_id):
            kind = ALREADY_PRESENT
            break
        extra_args: dict[str, Any] = {
            "ContentType": content_type_for(state.rel_path),
            "Metadata": object_metadata(settings, sha256, state),
        }
        condition = {"IfNoneMatch": "*"} if remote is None else {"IfMatch": remote.etag or "*"}
        try:
            if body is not None:
                # One PutObject, straight: s3transfer's queues cost more than the request here.
                response = client.put_object(
                    Bucket=settings.bucket,
                    Key=key,
                    Body=body,
                    **extra_args,
                    **(condition if hooks.conditional else {}),
                )
                etag = str(response.get("ETag", "")).strip('"')
            else:
                try:
                    hashing = PacedHash(path) if defer_hash else None
                except FileNotFoundError:
                    return Outcome(state.rel_path, VANISHED)
                try:
                    with hooks.applied(key, condition):
                        transfer_manager.upload(
                            str(path),
                            settings.bucket,
                            key,
                            extra_args=extra_args,
                            subscribers=[hashing] if hashing is not None else None,
                        ).result()
                except BaseException:
                    if hashing is not None:
                        hashing.abandon()
                    raise
                if hashing is not None:
                    sha256 = hashing.result()
                etag = None
        except botocore.exceptions.ClientError as error:
            if hooks.conditional and _precondition_failed(error):
                continue  # someone wrote this key since our HEAD: look again
            raise
        kind = UPLOADED
        break
    if not kind:
        raise OSError(f"{key} kept changing under concurrent writers; will retry")
    if kind == UPLOADED:
        if listing is not None:
            listing.add(folder, key)
        if not _same(stat_file(settings.output_dir, state.rel_path), state):
            return Outcome(state.rel_path, CHANGED, key)
        if not settings.delete_after_upload:
            # A 200 to PutObject/CompleteMultipartUpload means stored; nothing is deleted on its word.
            remote = RemoteObject(state.size, sha256, settings.pod_id, etag)
        elif single_part and md5 is not None and etag == md5:
            remote = RemoteObject(state.size, sha256, settings.pod_id, etag)
        else:
            remote = head_object(client, settings.bucket, key)
        if remote is None or remote.size != state.size:
            held = remote.size if remote else "nothing"
            raise OSError(f"verify failed for {key}: the bucket holds {held} bytes")
    journal.mark_uploaded(state.rel_path, sha256=sha256)

    deleted = False
    verified = remote is not None and remote.size == state.size and remote.sha256 == sha256
    if (
        settings.delete_after_upload
        and verified
        and _same(stat_file(settings.output_dir, state.rel_path), state)
    ):
        try:
            os.remove(path)
            deleted = True
        except FileNotFoundError:
            deleted = True
        journal.mark_deleted(state.rel_path)
    return Outcome(state.rel_path, kind, key, state.size, time.monotonic() - started, deleted)
