"""`zr4 sync test|once|run` as a user runs them, against real loopback servers.

Every command's whole output is checked for the credentials (they must never be printed).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import s3_server
from support.s3_server import ACCESS_KEY, SECRET_KEY, MotoS3, RcloneS3, free_port

rclone_server = s3_server.rclone_server
moto_server = s3_server.moto_server

WRONG_SECRET = "Wr0ng-secret-value-zr4-7f3a"
_SKEW_RUNNER = """
import datetime, sys
real = datetime.datetime
class Skewed(real):
    @classmethod
    def now(cls, tz=None):
        return real.now(tz) - datetime.timedelta(hours=2)
    @classmethod
    def utcnow(cls):
        return real.utcnow() - datetime.timedelta(hours=2)
datetime.datetime = Skewed  # this process's clock runs two hours late
sys.argv = ["zr4"] + sys.argv[1:]
from zr4.cli.main import run
run()
"""


def _env(server: Any, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_", "ENABLE_R2"))}
    env.update(
        {
            "R2_ENDPOINT": server.endpoint,
            "R2_ACCESS_KEY_ID": server.access_key,
            "R2_SECRET_ACCESS_KEY": server.secret_key,
            "R2_SYNC_OUTPUT_DIR": str(root / "output"),
            "R2_SYNC_STATE_DIR": str(root / "state"),
            "R2_SYNC_STABLE_SECONDS": "0.2",
            "R2_SYNC_MAX_ATTEMPTS": "2",
            "RUNPOD_POD_ID": "cli-test",
        }
    )
    env.update(extra)
    (root / "output").mkdir(parents=True, exist_ok=True)
    return env


def _zr4(env: dict[str, str], *args: str, skewed: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", _SKEW_RUNNER] if skewed else [sys.executable, "-m", "zr4.cli.main"]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=90)
    _assert_no_credentials(done.stdout + done.stderr, env)
    return done


def _assert_no_credentials(text: str, env: dict[str, str]) -> None:
    for name in ("R2_SECRET_ACCESS_KEY", "R2_ACCESS_KEY_ID"):
        assert env[name] not in text, f"{name} leaked into the output"
    for value in (SECRET_KEY, ACCESS_KEY, WRONG_SECRET):
        assert value not in text


def test_sync_test_reports_each_step(rclone_server: RcloneS3, tmp_path: Path) -> None:
    done = _zr4(_env(rclone_server, tmp_path), "sync", "test")
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("put", "head", "get", "delete"):
        assert f"ok   {step}" in done.stdout
    assert "metadata.json merging: per-pod fragments + verify" in done.stdout
    assert done.stdout.rstrip().endswith("sync test passed")
    assert "/.zr4-probe/" not in str(rclone_server.client().list_objects_v2(Bucket="runpod"))


def test_sync_test_on_moto_sees_conditional_writes(moto_server: MotoS3, tmp_path: Path) -> None:
    done = _zr4(_env(moto_server, tmp_path), "sync", "test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "metadata.json merging: conditional writes" in done.stdout


def test_sync_test_over_https_with_a_private_ca(tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "data", tls=True).start()
    try:
        env = _env(server, tmp_path)
        refused = _zr4(env, "sync", "test")
        assert refused.returncode == 1 and "TLS certificate of https://127.0.0.1" in refused.stdout
        trusted = _zr4({**env, "AWS_CA_BUNDLE": str(server.ca_cert)}, "sync", "test")
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    finally:
        server.stop()


@pytest.fixture
def not_s3_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed_port", "cannot reach the endpoint"),
        ("wrong_secret", "refused the credentials (SignatureDoesNotMatch)"),
        ("unknown_key", "refused the credentials (InvalidAccessKeyId)"),
        ("missing_bucket", "bucket 'no-such-bucket' does not exist"),
        ("clock_skew", "clock differs too much"),
        ("not_s3", "answered, but not as an S3 API"),
    ],
)
def test_sync_test_failures_have_distinct_messages(
    case: str, expected: str, rclone_server: RcloneS3, not_s3_endpoint: str, tmp_path: Path
) -> None:
    extra = {
        "closed_port": {"R2_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        "wrong_secret": {"R2_SECRET_ACCESS_KEY": WRONG_SECRET},
        "unknown_key": {"R2_ACCESS_KEY_ID": "NOSUCHKEYID0000", "R2_SECRET_ACCESS_KEY": WRONG_SECRET},
        "missing_bucket": {"R2_BUCKET": "no-such-bucket"},
        "clock_skew": {},
        "not_s3": {"R2_ENDPOINT": not_s3_endpoint},
    }[case]
    done = _zr4(_env(rclone_server, tmp_path, **extra), "sync", "test", skewed=case == "clock_skew")
    assert done.returncode == 1
    assert expected in done.stdout
    assert "FAIL put" in done.stdout and "sync test FAILED" in done.stdout
    if case == "clock_skew":
        assert "server clock offset +7" in done.stdout  # about +7200 s


@pytest.mark.parametrize("command", [["sync", "test"], ["sync", "once"]])
def test_an_invalid_bucket_name_is_a_setting_error_never_retried(
    command: list[str], rclone_server: RcloneS3, tmp_path: Path
) -> None:
    """A real server is there and the keys are right: only the name is wrong, and nothing is tried."""
    (tmp_path / "output" / "a.mp4").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "output" / "a.mp4").write_bytes(b"video")
    done = _zr4(_env(rclone_server, tmp_path, R2_BUCKET="Bad_Bucket!"), *command)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "error: sync settings: R2_BUCKET='Bad_Bucket!' is not a valid bucket name: use 3 to 63 lower-case "
        "letters (a-z), digits (0-9) and hyphens (-), beginning and ending with a letter or digit (other S3 "
        "servers also allow single dots; R2 does not)\n"
    )
    assert not (tmp_path / "state").exists()  # no journal: the sync never started


def test_sync_once_uploads_and_reports(rclone_server: RcloneS3, tmp_path: Path) -> None:
    env = _env(rclone_server, tmp_path, R2_PREFIX="cli-once")
    (tmp_path / "output" / "a.mp4").write_bytes(os.urandom(2_000_000))
    (tmp_path / "output" / "b.json").write_text("{}")
    time.sleep(0.3)
    first = _zr4(env, "sync", "once")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("uploaded 2 file(s) (2.0 MB), 0 already in the bucket")
    second = _zr4(env, "sync", "once")
    assert second.stdout.startswith("uploaded 0 file(s) (0.0 MB), 0 already in the bucket")


def test_sync_once_with_wrong_credentials_fails_clearly_and_keeps_files(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    env = _env(rclone_server, tmp_path, R2_SECRET_ACCESS_KEY=WRONG_SECRET)
    video = tmp_path / "output" / "keep.mp4"
    video.write_bytes(b"video bytes")
    time.sleep(0.3)
    done = _zr4(env, "sync", "once")
    assert done.returncode == 1
    assert "error: the endpoint refused the credentials" in done.stderr
    assert video.read_bytes() == b"video bytes"


def test_sync_run_needs_enable_and_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_", "ENABLE_R2"))}
    missing = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "set R2_ENDPOINT" in missing.stderr
    env.update({"R2_ENDPOINT": "http://127.0.0.1:9", "R2_ACCESS_KEY_ID": "k", "R2_SECRET_ACCESS_KEY": "s"})
    disabled = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert disabled.returncode == 1 and "ENABLE_R2_SYNC" in disabled.stderr


def test_sync_run_writes_a_heartbeat_and_stops_on_sigterm(rclone_server: RcloneS3, tmp_path: Path) -> None:
    from zr4.image.sync import daemon_is_alive, settings_from_env

    env = _env(rclone_server, tmp_path, ENABLE_R2_SYNC="true")
    settings = settings_from_env(env)
    assert not daemon_is_alive(settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not daemon_is_alive(settings, max_age_s=10) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon_is_alive(settings, max_age_s=10)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "watching" in output and "(inotify)" in output and "stopped" in output
    _assert_no_credentials(output, env)
    assert not daemon_is_alive(settings, max_age_s=10)  # the process is gone


_MODULES_RUNNER = """
import json, sys
from zr4.cli.main import run
try:
    run(sys.argv[1:])
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""


