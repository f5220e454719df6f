"""The sha256 of a multipart upload, computed beside the upload (real `rclone serve s3`).

The hash thread reads only as far as s3transfer has sent. It must still give the file's sha256 when
the upload succeeds, and it must end when the upload fails (a thread left waiting for progress that
never comes would pile up in the daemon, one per failed attempt).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support.s3_server import RcloneS3, sync_settings
from zr4.image.sync import read_day_index, sync_once
from zr4.image.sync.client import make_s3_client
from zr4.image.sync.paced_hash import THREAD_NAME as HASH_THREAD
from zr4.image.sync.scanner import day_for
from zr4.image.sync.settings import MIB


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == HASH_THREAD and t.is_alive()]


def test_the_index_holds_the_sha256_of_a_multipart_upload(tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "data").start()
    try:
        settings = sync_settings(server, tmp_path, stable_seconds=0.0, part_size_bytes=5 * MIB)
        data = os.urandom(23 * MIB + 17)  # five parts, the last one short
        path = settings.output_dir / "clip.mp4"
        path.write_bytes(data)
        client = make_s3_client(settings)
        report = sync_once(settings, client, wait_incomplete_s=5.0)
        assert report.error is None and len(report.uploaded) == 1, report
        (entry,) = [
            e
            for e in read_day_index(client, settings, day_for(path.stat().st_mtime_ns))
            if e["key"].endswith("/clip.mp4")
        ]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        server.stop()


def test_a_failed_multipart_upload_ends_its_hash_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTTPS, as R2: the parts are not read for a payload signature before they are sent, so a part
    # that cannot connect reports no progress at all and the hash thread would wait on it forever.
    server = RcloneS3(tmp_path / "data", tls=True).start()
    try:
        assert server.ca_cert is not None
        monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca_cert))  # botocore's CA bundle variable
        settings = sync_settings(
            server,
            tmp_path,
            stable_seconds=0.0,
            part_size_bytes=5 * MIB,
            max_attempts=1,
            connect_timeout_seconds=1.0,
        )
        (settings.output_dir / "clip.mp4").write_bytes(os.urandom(40 * MIB))
        client = make_s3_client(settings)

        def server_goes_away(**_: Any) -> None:
            server.stop()  # after CreateMultipartUpload: every part fails, nothing is sent

        client.meta.events.register("after-call.s3.CreateMultipartUpload", server_goes_away)
        before = set(_hash_threads())
        report = sync_once(settings, client, wait_incomplete_s=1.0, max_attempts=1)
        assert not report.ok, report
        deadline = time.monotonic() + 10
        while set(_hash_threads()) - before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(_hash_threads()) - before, "the sha256 thread still waits for upload progress"
    finally:
        server.stop()
