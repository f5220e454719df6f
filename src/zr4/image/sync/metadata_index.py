"""``<prefix>/YYYY-MM-DD/metadata.json``: the day's objects, safe with several pods writing.

Measured on the test servers (`zr4 sync test` against each: tests/image/test_sync_cli.py): ``rclone serve s3`` (v1.75)
ignores ``If-Match``/``If-None-Match`` on PutObject and overwrites; moto honours them (412), and so
does R2 (developers.cloudflare.com/r2/api/s3/conditional-operations/). So the source of truth is a
per-pod fragment, ``<day>/metadata.d/<pod>.json``, that only its own pod writes: no race can lose
an entry there. ``metadata.json`` is the merge of all fragments, rebuilt after each change:

* where the server honours conditional writes: read (ETag) → merge → PutObject with ``If-Match``
  (``If-None-Match: *`` when absent) → on 412/409 start again;
* elsewhere: write the merge, then read back the fragments and the file; if another pod's
  concurrent write dropped an entry, write again. The last writer always checks after its write,
  so the file converges to the union.

:func:`read_day_index` merges on read, so readers see every entry even mid-race.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

import botocore.exceptions

from zr4.image.sync.journal import FileRecord
from zr4.image.sync.scanner import day_prefix, printable_path
from zr4.image.sync.settings import SyncSettings

INDEX_NAME = "metadata.json"
FRAGMENT_DIR = "metadata.d"
_ATTEMPTS = 8

Entry = dict[str, Any]


def iso_utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_for(record: FileRecord, settings: SyncSettings) -> Entry:
    entry: Entry = {
        "key": record.key,
        "size": record.size,
        "sha256": record.sha256,
        "time": iso_utc(record.uploaded_at or time.time()),
        "pod": settings.pod_id,
        "source": printable_path(record.rel_path),
    }
    if settings.profile_name:
        entry["profile"] = settings.profile_name
    return entry


def merge_entries(*groups: Iterable[Entry]) -> list[Entry]:
    """Union by key; for one key the newest ``time`` wins. Sorted by key."""
    merged: dict[str, Entry] = {}
    for group in groups:
        for entry in group:
            key = entry.get("key")
            if not isinstance(key, str):
                continue
            current = merged.get(key)
            if current is None or str(entry.get("time", "")) >= str(current.get("time", "")):
                merged[key] = entry
    return [merged[k] for k in sorted(merged)]


def _safe_pod(pod_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in pod_id) or "pod"


def index_key(prefix: str, day: str) -> str:
    return day_prefix(prefix, day) + INDEX_NAME


def fragment_key(prefix: str, day: str, pod_id: str) -> str:
    return f"{day_prefix(prefix, day)}{FRAGMENT_DIR}/{_safe_pod(pod_id)}.json"


def _document(day: str, entries: list[Entry], pod: str | None = None) -> bytes:
    body: dict[str, Any] = {"day": day, "updated": iso_utc(time.time())}
    if pod is not None:
        body["pod"] = pod
    body["objects"] = entries
    return (json.dumps(body, indent=1, sort_keys=False) + "\n").encode()


def _code(error: botocore.exceptions.ClientError) -> tuple[str, int | None]:
    return (
        str(error.response.get("Error", {}).get("Code", "")),
        error.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
    )


def _get_json(client: Any, bucket: str, key: str) -> tuple[list[Entry], str | None]:
    """(objects, ETag) of a JSON document, ([], None) when absent; a damaged document reads as empty."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as error:
        code, status = _code(error)
        if status == 404 or code in {"NoSuchKey", "404"}:
            return [], None
        raise
    raw = response["Body"].read()
    try:
        objects = json.loads(raw).get("objects", [])
    except (ValueError, AttributeError):
        objects = []
    return [o for o in objects if isinstance(o, dict)], response.get("ETag")


def _fragment_keys(client: Any, bucket: str, prefix: str, day: str) -> list[str]:
    folder = f"{day_prefix(prefix, day)}{FRAGMENT_DIR}/"
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=folder):
        keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
    return keys


def _all_fragments(client: Any, bucket: str, prefix: str, day: str) -> list[Entry]:
    entries: list[Entry] = []
    for key in _fragment_keys(client, bucket, prefix, day):
        objects, _ = _get_json(client, bucket, key)
        entries.extend(objects)
    return entries


