"""Upload one complete file, idempotently: a journal step before, a bucket check, a verify after.

Order of one upload (each journal write is committed before the next step):
hash → journal ``uploading`` → HEAD (same size + sha256 there already: done) → s3transfer upload →
verify (single part: the ETag is the MD5 we computed; multipart: HEAD) → journal ``uploaded`` →
optional local delete → journal ``deleted``.
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

from zr4.runtime.sync.journal import Journal
from zr4.runtime.sync.scanner import (
    FileState,
    content_type_for,
    day_for,
    day_prefix,
    object_key,
    pod_suffixed,
    stat_file,
)
from zr4.runtime.sync.settings import MIN_PART_BYTES, SyncSettings

_READ_BYTES = 8 * 1024 * 1024

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


class UploadHooks:
    """Per-client request hooks for uploads.

    * Conditions: ``If-None-Match``/``If-Match`` on the request that creates the object.
      s3transfer does not pass them through (``ALLOWED_UPLOAD_ARGS`` in s3transfer/manager.py), so
      they are added to PutObject / CompleteMultipartUpload in botocore's ``before-parameter-build``
      hook, per key; only where the server honours them (R2 does, rclone serve s3 does not).
    * The ETag a PutObject answered, per key: for a single-part upload it is the content's MD5
      (S3, R2), which verifies the upload without another request.
    """

    def __init__(self, client: Any) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, dict[str, str]] = {}
        self._etags: dict[str, str] = {}
        self.conditional = False
        for operation in ("PutObject", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-parameter-build.s3.{operation}", self._inject)
        client.meta.events.register("after-call.s3.PutObject", self._record_etag)

    def _inject(self, params: dict[str, Any], context: dict[str, Any] | None = None, **_: Any) -> None:
        key = params.get("Key", "")
        if context is not None:
            context["zr4_key"] = key
        with self._lock:
            condition = self._conditions.get(key)
        if condition:
            params.update(condition)

    def _record_etag(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        key = context.get("zr4_key")
        etag = parsed.get("ETag") if isinstance(parsed, dict) else None
        if key and etag:
            with self._lock:
                self._etags[key] = str(etag).strip('"')

    @contextlib.contextmanager
    def applied(self, key: str, condition: dict[str, str]) -> Iterator[None]:
        with self._lock:
            self._etags.pop(key, None)
            if self.conditional:
                self._conditions[key] = condition
        try:
            yield
        finally:
            with self._lock:
                self._conditions.pop(key, None)

    def take_etag(self, key: str) -> str | None:
        with self._lock:
            return self._etags.pop(key, None)


class DayListing:
    """Keys under ``<prefix>/<day>/``, listed once per day and kept current with our own uploads.

    Where conditional writes work, a key absent from the listing is uploaded with
    ``If-None-Match: *`` and no HEAD first: a concurrent writer makes it fail with 412, then we look.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._lock = threading.Lock()
        self._days: dict[str, set[str]] = {}

    def may_exist(self, day_folder: str, key: str) -> bool:
        with self._lock:
            keys = self._days.get(day_folder)
        if keys is None:
            listed: set[str] = set()
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=day_folder
            ):
                listed.update(o["Key"] for o in page.get("Contents", []))
            with self._lock:
                keys = self._days.setdefault(day_folder, listed)
        return key in keys

    def add(self, day_folder: str, key: str) -> None:
        with self._lock:
            self._days.setdefault(day_folder, set()).add(key)


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
        while chunk := handle.read(_READ_BYTES):
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
    return RemoteObject(
        int(response.get("ContentLength", -1)), meta.get("sha256"), _unquote(meta.get("pod-id"))
    )


def _quote(value: str) -> str:
    # S3 user metadata travels in HTTP headers: ASCII only.
    return urllib.parse.quote(value, safe="-_.~/:@ ")


def _unquote(value: str | None) -> str | None:
    return urllib.parse.unquote(value) if value is not None else None


def object_metadata(settings: SyncSettings, sha256: str, state: FileState) -> dict[str, str]:
    meta = {
        "sha256": sha256,
        "pod-id": _quote(settings.pod_id),
        "source-path": _quote(state.rel_path),
        "source-mtime-ns": str(state.mtime_ns),
    }
    if settings.profile_name:
        meta["profile"] = _quote(settings.profile_name)
    return meta


def _same(a: FileState | None, b: FileState) -> bool:
    return a is not None and a.size == b.size and a.mtime_ns == b.mtime_ns


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
    try:
        sha256, md5 = hash_file(path, with_md5=single_part)
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
        if attempt == 0 and hooks.conditional and listing is not None and not listing.may_exist(folder, key):
            remote = None  # not there at listing time; If-None-Match guards against newer writers
        else:
            remote = head_object(client, settings.bucket, key)
        if (
            remote is not None
            and key == plain_key
            and remote.pod_id
            and remote.pod_id != settings.pod_id
            and remote.sha256 != sha256
        ):
            # Another pod wrote a different file under this name today (ComfyUI counters restart per pod).
            key = object_key(settings.prefix, day, pod_suffixed(state.rel_path, settings.pod_id))
            journal.mark_uploading(state.rel_path, state.size, state.mtime_ns, sha256, key, day)
            continue
        if remote is not None and remote.size == state.size and remote.sha256 == sha256:
            kind = ALREADY_PRESENT
            break
        extra_args = {
            "ContentType": content_type_for(state.rel_path),
            "Metadata": object_metadata(settings, sha256, state),
        }
        condition = {"IfNoneMatch": "*"} if remote is None else {"IfMatch": remote.etag or "*"}
        try:
            with hooks.applied(key, condition):
                transfer_manager.upload(str(path), settings.bucket, key, extra_args=extra_args).result()
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
        etag = hooks.take_etag(key)
        if single_part and md5 is not None and etag == md5:
            # Single-part ETag is the MD5 of what the server stored: verified without a HEAD.
            remote = RemoteObject(state.size, sha256, settings.pod_id, etag)
        else:
            remote = head_object(client, settings.bucket, key)
        if remote is None or remote.size != state.size:
            held = remote.size if remote else "nothing"
            raise OSError(f"verify failed for {key}: the bucket holds {held} bytes")
    journal.mark_uploaded(state.rel_path)

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
