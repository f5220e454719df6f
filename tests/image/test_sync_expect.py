"""``Expect: 100-continue`` only where it pays (real `rclone serve s3` over HTTPS, as R2).

A small PutObject goes out with its headers (no round trip waiting for ``100 Continue``); a larger
PutObject and every multipart part still ask first. A server that rejects a request before reading
its body must still give a clean S3 error, not a broken connection: that holds for the small bodies
sent at once and, through the handshake, for the large ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from support.s3_server import RcloneS3, sync_settings
from zr4.image.sync import sync_once
from zr4.image.sync.client import SMALL_BODY_BYTES, make_s3_client
from zr4.image.sync.settings import MIB


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    server = RcloneS3(tmp_path / "data", tls=True).start()
    assert server.ca_cert is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca_cert))  # botocore's CA bundle variable
    yield server
    server.stop()


def test_small_bodies_go_out_without_waiting_for_100_continue(tls_server: RcloneS3, tmp_path: Path) -> None:
    settings = sync_settings(tls_server, tmp_path, stable_seconds=0.0, part_size_bytes=5 * MIB)
    files = {
        "frame.png": os.urandom(SMALL_BODY_BYTES),
        "still.png": os.urandom(3 * MIB),
        "clip.mp4": os.urandom(11 * MIB),
    }
    for name, data in files.items():
        (settings.output_dir / name).write_bytes(data)
    client = make_s3_client(settings)
    expects: list[tuple[str, int, bool]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        length = int(request.headers["Content-Length"])
        expects.append((event_name.rsplit(".", 1)[-1], length, "Expect" in request.headers))

    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-send.s3.{operation}", record)
    report = sync_once(settings, client, wait_incomplete_s=5.0)
    assert report.error is None and len(report.uploaded) == 3, report

    assert ("PutObject", SMALL_BODY_BYTES, False) in expects
    assert ("PutObject", 3 * MIB, True) in expects
    assert sorted(e for e in expects if e[0] == "UploadPart") == [
        ("UploadPart", MIB, True),
        ("UploadPart", 5 * MIB, True),
        ("UploadPart", 5 * MIB, True),
    ]
    # zr4's own index documents are small: sent at once as well
    assert all(not e for op, n, e in expects if op == "PutObject" and n <= SMALL_BODY_BYTES), expects

    stored = tls_server.client()
    listed = stored.list_objects_v2(Bucket=tls_server.bucket)["Contents"]
    for name, data in files.items():
        (key,) = [obj["Key"] for obj in listed if obj["Key"].endswith(f"/{name}")]
        body = stored.get_object(Bucket=tls_server.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), name


@pytest.mark.parametrize("size", [SMALL_BODY_BYTES, 16 * MIB], ids=["sent-at-once", "after-100-continue"])
def test_an_early_rejection_is_a_clean_s3_error(tls_server: RcloneS3, tmp_path: Path, size: int) -> None:
    settings = sync_settings(tls_server, tmp_path, stable_seconds=0.0)
    wrong = dataclasses.replace(
        settings, secret_access_key=type(settings.secret_access_key)("not-the-secret")
    )
    client = make_s3_client(wrong)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client.put_object(Bucket=settings.bucket, Key="rejected.bin", Body=os.urandom(size))
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