def read_day_index(client: Any, settings: SyncSettings, day: str) -> list[Entry]:
    """Every entry of the day: ``metadata.json`` merged with all pods' fragments."""
    merged, _ = _get_json(client, settings.bucket, index_key(settings.prefix, day))
    return merge_entries(merged, _all_fragments(client, settings.bucket, settings.prefix, day))


def supports_conditional_writes(client: Any, bucket: str, prefix: str, pod_id: str) -> bool:
    """Whether the server refuses ``If-None-Match: *`` on an existing key (R2, AWS, moto do)."""
    probe = f"{prefix.strip('/')}/.zr4-probe/cond-{_safe_pod(pod_id)}-{uuid.uuid4().hex[:8]}"
    client.put_object(Bucket=bucket, Key=probe, Body=b"1")
    try:
        client.put_object(Bucket=bucket, Key=probe, Body=b"2", IfNoneMatch="*")
        supported = False
    except botocore.exceptions.ClientError as error:
        code, status = _code(error)
        if status in (412, 409) or code in {"PreconditionFailed", "ConditionalRequestConflict"}:
            supported = True
        else:
            raise
    finally:
        with contextlib.suppress(Exception):  # never hide the error that brought us here
            client.delete_object(Bucket=bucket, Key=probe)
    return supported


class MetadataIndex:
    """Writes this pod's fragments and republishes each touched day's ``metadata.json``."""

    def __init__(self, client: Any, settings: SyncSettings, conditional: bool | None = None) -> None:
        self.client = client
        self.settings = settings
        self._conditional = conditional
        self._fragments: dict[str, list[Entry]] = {}

    @property
    def conditional(self) -> bool:
        if self._conditional is None:
            self._conditional = supports_conditional_writes(
                self.client, self.settings.bucket, self.settings.prefix, self.settings.pod_id
            )
        return self._conditional

    def update_day(self, day: str, own_entries: list[Entry]) -> None:
        """Add ``own_entries`` to this pod's fragment (kept entries from earlier runs) and republish."""
        bucket, prefix = self.settings.bucket, self.settings.prefix
        key = fragment_key(prefix, day, self.settings.pod_id)
        if day not in self._fragments:
            self._fragments[day], _ = _get_json(self.client, bucket, key)
        fragment = merge_entries(self._fragments[day], own_entries)
        if fragment != self._fragments[day] or not own_entries:
            self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=_document(day, fragment, self.settings.pod_id),
                ContentType="application/json",
            )
            self._fragments[day] = fragment
        self.publish(day)

    def publish(self, day: str) -> None:
        if self.conditional:
            self._publish_conditional(day)
        else:
            self._publish_verified(day)

    def _put_index(self, day: str, entries: list[Entry], **condition: str) -> None:
        self.client.put_object(
            Bucket=self.settings.bucket,
            Key=index_key(self.settings.prefix, day),
            Body=_document(day, entries),
            ContentType="application/json",
            **condition,
        )

    def _publish_conditional(self, day: str) -> None:
        bucket, prefix = self.settings.bucket, self.settings.prefix
        for attempt in range(_ATTEMPTS):
            current, etag = _get_json(self.client, bucket, index_key(prefix, day))
            wanted = merge_entries(current, _all_fragments(self.client, bucket, prefix, day))
            if etag is not None and wanted == merge_entries(current):
                return
            try:
                if etag is None:
                    self._put_index(day, wanted, IfNoneMatch="*")
                else:
                    self._put_index(day, wanted, IfMatch=etag)
                return
            except botocore.exceptions.ClientError as error:
                code, status = _code(error)
                if status not in (409, 412) and code not in {
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                }:
                    raise
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
        raise RuntimeError(f"metadata.json for {day} kept changing under us; will retry")

    def _publish_verified(self, day: str) -> None:
        bucket, prefix = self.settings.bucket, self.settings.prefix
        for attempt in range(_ATTEMPTS):
            current, _ = _get_json(self.client, bucket, index_key(prefix, day))
            fragments = _all_fragments(self.client, bucket, prefix, day)
            wanted = merge_entries(current, fragments)
            if wanted != merge_entries(current):
                self._put_index(day, wanted)
            # Read back after our write: a concurrent writer may have replaced it with an older view.
            written, _ = _get_json(self.client, bucket, index_key(prefix, day))
            have = {e["key"] for e in written if isinstance(e.get("key"), str)}
            need = {
                e["key"]
                for e in _all_fragments(self.client, bucket, prefix, day)
                if isinstance(e.get("key"), str)
            }
            if need <= have:
                return
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
        raise RuntimeError(f"metadata.json for {day} kept changing under us; will retry")
