"""The sync daemon against a real S3 server (``rclone serve s3``; moto's server as a second target).

Each test starts what it needs on 127.0.0.1 and checks the bucket itself, not the daemon's word.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import urllib3

from support import s3_server
from support.s3_server import ACCESS_KEY, SECRET_KEY, MotoS3, RcloneS3, free_port, sync_settings
from support.throttle import Throttle
from zr4.image.sync import SyncSettings, daemon_is_alive, read_day_index, run_daemon, sync_once
from zr4.image.sync.client import make_s3_client
from zr4.image.sync.scanner import day_for

rclone_server = s3_server.rclone_server  # module-scoped server fixtures
moto_server = s3_server.moto_server

FIXED_MTIME = 1_767_268_800  # 2026-01-01T12:00:00Z: a fixed day, far from midnight


def _wait_for(
    check: Callable[[], bool], timeout_s: float, what: str, explain: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError):
            # rclone serve s3 replaces an object in place: a GET racing the daemon's PUT of
            # metadata.json can be cut short (IncompleteRead). The daemon retries such reads itself;
            # the test's poll does the same rather than fail on a read of a file in flux.
            pass
        time.sleep(0.05)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")


def _keys(client: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return found


def _body(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


class PutCounter:
    """Counts the uploads a client starts, per key (PutObject and CreateMultipartUpload)."""

    def __init__(self, client: Any) -> None:
        self.by_key: collections.Counter[str] = collections.Counter()
        self.first_part = threading.Event()
        self.part_sizes: list[int] = []
        for op in ("PutObject", "CreateMultipartUpload"):
            client.meta.events.register(f"provide-client-params.s3.{op}", self._count)
        client.meta.events.register("provide-client-params.s3.UploadPart", self._part_size)
        client.meta.events.register("after-call.s3.UploadPart", self._part)

    def _count(self, params: dict[str, Any], **_: Any) -> None:
        self.by_key[params["Key"]] += 1

    def _part_size(self, params: dict[str, Any], **_: Any) -> None:
        self.part_sizes.append(len(params["Body"]))

    def _part(self, **_: Any) -> None:
        self.first_part.set()


class DaemonThread:
    """``run_daemon`` in a thread, as ``zr4 sync run`` runs it in a process."""

    def __init__(self, settings: SyncSettings, prefer_inotify: bool = True) -> None:
        self.settings = settings
        self.client = make_s3_client(settings)
        self.puts = PutCounter(self.client)
        self.stop = threading.Event()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(run_daemon(settings, self.stop, self.client, prefer_inotify))
        )

    def __enter__(self) -> DaemonThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert self.result == [0]


def _index_keys(server: Any, prefix: str, day: str) -> list[str]:
    """Keys listed in ``<prefix>/<day>/metadata.json`` ([] while it does not exist)."""
    client = server.client()
    try:
        document = json.loads(_body(client, server.bucket, f"{prefix}/{day}/metadata.json"))
    except client.exceptions.NoSuchKey:
        return []
    return [entry["key"] for entry in document["objects"]]


def _data_keys(keys: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in keys.items() if "/metadata" not in k}


def _publish(path: Path, data: bytes, mtime: float = FIXED_MTIME) -> None:
    """Make ``path`` appear with its final bytes and mtime at once (a rename), under a running daemon.

    Writing in place and back-dating afterwards races the daemon: a file whose mtime is older than
    ``stable_seconds`` is complete, so on a loaded machine a pause over ``stable_seconds`` between
    the write and ``os.utime`` uploads it under today's folder, and it keeps that key (see
    test_a_file_redated_after_its_upload_keeps_its_key). The hidden ``.tmp`` name is never a candidate.
    """
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.utime(staging, (mtime, mtime))
    os.replace(staging, path)


@pytest.mark.parametrize("target", ["rclone", "moto"])
def test_burst_of_200_files_all_arrive_once(
    target: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(f"{target}_server")
    settings = sync_settings(server, tmp_path, pod_id=f"burst-{target}", prefix=f"burst-{target}")
    contents = {f"job{i % 7}/frame_{i:04d}.png": os.urandom(1000 + i) for i in range(200)}
    with DaemonThread(settings) as daemon:
        for rel, data in contents.items():
            path = settings.output_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        day = day_for(time.time_ns())
        client = server.client()
        _wait_for(
            lambda: len(_data_keys(_keys(client, server.bucket, settings.prefix))) >= 200, 60, "200 objects"
        )
        _wait_for(lambda: len(read_day_index(client, settings, day)) == 200, 30, "200 index entries")
    assert max(daemon.puts.by_key[f"{settings.prefix}/{day}/{rel}"] for rel in contents) == 1
    stored = _data_keys(_keys(client, server.bucket, settings.prefix))
    assert stored == {f"{settings.prefix}/{day}/{rel}": len(data) for rel, data in contents.items()}
    sample = "job3/frame_0010.png"
    assert _body(client, server.bucket, f"{settings.prefix}/{day}/{sample}") == contents[sample]
    head = client.head_object(Bucket=server.bucket, Key=f"{settings.prefix}/{day}/{sample}")
    assert head["ContentType"] == "image/png"
    meta = {k.lower(): v for k, v in head["Metadata"].items()}
    assert meta["sha256"] == hashlib.sha256(contents[sample]).hexdigest()
    assert meta["pod-id"] == f"burst-{target}" and meta["profile"] == "4080super"
    document = json.loads(_body(client, server.bucket, f"{settings.prefix}/{day}/metadata.json"))
    keys = [entry["key"] for entry in document["objects"]]
    assert len(keys) == len(set(keys)) == 200


def test_polling_fallback_uploads_new_files(rclone_server: RcloneS3, tmp_path: Path) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id="poller", prefix="polling")
    with DaemonThread(settings, prefer_inotify=False) as daemon:
        (settings.output_dir / "later").mkdir()
        for i in range(20):
            (settings.output_dir / "later" / f"clip_{i:02d}.webm").write_bytes(os.urandom(3000))
        client = rclone_server.client()
        _wait_for(lambda: len(_data_keys(_keys(client, "runpod", "polling"))) == 20, 30, "20 objects")
    sent = {k: n for k, n in daemon.puts.by_key.items() if "/later/" in k}
    assert len(sent) == 20 and set(sent.values()) == {1}
    beat = json.loads(settings.heartbeat_path.read_text())
    assert beat["watcher"] == "stopped" and beat["uploaded"] == 20


def test_unreachable_endpoint_keeps_the_daemon_alive_and_retrying(tmp_path: Path) -> None:
    settings = sync_settings(
        RcloneS3(tmp_path / "never-started"), tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    video = settings.output_dir / "waiting.mp4"
    video.write_bytes(b"not lost")
    with DaemonThread(settings):
        _wait_for(
            lambda: (
                "cannot reach the endpoint"
                in (json.loads(settings.heartbeat_path.read_text())["last_error"] or "")
                if settings.heartbeat_path.exists()
                else False
            ),
            20,
            "the error in the heartbeat",
        )
        for _ in range(3):  # retries go on in the workers; the loop keeps beating
            time.sleep(1.0)
            assert daemon_is_alive(settings, max_age_s=2.5)
    assert video.read_bytes() == b"not lost"


def test_file_still_being_written_is_uploaded_once_complete(rclone_server: RcloneS3, tmp_path: Path) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id="growing", prefix="growing", stable_seconds=0.5)
    path = settings.output_dir / "render_00001_.mp4"
    written = hashlib.sha256()
    with DaemonThread(settings) as daemon, open(path, "wb") as handle:
        for _ in range(20):  # 2 s of writes, 0.1 s apart: never quiet for 0.5 s
            chunk = os.urandom(64 * 1024)
            handle.write(chunk)
            handle.flush()
            written.update(chunk)
            time.sleep(0.1)
        handle.close()
        key = f"growing/{day_for(path.stat().st_mtime_ns)}/render_00001_.mp4"
        client = rclone_server.client()
        _wait_for(lambda: key in _keys(client, rclone_server.bucket, "growing"), 20, "the finished video")
        time.sleep(1.0)  # no second upload follows
    assert daemon.puts.by_key[key] == 1
    assert hashlib.sha256(_body(client, rclone_server.bucket, key)).hexdigest() == written.hexdigest()


def test_server_stopped_mid_multipart_then_restarted_upload_completes(tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "data").start()
    try:
        settings = sync_settings(
            server, tmp_path / "sync", pod_id="mpu", part_size_bytes=5 * 1024 * 1024, request_concurrency=1
        )
        data = os.urandom(60 * 1024 * 1024)  # 12 parts of 5 MiB
        path = settings.output_dir / "long_video.mp4"
        path.write_bytes(data)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        key = "outputs/2026-01-01/long_video.mp4"
        with DaemonThread(settings) as daemon:
            assert daemon.puts.first_part.wait(20), "the multipart upload never started"
            server.stop()  # mid-upload: later parts hit a closed port
            time.sleep(2.0)
            server.start()  # same port, same data folder; rclone forgot the upload id
            client = server.client()
            _wait_for(lambda: _keys(client, server.bucket, "outputs").get(key) == len(data), 60, "the object")
        assert hashlib.sha256(_body(client, server.bucket, key)).digest() == hashlib.sha256(data).digest()
        assert _index_keys(server, "outputs", "2026-01-01") == [key]
        assert set(daemon.puts.part_sizes) == {5 * 1024 * 1024}  # equal parts of 5 MiB (60 MiB file)
    finally:
        server.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_restart_with_a_new_journal_finds_objects_already_in_the_bucket(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    settings = sync_settings(rclone_server, tmp_path, pod_id="fresh", prefix="fresh")
    for i in range(3):
        (settings.output_dir / f"clip_{i}.webm").write_bytes(os.urandom(5000))
    time.sleep(settings.stable_seconds)
    first = sync_once(settings)
    assert len(first.uploaded) == 3 and first.ok
    settings.journal_path.unlink()  # a new volume: the bucket is the only record
    second = sync_once(settings)
    assert second.uploaded == [] and len(second.already_present) == 3
    assert len(read_day_index(rclone_server.client(), settings, day_for(time.time_ns()))) == 3


def test_delete_after_upload_only_removes_verified_files(rclone_server: RcloneS3, tmp_path: Path) -> None:
    keep = sync_settings(rclone_server, tmp_path / "keep", pod_id="keep", prefix="keep")
    drop = sync_settings(
        rclone_server, tmp_path / "drop", pod_id="drop", prefix="drop", delete_after_upload=True
    )
    for settings in (keep, drop):
        (settings.output_dir / "a.gif").write_bytes(b"GIF89a" + os.urandom(100))
        (settings.output_dir / "b.mp4.part").write_bytes(b"partial")
    time.sleep(0.4)
    assert sync_once(keep).ok and sync_once(drop).ok
    assert (keep.output_dir / "a.gif").exists()
    assert not (drop.output_dir / "a.gif").exists()
    assert (drop.output_dir / "b.mp4.part").exists()  # never uploaded, never touched
    assert f"drop/{day_for(time.time_ns())}/a.gif" in _keys(rclone_server.client(), "runpod", "drop")


def _explain_index(
    client: Any, bucket: str, prefix: str, pods: list[SyncSettings], expected: set[str]
) -> str:
    """What the bucket and each pod's journal hold, for a failure message."""
    lines: list[str] = []
    try:
        entries = read_day_index(client, pods[0], "2026-01-01")
        keys = [e["key"] for e in entries]
        lines.append(f"read_day_index: {len(keys)} entries")
        lines.append(f"  missing: {sorted(expected - set(keys))}")
        lines.append(f"  unexpected: {sorted(set(keys) - expected)}")
    except Exception as error:  # the explanation must not hide the timeout
        lines.append(f"read_day_index failed: {error!r}")
    try:
        stored = _keys(client, bucket, prefix)
        lines.append(f"objects under {prefix}/ not expected: {sorted(set(stored) - expected)}")
        lines.append(f"expected objects absent: {sorted(expected - set(stored))}")
        for key in sorted(k for k in stored if k.endswith(".json")):
            try:
                listed = [o["key"] for o in json.loads(_body(client, bucket, key)).get("objects", [])]
                twice = sorted(k for k, n in collections.Counter(listed).items() if n > 1)
                lines.append(
                    f"{key}: {len(listed)} entries, duplicates {twice}, missing {sorted(expected - set(listed))}"
                )
            except Exception as error:
                lines.append(f"{key}: unreadable {error!r}")
    except Exception as error:
        lines.append(f"listing failed: {error!r}")
    for settings in pods:
        try:
            with sqlite3.connect(settings.journal_path, timeout=1) as db:
                rows = db.execute("SELECT rel_path, key, day, state, indexed, mtime_ns FROM files").fetchall()
            odd = [r for r in rows if r[3] != "uploaded" or not r[4] or r[2] != "2026-01-01"]
            lines.append(
                f"journal {settings.pod_id}: {len(rows)} rows, not uploaded+indexed on the day: {odd}"
            )
        except Exception as error:
            lines.append(f"journal {settings.pod_id}: {error!r}")
    return "\n".join(lines)