def test_sync_once_without_options_skips_typer_and_prints_what_the_typer_path_prints(
    rclone_server: RcloneS3, tmp_path: Path
) -> None:
    """`zr4 sync once` (as a job's end runs it) goes straight to the sync; with an option it goes through
    typer. Both upload the same files and print the same summary; only the fast one leaves typer out."""
    runs = {}
    for name, args in (("fast", ("sync", "once")), ("typer", ("sync", "once", "--wait", "60"))):
        root = tmp_path / name
        env = _env(rclone_server, root, R2_PREFIX=name, R2_SYNC_STABLE_SECONDS="0")
        for index in range(3):
            (root / "output" / f"clip_{index}.mp4").write_bytes(os.urandom(1000 + index))
        done = subprocess.run(
            [sys.executable, "-c", _MODULES_RUNNER, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        _assert_no_credentials(done.stdout + done.stderr, env)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[name] = (done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1])))
        listed = rclone_server.client().list_objects_v2(Bucket="runpod", Prefix=f"{name}/")
        assert sum(key["Key"].endswith(".mp4") for key in listed["Contents"]) == 3
    for name, (stdout, _modules) in runs.items():
        summary = stdout.splitlines()[0]
        assert summary.startswith("uploaded 3 file(s) (0.0 MB), 0 already in the bucket, in "), (name, stdout)
    assert "typer" not in runs["fast"][1] and "pydantic" not in runs["fast"][1]
    assert "typer" in runs["typer"][1]


def test_sync_errors_read_the_same_on_the_fast_and_the_typer_path(tmp_path: Path) -> None:
    """No endpoint configured: one line, exit 1, whichever path parsed the command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R2_", "ENABLE_R2"))}
    env["R2_SYNC_OUTPUT_DIR"] = str(tmp_path)
    outputs = {}
    for args in (("sync", "once"), ("sync", "once", "--wait", "60"), ("sync", "run")):
        done = subprocess.run(
            [sys.executable, "-m", "zr4.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
        )
        outputs[args] = (done.returncode, done.stdout, done.stderr)
    fast, typer_path, daemon = outputs.values()
    assert fast == typer_path
    assert fast[0] == 1 and fast[1] == "" and fast[2].startswith("error: sync settings: set R2_ENDPOINT")
    assert fast[2].count("\n") == 1
    assert daemon == fast  # the daemon reads the same settings first
