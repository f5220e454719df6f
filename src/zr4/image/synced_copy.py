"""Where the R2 sync put a job's video: the object key the sync daemon gives an output file.

The daemon (:mod:`zr4.image.sync`) uploads every file of ``OUTPUT_DIR`` to
``<R2_PREFIX>/<UTC day of the file>/<path in OUTPUT_DIR>``; when another pod already holds a
different file under that key it adds the pod id to the name. This module asks the bucket for both
names, so `zr4 dance` can print where the synced copy is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from zr4.core.env import EnvError, env_bool


@dataclass(frozen=True)
class SyncedCopy:
    bucket: str
    key: str
    present: bool

    def describe(self) -> str:
        state = "synced to" if self.present else "not yet in the bucket; the sync daemon will put it at"
        return f"{state} s3://{self.bucket}/{self.key}"


def find_synced_copy(rel_path: str, environ: Mapping[str, str], wait_s: float = 30.0) -> SyncedCopy | None:
    """None when the sync is off or not configured here; else the key, looked up for up to ``wait_s``."""
    try:
        if not env_bool("ENABLE_R2_SYNC", False, environ):
            return None
        from zr4.image.sync import settings_from_env

        settings = settings_from_env(environ)
    except EnvError:
        return None
    from zr4.image.sync.client import make_s3_client
    from zr4.image.sync.scanner import day_for, object_key, pod_suffixed
    from zr4.image.sync.uploader import head_object

    day = day_for(time.time_ns())
    keys = [object_key(settings.prefix, day, rel_path)]
    keys.append(object_key(settings.prefix, day, pod_suffixed(rel_path, settings.pod_id)))
    client = make_s3_client(settings)
    deadline = time.monotonic() + wait_s
    while True:
        for key in keys:
            try:
                if head_object(client, settings.bucket, key) is not None:
                    return SyncedCopy(settings.bucket, key, True)
            except Exception:  # an unreachable bucket is the daemon's to report; say where it will be
                return SyncedCopy(settings.bucket, keys[0], False)
        if time.monotonic() >= deadline:
            return SyncedCopy(settings.bucket, keys[0], False)
        time.sleep(1.0)
