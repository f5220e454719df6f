"""Sync faults found by trying it: conditional re-uploads, paused writers, bad endpoints, name clashes.

Real servers on 127.0.0.1 (``rclone serve s3``, moto's server); the bucket is checked, not the report.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import s3_server
from support.s3_server import MotoS3, RcloneS3, sync_settings
from zr4.image.sync import (
    SyncConfigError,
    SyncError,
    read_day_index,
    run_daemon,
    settings_from_env,
    sync_once,
)
from zr4.image.sync.client import make_s3_client
from zr4.image.sync.scanner import day_for

rclone_server = s3_server.rclone_server
moto_server = s3_server.moto_server


def _body(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _objects(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return found


# --- conditional writes ------------------------------------------------------------------------------


def test_changed_file_is_reuploaded_on_a_server_enforcing_conditional_writes(
    moto_server: MotoS3, tmp_path: Path
) -> None:
    settings = sync_settings(moto_server, tmp_path, pod_id="cond", prefix="cond", max_attempts=1)
    path = settings.output_dir / "clip.mp4"
    path.write_bytes(b"")  # a writer that created the file before writing it
    os.utime(path, (time.time() - 5, time.time() - 5))
    first = sync_once(settings, wait_incomplete_s=5)
    assert first.ok, first
    day = day_for(path.stat().st_mtime_ns)
    key = f"cond/{day}/clip.mp4"
    client = moto_server.client()
    assert _body(client, moto_server.bucket, key) == b""
    final = os.urandom(300_000)
    path.write_bytes(final)
    os.utime(path, (time.time() - 5, time.time() - 5))
    second = sync_once(settings, wait_incomplete_s=5)
    assert second.ok, second
    assert _body(client, moto_server.bucket, key) == final
    assert [e["size"] for e in read_day_index(client, settings, day) if e["key"] == key] == [len(final)]


# --- a writer that pauses longer than the stability window -------------------------------------------

_PAUSING_WRITER = """
import sys, time
path, pause = sys.argv[1], float(sys.argv[2])
with open(path, "wb") as handle:
    handle.write(b"a" * 200_000)
    handle.flush()
    print("half", flush=True)
    time.sleep(pause)
    handle.write(b"b" * 200_000)
