"""Request bodies: signed over plain HTTP, ``UNSIGNED-PAYLOAD`` over HTTPS (real `rclone serve s3`).

Over HTTPS botocore would otherwise SHA-256 every byte once more for the signature, on top of the
sha256 zr4 computes for its index; TLS already authenticates the bytes. The objects must still
arrive whole, single-part and multipart alike.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from support.s3_server import RcloneS3, sync_settings
from zr4.image.sync import sync_once
from zr4.image.sync.client import make_s3_client
from zr4.image.sync.settings import MIB

SIGNED_OPERATIONS = ("PutObject", "UploadPart")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_payload_signing_follows_the_endpoint_scheme(
    tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RcloneS3(tmp_path / "data", tls=tls).start()
    try:
        if server.ca_cert is not None:
            monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca_cert))  # botocore's CA bundle variable
        settings = sync_settings(server, tmp_path, stable_seconds=0.0, part_size_bytes=5 * MIB)
        files = {"small.png": os.urandom(200_000), "clip.mp4": os.urandom(12 * MIB + 123)}
        for name, data in files.items():
            (settings.output_dir / name).write_bytes(data)

        client = make_s3_client(settings)
        content_sha256: dict[str, list[str]] = {op: [] for op in SIGNED_OPERATIONS}

        def record(operation: str, request: Any, **_: Any) -> None:
            value = request.headers["X-Amz-Content-SHA256"]
            content_sha256[operation].append(value.decode() if isinstance(value, bytes) else value)

        for operation in SIGNED_OPERATIONS:
            client.meta.events.register(f"before-send.s3.{operation}", functools.partial(record, operation))

        report = sync_once(settings, client, wait_incomplete_s=5.0)
        assert report.error is None, report.error

        assert len(content_sha256["UploadPart"]) == 3  # 12 MiB in 5 MiB parts
        assert content_sha256["PutObject"]  # the small file (and zr4's index documents)
        sent = content_sha256["PutObject"] + content_sha256["UploadPart"]
        if tls:
            assert set(sent) == {"UNSIGNED-PAYLOAD"}
        else:
            assert all(len(value) == 64 and int(value, 16) >= 0 for value in sent), sent

        stored = server.client()
        keys = [
            obj["Key"]
            for page in stored.get_paginator("list_objects_v2").paginate(Bucket=server.bucket)
            for obj in page.get("Contents", [])
        ]
        for name, data in files.items():
            (key,) = [k for k in keys if k.endswith(f"/{name}")]
            body = stored.get_object(Bucket=server.bucket, Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), name
    finally:
        server.stop()