@pytest.mark.parametrize("target", ["rclone", "moto"])
def test_two_daemons_writing_the_same_day_lose_no_entries(
    target: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(f"{target}_server")
    prefix = f"two-{target}"
    pods = [
        sync_settings(server, tmp_path / name, pod_id=name, prefix=prefix, stable_seconds=0.1)
        for name in ("pod-one", "pod-two")
    ]
    with DaemonThread(pods[0]), DaemonThread(pods[1]):
        for i in range(30):  # both pods finish a file every ~60 ms, on the same day
            for settings in pods:
                _publish(settings.output_dir / f"{settings.pod_id}_{i:03d}.mp4", os.urandom(2000))
            time.sleep(0.06)
        client = server.client()
        expected = {f"{prefix}/2026-01-01/{s.pod_id}_{i:03d}.mp4" for s in pods for i in range(30)}

        def explain() -> str:
            return _explain_index(client, server.bucket, prefix, pods, expected)

        _wait_for(lambda: len(read_day_index(client, pods[0], "2026-01-01")) == 60, 60, "60 entries", explain)
        # metadata.json itself converges to the union (each writer re-checks after writing).
        _wait_for(
            lambda: len(_index_keys(server, prefix, "2026-01-01")) == 60, 30, "60 entries in metadata.json"
        )
    keys = _index_keys(server, prefix, "2026-01-01")
    assert len(keys) == len(set(keys)) == 60
    assert sorted(_data_keys(_keys(client, server.bucket, prefix))) == sorted(keys)


def test_a_file_redated_after_its_upload_keeps_its_key(rclone_server: RcloneS3, tmp_path: Path) -> None:
    """One file, one key: an mtime moved to another day after the upload neither moves nor copies it.

    This is what a pause between writing a file and back-dating it does under a running daemon.
    """
    settings = sync_settings(rclone_server, tmp_path, pod_id="redated", prefix="redated", stable_seconds=0.1)
    path = settings.output_dir / "clip.mp4"
    path.write_bytes(os.urandom(3000))
    today = day_for(path.stat().st_mtime_ns)
    time.sleep(0.2)
    assert sync_once(settings).uploaded == [f"redated/{today}/clip.mp4"]
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    again = sync_once(settings)
    assert again.ok and again.uploaded == [] and again.already_present == [f"redated/{today}/clip.mp4"]
    client = rclone_server.client()
    assert sorted(_data_keys(_keys(client, rclone_server.bucket, "redated"))) == [f"redated/{today}/clip.mp4"]
    assert [e["key"] for e in read_day_index(client, settings, today)] == [f"redated/{today}/clip.mp4"]
    assert read_day_index(client, settings, "2026-01-01") == []


def test_same_file_name_from_two_pods_keeps_both_objects(moto_server: MotoS3, tmp_path: Path) -> None:
    """ComfyUI counters restart on every pod: equal names must not overwrite each other.

    moto honours If-None-Match like R2, so even simultaneous uploads of one name keep both.
    """
    prefix = "collide"
    pods = [sync_settings(moto_server, tmp_path / n, pod_id=n, prefix=prefix) for n in ("pod-a", "pod-b")]
    contents = {}
    for settings in pods:
        for i in range(10):
            path = settings.output_dir / f"ComfyUI_{i:05d}_.mp4"
            contents[(settings.pod_id, path.name)] = data = settings.pod_id.encode() + os.urandom(3000)
            path.write_bytes(data)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: reports.append(sync_once(s))) for s in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2 and all(report.ok for report in reports)
    client = moto_server.client()
    stored = _data_keys(_keys(client, moto_server.bucket, prefix))
    assert len(stored) == 20
    bodies = {_body(client, moto_server.bucket, key) for key in stored}
    assert bodies == set(contents.values())
    assert len(_index_keys(moto_server, prefix, "2026-01-01")) == 20