"""


@pytest.mark.parametrize("mode", ["once", "daemon"])
def test_a_paused_writer_never_gets_its_half_file_uploaded(
    mode: str, rclone_server: RcloneS3, tmp_path: Path
) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id=f"pause-{mode}", prefix=f"pause-{mode}")
    path = settings.output_dir / "video.mp4"
    writer = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_WRITER, str(path), "2.5"], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "half"
    client = rclone_server.client()
    puts: list[str] = []
    if mode == "once":
        report = sync_once(settings, wait_incomplete_s=20)
        assert report.ok, report
    else:
        daemon_client = make_s3_client(settings)
        daemon_client.meta.events.register(
            "provide-client-params.s3.PutObject", lambda params, **_: puts.append(params["Key"])
        )
        stop = threading.Event()
        thread = threading.Thread(target=run_daemon, args=(settings, stop, daemon_client))
        thread.start()
        try:
            writer.wait(timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _objects(client, rclone_server.bucket, "pause-daemon/"):
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=30)
    assert writer.wait(timeout=30) == 0
    day = day_for(path.stat().st_mtime_ns)
    key = f"pause-{mode}/{day}/video.mp4"
    assert _body(client, rclone_server.bucket, key) == b"a" * 200_000 + b"b" * 200_000
    sizes = [e["size"] for e in read_day_index(client, settings, day) if e["key"] == key]
    assert sizes == [400_000]
    if mode == "daemon":
        assert puts.count(key) == 1  # the half-written file was never sent


# --- R2_ENDPOINT -------------------------------------------------------------------------------------

_CREDS = {"R2_ACCESS_KEY_ID": "id", "R2_SECRET_ACCESS_KEY": "secret"}


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("http://", "no host name"),
        ("https://my host.example.com", "space"),
        ("http://[::1", "not a valid URL"),
        ("http://127.0.0.1:abc", "port"),
        ("http://127.0.0.1:70000", "port"),
        ("http://127.0.0.1:0", "port"),
        ("ftp://example.com", "scheme"),
        ("https://acct.r2.cloudflarestorage.com/a/b", "path"),
    ],
)
def test_malformed_endpoint_is_one_clear_settings_error(endpoint: str, says: str) -> None:
    with pytest.raises(SyncConfigError) as caught:
        settings_from_env({"R2_ENDPOINT": endpoint, **_CREDS})
    message = str(caught.value)
    assert message.startswith("R2_ENDPOINT=") and says in message and "\n" not in message


def test_endpoint_with_the_bucket_appended_uses_that_bucket() -> None:
    settings = settings_from_env({"R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com/videos/", **_CREDS})
    assert (settings.endpoint_url, settings.bucket) == ("https://acct.r2.cloudflarestorage.com", "videos")
    same = settings_from_env(
        {"R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com/videos", "R2_BUCKET": "videos", **_CREDS}
    )
    assert same.bucket == "videos"
    with pytest.raises(
        SyncConfigError, match=r"R2_ENDPOINT=https://acct\.r2\.cloudflarestorage\.com \(without /videos\)"
    ):
        settings_from_env(
            {"R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com/videos", "R2_BUCKET": "other", **_CREDS}
        )


def _cli_env(root: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_", "ENABLE_R2"))}
    env.update(
        {
            "R2_ENDPOINT": endpoint,
            "R2_SYNC_OUTPUT_DIR": str(root / "output"),
            "R2_SYNC_STATE_DIR": str(root / "state"),
            "R2_SYNC_STABLE_SECONDS": "0.2",
            "ENABLE_R2_SYNC": "true",
            **_CREDS,
        }
    )
    env.update(extra)
    return env


@pytest.mark.parametrize("command", ["test", "once", "run"])
@pytest.mark.parametrize(
    "endpoint", ["http://", "http://[::1", "http://127.0.0.1:99999", "ftp://example.com"]
)
def test_malformed_endpoint_at_every_sync_command(command: str, endpoint: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "sync", command],
        env=_cli_env(tmp_path, endpoint),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "R2_ENDPOINT" in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_endpoint_with_bucket_appended_uploads_with_sync_once(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "a.png").write_bytes(b"png")
    env = _cli_env(
        tmp_path,
        f"{rclone_server.endpoint}/{rclone_server.bucket}",
        R2_ACCESS_KEY_ID=rclone_server.access_key,
        R2_SECRET_ACCESS_KEY=rclone_server.secret_key,
        R2_PREFIX="appended",
    )
    for command in ("test", "once"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "zr4.cli.main",
                "sync",
                command,
                *(["--wait", "5"] if command == "once" else []),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    day = day_for((tmp_path / "output" / "a.png").stat().st_mtime_ns)
    client = rclone_server.client()
    assert _body(client, rclone_server.bucket, f"appended/{day}/a.png") == b"png"


# --- zr4's own files vs the user's -------------------------------------------------------------------


def test_a_request_botocore_refuses_to_send_is_permanent_not_retried(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    """botocore refuses a bucket name with '!' before sending (ParamValidationError): no retry helps."""
    import botocore.exceptions

    from zr4.image.sync.client import ErrorKind, classify, explain

    settings = sync_settings(rclone_server, tmp_path, bucket="Bad_Bucket!", max_attempts=1)
    with pytest.raises(botocore.exceptions.ParamValidationError) as caught:
        make_s3_client(settings).head_object(Bucket=settings.bucket, Key="probe")
    classified = classify(caught.value)
    assert classified.kind is ErrorKind.INVALID and classified.kind.permanent
    message = explain(classified, settings)
    assert message.startswith("botocore refused to send the request (ParamValidationError): check R2_BUCKET")
    assert "temporary" not in message and "retrying" not in message


def test_user_metadata_files_are_kept_beside_zr4s_index(moto_server: MotoS3, tmp_path: Path) -> None:
    settings = sync_settings(moto_server, tmp_path, pod_id="meta", prefix="meta")
    mine = {
        "metadata.json": b'{"my": "workflow notes"}',
        "metadata.d/meta.json": b'{"mine": true}',
        "_metadata.json": b"underscored",
        "clip.mp4": b"video",
    }
    for rel, data in mine.items():
        (settings.output_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings.output_dir / rel).write_bytes(data)
    report = sync_once(settings, wait_incomplete_s=5)
    assert report.ok, report
    day = day_for(time.time_ns())
    client = moto_server.client()
    stored = {
        entry["source"]: _body(client, moto_server.bucket, entry["key"])
        for entry in read_day_index(client, settings, day)
    }
    assert stored == mine
    index = json.loads(_body(client, moto_server.bucket, f"meta/{day}/metadata.json"))
    assert sorted(e["source"] for e in index["objects"]) == sorted(mine)
    fragment = json.loads(_body(client, moto_server.bucket, f"meta/{day}/metadata.d/meta.json"))
    assert fragment["pod"] == "meta" and len(fragment["objects"]) == len(mine)


# --- names and messages ------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_uploaded(rclone_server: RcloneS3, tmp_path: Path) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id="bytes", prefix="bytes")
    raw = os.path.join(os.fsencode(settings.output_dir), b"caf\xe9.mp4")
    with open(raw, "wb") as handle:
        handle.write(b"latin-1 name")
    report = sync_once(settings, wait_incomplete_s=5)
    assert report.ok, report
    day = day_for(time.time_ns())
    client = rclone_server.client()
    assert _body(client, rclone_server.bucket, f"bytes/{day}/caf%E9.mp4") == b"latin-1 name"
    assert [e["source"] for e in read_day_index(client, settings, day)] == ["caf%E9.mp4"]
    again = sync_once(settings, wait_incomplete_s=5)  # recorded: not sent twice
    assert again.uploaded == [] and again.ok


def test_second_sync_process_names_the_command_that_was_refused(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id="lock", prefix="lock")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.lock_path, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SyncError) as once_error:
            sync_once(settings)
        with pytest.raises(SyncError) as run_error:
            run_daemon(settings, threading.Event())
    assert "`zr4 sync once`" in str(once_error.value) and "`zr4 sync run` cannot" not in str(once_error.value)
    assert "`zr4 sync run` cannot" in str(run_error.value)


# --- a large file is hashed while it uploads ---------------------------------------------------------


def test_large_file_sha256_is_computed_during_the_upload(rclone_server: RcloneS3, tmp_path: Path) -> None:
    import hashlib

    settings = sync_settings(
        rclone_server, tmp_path, pod_id="big", prefix="big", part_size_bytes=5 << 20, request_concurrency=4
    )
    data = os.urandom(12 << 20)
    path = settings.output_dir / "long.mp4"
    path.write_bytes(data)
    os.utime(path, (time.time() - 5, time.time() - 5))
    report = sync_once(settings, wait_incomplete_s=5)
    assert report.ok and len(report.uploaded) == 1, report
    day = day_for(path.stat().st_mtime_ns)
    client = rclone_server.client()
    key = f"big/{day}/long.mp4"
    assert _body(client, rclone_server.bucket, key) == data
    [entry] = [e for e in read_day_index(client, settings, day) if e["key"] == key]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    # A new journal (new volume) recognises the object by pod, path, size and mtime: nothing re-sent.
    fresh = settings.with_(state_dir=tmp_path / "state2")
    again = sync_once(fresh, wait_incomplete_s=5)
    assert again.ok and again.uploaded == [] and again.already_present == [key], again