# --- the CLI as a process: SIGKILL, SIGTERM, credentials ------------------------------------------


def _cli_env(server: Any, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_"))}
    env.update(
        {
            "ENABLE_R2_SYNC": "true",
            "R2_ENDPOINT": server.endpoint,
            "R2_ACCESS_KEY_ID": server.access_key,
            "R2_SECRET_ACCESS_KEY": server.secret_key,
            "R2_SYNC_OUTPUT_DIR": str(root / "output"),
            "R2_SYNC_STATE_DIR": str(root / "state"),
            "R2_SYNC_STABLE_SECONDS": "0.3",
            "R2_SYNC_PERMANENT_RETRY_SECONDS": "1",
            "R2_SYNC_MAX_BACKOFF_SECONDS": "2",
            "R2_SYNC_MAX_ATTEMPTS": "2",
            "RUNPOD_POD_ID": "cli-pod",
            "ZR4_PROFILE_NAME": "4080super",
        }
    )
    env.update(extra)
    (root / "output").mkdir(parents=True, exist_ok=True)
    return env


class CliDaemon:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def daemons() -> Iterator[list[CliDaemon]]:
    started: list[CliDaemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _journal_states(state_dir: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(state_dir / "journal.sqlite", timeout=1) as db:
            return dict(db.execute("SELECT rel_path, state FROM files").fetchall())
    except sqlite3.Error:
        return {}


def test_sigkill_mid_upload_then_restart_arrives_once(
    rclone_server: RcloneS3, tmp_path: Path, daemons: list[CliDaemon]
) -> None:
    # The killed daemon talks to the server through a forwarder capped at 20 MB/s, so its 120 MB
    # upload lasts about 6 s on any machine (unthrottled it took 1 s, and a loaded test run missed it).
    endpoint = urllib.parse.urlsplit(rclone_server.endpoint)
    throttle = Throttle(endpoint.hostname or "127.0.0.1", endpoint.port or 80, 20 * 1024 * 1024)
    env = _cli_env(
        rclone_server,
        tmp_path,
        R2_PREFIX="killed",
        R2_SYNC_PART_SIZE_MIB="5",
        R2_SYNC_REQUEST_CONCURRENCY="1",
        R2_ENDPOINT=f"http://127.0.0.1:{throttle.port}",
    )
    data = os.urandom(120 * 1024 * 1024)
    path = tmp_path / "output" / "killed_00001_.mp4"
    path.write_bytes(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    key = "killed/2026-01-01/killed_00001_.mp4"
    log = tmp_path / "daemon.log"
    daemons.append(CliDaemon(env, log))
    _wait_for(
        lambda: _journal_states(tmp_path / "state").get("killed_00001_.mp4") == "uploading",
        30,
        "upload start",
    )
    client = rclone_server.client()
    # Kill only once the multipart upload exists on the server, so the kill is truly mid-upload
    # (a fixed sleep lost that race on a loaded machine).
    _wait_for(
        lambda: bool(client.list_multipart_uploads(Bucket="runpod", Prefix=key).get("Uploads")),
        30,
        "the multipart upload to be created",
        # A failure here says which race was lost: the upload not begun yet, or already finished.
        lambda: (
            f"journal: {_journal_states(tmp_path / 'state')}; object in bucket: "
            f"{_keys(client, 'runpod', 'killed').get(key)}; daemon log:\n{daemons[0].text()[-2000:]}"
        ),
    )
    daemons[0].kill()  # SIGKILL: no handler, no cleanup
    throttle.close()
    assert _keys(client, "runpod", "killed").get(key) is None  # the kill came mid-upload
    env["R2_ENDPOINT"] = rclone_server.endpoint
    daemons.append(CliDaemon(env, log))
    _wait_for(
        lambda: len(read_day_index(client, _as_settings(env), "2026-01-01")) == 1, 60, "the index entry"
    )
    _wait_for(
        lambda: "already in bucket" in daemons[1].text() or "uploaded killed" in daemons[1].text(), 10, "log"
    )
    daemons[1].process.send_signal(signal.SIGTERM)
    assert daemons[1].process.wait(timeout=30) == 0
    assert hashlib.sha256(_body(client, "runpod", key)).digest() == hashlib.sha256(data).digest()
    text = log.read_text()
    assert text.count(f"uploaded {key}") == 1  # sent once, by the restarted daemon
    assert f"aborted an interrupted multipart upload of {key}" in text  # the killed one's parts
    document = json.loads(_body(client, "runpod", "killed/2026-01-01/metadata.json"))
    assert [entry["key"] for entry in document["objects"]] == [key]
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    path.unlink()


def _as_settings(env: dict[str, str]) -> SyncSettings:
    from zr4.image.sync import settings_from_env

    return settings_from_env(env)


def test_sigterm_finishes_the_upload_in_flight_and_exits_0(
    rclone_server: RcloneS3, tmp_path: Path, daemons: list[CliDaemon]
) -> None:
    env = _cli_env(
        rclone_server,
        tmp_path,
        R2_PREFIX="termed",
        R2_SYNC_PART_SIZE_MIB="5",
        R2_SYNC_REQUEST_CONCURRENCY="1",
    )
    data = os.urandom(80 * 1024 * 1024)
    path = tmp_path / "output" / "termed.mp4"
    path.write_bytes(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    daemons.append(CliDaemon(env, tmp_path / "daemon.log"))
    _wait_for(
        lambda: _journal_states(tmp_path / "state").get("termed.mp4") == "uploading", 30, "upload start"
    )
    (tmp_path / "output" / "late.png").write_bytes(b"arrived after SIGTERM")
    daemons[0].process.send_signal(signal.SIGTERM)
    assert daemons[0].process.wait(timeout=30) == 0
    client = rclone_server.client()
    assert _keys(client, "runpod", "termed").get("termed/2026-01-01/termed.mp4") == len(data)
    assert "stopping: taking no new files" in daemons[0].text()
    assert _journal_states(tmp_path / "state").get("termed.mp4") == "uploaded"
    path.unlink()


def test_wrong_credentials_clear_error_file_kept_then_uploaded_when_fixed(
    tmp_path: Path, daemons: list[CliDaemon]
) -> None:
    server = RcloneS3(tmp_path / "data").start()
    try:
        wrong_secret = "wrong-secret-Zr4-5b1d7e"
        env = _cli_env(server, tmp_path, R2_SECRET_ACCESS_KEY=wrong_secret)
        video = tmp_path / "output" / "kept.mp4"
        video.write_bytes(os.urandom(4096))
        daemons.append(CliDaemon(env, tmp_path / "daemon.log"))
        _wait_for(lambda: "refused the credentials" in daemons[0].text(), 20, "the credentials error")
        cpu_before = _cpu_seconds(daemons[0].process.pid)
        time.sleep(2.5)  # a few retry rounds: still one line, file still here
        assert _cpu_seconds(daemons[0].process.pid) - cpu_before < 1.0  # paused, not spinning
        text = daemons[0].text()
        assert text.count("refused the credentials") == 1
        assert "R2_SECRET_ACCESS_KEY" in text  # says what to fix
        assert video.exists() and daemons[0].process.poll() is None
        # Fix it where R2 users fix it: the server now accepts this key pair.
        server.restart(secret_key=wrong_secret)
        client = server.client()
        key = f"outputs/{day_for(video.stat().st_mtime_ns)}/kept.mp4"
        _wait_for(lambda: key in _keys(client, "runpod", "outputs"), 30, "upload after the fix")
        _wait_for(lambda: "uploads work again" in daemons[0].text(), 10, "recovery line")
        daemons[0].process.send_signal(signal.SIGTERM)
        assert daemons[0].process.wait(timeout=30) == 0
        assert video.exists()
        output = daemons[0].text()
        assert wrong_secret not in output and SECRET_KEY not in output and ACCESS_KEY not in output
    finally:
        server.stop()


def test_a_stale_day_listing_is_listed_once_by_the_workers_that_find_it(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    """Eight upload workers asking about one day folder at once cost one LIST, not eight."""
    from zr4.image.sync.uploader import DayListing

    settings = sync_settings(rclone_server, tmp_path)
    client = make_s3_client(settings)
    client.put_object(Bucket=settings.bucket, Key="listing/2026-01-02/a.png", Body=b"a")
    lists: list[str] = []
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: lists.append("LIST"))
    listing = DayListing(client, settings.bucket)
    gate = threading.Barrier(8)
    answers: list[bool] = []

    def ask(name: str) -> None:
        gate.wait()
        answers.append(listing.may_exist("listing/2026-01-02/", f"listing/2026-01-02/{name}"))

    workers = [threading.Thread(target=ask, args=(n,)) for n in ["a.png"] + [f"{i}.png" for i in range(7)]]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert lists == ["LIST"]
    assert sorted(answers) == [False] * 7 + [True]


def test_the_sync_client_leaves_timestamps_as_the_server_sent_them(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    """No dateutil parse per listed key (the sync never reads them): the raw string comes back."""
    settings = sync_settings(rclone_server, tmp_path)
    client = make_s3_client(settings)
    client.put_object(Bucket=settings.bucket, Key="stamps/x.bin", Body=b"x")
    listed = client.list_objects_v2(Bucket=settings.bucket, Prefix="stamps/")["Contents"][0]
    assert isinstance(listed["LastModified"], str) and listed["LastModified"][:2] == "20"
