"""`zr4 models download` under faults: parallel ranges killed with -9, full and read-only volumes.

Real processes against the local Hub (tests/support/hub_server.py); the volumes are real tmpfs
mounts made in a private mount namespace (``unshare``), so no test needs the machine's root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hub_server import FakeHub, deterministic_bytes
from zr4.image.models.download import DownloadOptions, Source, done_spans, download, partial_path
from zr4.image.models.hub import describe_http_failure

REPO = "test/models"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def _env(hub: FakeHub, models: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STEADYDANCER_", "ENABLE_", "DRY_RUN", "MODELS_DIR", "HF_"))
    }
    env.update({"HF_ENDPOINT": hub.endpoint, "MODELS_DIR": str(models)})
    return env


def _manifest(path: Path, names: list[str]) -> Path:
    lines = ["version: 1", "files:"]
    for index, name in enumerate(names):
        lines += [f"  - {{id: f{index}, role: test, repo: {REPO}, path: {name}, folder: diffusion_models}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _big_file(path: Path, size: int) -> Path:
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for index in range(size >> 20):
            handle.write(index.to_bytes(8, "little") + block[8:])
    return path


# --- parallel ranges -----------------------------------------------------------------------------


def test_large_file_comes_over_several_connections_and_verifies(hub: FakeHub, tmp_path: Path) -> None:
    data = deterministic_bytes(6 << 20, "parallel")
    served = hub.add_file(REPO, "p.bin", data)
    dest = tmp_path / "p.bin"
    options = DownloadOptions(
        connections=4, parallel_min_bytes=1 << 20, piece_bytes=1 << 20, chunk_bytes=64 << 10
    )
    url = f"{hub.endpoint}/{REPO}/resolve/main/p.bin"
    result = download(Source(url, {}, len(data), served.sha256), dest, options=options)
    assert dest.read_bytes() == data and result.sha256 == served.sha256
    ranges = {r for method, path, r in hub.requests if method == "GET" and "/blobs/" in path and r}
    assert {f"bytes={i << 20}-{((i + 1) << 20) - 1}" for i in range(5)} <= ranges
    # Each piece is asked for once: a kept-alive connection takes its next piece without a retry.
    blob_gets = [r for method, path, r in hub.requests if method == "GET" and "/blobs/" in path]
    assert len(blob_gets) == 6, blob_gets
    assert hub.served("p.bin") == len(data)
    assert not partial_path(dest).exists()


def test_server_ignoring_range_falls_back_to_one_plain_get(tmp_path: Path) -> None:
    """``python -m http.server`` answers every GET with 200 and the whole file (no Range support)."""
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(3 << 20)
    (root / "f.bin").write_bytes(data)
    import hashlib
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        options = DownloadOptions(connections=4, parallel_min_bytes=1 << 20, piece_bytes=1 << 20, retries=3)
        dest = tmp_path / "out" / "f.bin"
        source = Source(f"http://127.0.0.1:{port}/f.bin", {}, len(data), hashlib.sha256(data).hexdigest())
        download(source, dest, options=options, sleep=lambda _s: None)
        assert dest.read_bytes() == data
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_kill_9_with_several_ranges_in_flight_resumes_from_its_span_log(hub: FakeHub, tmp_path: Path) -> None:
    size = 160 << 20
    source = _big_file(tmp_path / "src.bin", size)
    hub.add_file(REPO, "big.safetensors", file=source)
    models = tmp_path / "models"
    manifest = _manifest(tmp_path / "m.yaml", ["big.safetensors"])
    env = _env(hub, models)
    dest = models / "diffusion_models" / "big.safetensors"
    hub.rate_bytes_per_s = 8 << 20  # per connection: ~4 s for the file over 5 connections
    command = [sys.executable, "-m", "zr4.cli.main", "models", "download", "--manifest", str(manifest)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from zr4.image.models.download import read_sidecar

    deadline = time.monotonic() + 60
    spans: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        record = read_sidecar(dest)
        if record is not None:
            src = Source("", {}, record["size"], record["sha256"], identity=record["identity"])
            spans = done_spans(dest, src)
            if sum(e - s for s, e in spans) >= size * 0.4:
                break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert len(spans) >= 3, f"several ranges in flight at the kill: {spans}"
    hub.wait_idle()
    served_first = hub.served("big.safetensors")
    # What the span log kept through the kill; the bytes still in socket buffers at the kill are
    # the server's count, not the client's loss, and grow with the machine's load, so the resume is
    # measured against the log: it must ask for nothing it kept and lose at most one read per range.
    kept = sum(e - s for s, e in done_spans(dest, src))
    assert kept >= sum(e - s for s, e in spans)
    hub.rate_bytes_per_s = None
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    resumed = hub.served("big.safetensors") - served_first
    assert served_first < size and size - kept <= resumed < size - kept + (1 << 20), (kept, resumed)
    with open(dest, "rb") as got, open(source, "rb") as want:
        while block := want.read(8 << 20):
            assert got.read(len(block)) == block
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.safetensors"]


# --- file-system errors ----------------------------------------------------------------------------


def _in_own_mount(
    models: Path, mount_options: str, command: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with a fresh tmpfs (``mount_options``) at ``models``, in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) (util-linux) to mount a private tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {models}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"needs unprivileged mount namespaces (unshare -rm): {probe.stderr.strip()}")
    script = f'mount -t tmpfs -o {mount_options} tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(models), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


_FILL_WHEN_STARTED = """
import os, sys, threading, time
root = sys.argv[1]

def fill():  # another writer on the same volume takes all the space once the download is under way
    while not any(n.endswith(".partial") and os.path.getsize(os.path.join(d, n)) >= 1 << 20
                  for d, _, names in os.walk(root) for n in names):
        time.sleep(0.01)
    with open(os.path.join(root, "filler"), "wb") as handle:
        try:
            while True:
                handle.write(b"x" * 65536)
                handle.flush()
        except OSError:
            pass

threading.Thread(target=fill, daemon=True).start()
sys.argv = ["zr4", *sys.argv[2:]]
from zr4.cli.main import run
try:
    run()
finally:
    for d, _, names in os.walk(root):
        for n in names:
            size = os.path.getsize(os.path.join(d, n))
            print(f"left: {os.path.relpath(os.path.join(d, n), root)} {size}", file=sys.stderr)
"""


def test_disk_filling_mid_download_is_one_line_and_leaves_no_tmp_files(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file(REPO, "a.bin", deterministic_bytes(6 << 20, "a"))
    hub.rate_bytes_per_s = 2 << 20
    models = tmp_path / "models"
    models.mkdir()
    manifest = _manifest(tmp_path / "m.yaml", ["a.bin"])
    args = ["models", "download", "--manifest", str(manifest), "--margin-mib", "0", "--retries", "2"]
    done = _in_own_mount(
        models, "size=8m", [sys.executable, "-c", _FILL_WHEN_STARTED, str(models), *args], _env(hub, models)
    )
    line = _one_line(done)
    assert "disk is full" in line and "a.bin.partial" in line and "None" not in line
    left = [entry.split()[1] for entry in done.stderr.splitlines() if entry.startswith("left: ")]
    assert not [name for name in left if name.endswith(".tmp")], left
    assert "diffusion_models/a.bin.partial" in left  # kept: the next run resumes it


def test_read_only_volume_is_one_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file(REPO, "a.bin", deterministic_bytes(100_000, "a"))
    models = tmp_path / "models"
    models.mkdir()
    manifest = _manifest(tmp_path / "m.yaml", ["a.bin"])
    command = [sys.executable, "-m", "zr4.cli.main", "models", "download", "--manifest", str(manifest)]
    line = _one_line(_in_own_mount(models, "ro", command, _env(hub, models)))
    assert "read-only" in line and str(models) in line


# --- messages --------------------------------------------------------------------------------------


def test_http_failure_messages_never_print_none() -> None:
    auth = describe_http_failure(401, "org/repo", "main", None, "http://hub")
    assert str(auth).startswith("HTTP 401 for org/repo@main: ") and "None" not in str(auth)
    missing = describe_http_failure(404, "org/repo", "main", None, "http://hub")
    assert "None" not in str(missing) and "org/repo" in str(missing)
    with_path = describe_http_failure(404, "org/repo", "main", "x.bin", "http://hub")
    assert "'x.bin' not found in repository 'org/repo'" in str(with_path)


def test_gated_repository_message_names_the_repository(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, token="secret-token", gated=True)
    hub.add_file(REPO, "a.bin", deterministic_bytes(1000, "a"))
    models = tmp_path / "models"
    manifest = _manifest(tmp_path / "m.yaml", ["a.bin"])
    done = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "models", "download", "--manifest", str(manifest)],
        env=_env(hub, models),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = _one_line(done)
    assert REPO in line and "None" not in line and "HF_TOKEN" in line


def test_each_connection_goes_on_to_its_next_piece_without_a_retry(hub: FakeHub, tmp_path: Path) -> None:
    """A finished range leaves its connection ready for the next one (keep-alive, no back-off)."""
    data = deterministic_bytes(8 << 20, "keepalive")
    served = hub.add_file(REPO, "k.bin", data)
    options = DownloadOptions(connections=2, parallel_min_bytes=1 << 20, piece_bytes=1 << 20)
    lines: list[str] = []
    sleeps: list[float] = []
    url = f"{hub.endpoint}/{REPO}/resolve/main/k.bin"
    download(
        Source(url, {}, len(data), served.sha256),
        tmp_path / "k.bin",
        options=options,
        log=lines.append,
        sleep=sleeps.append,
    )
    assert (tmp_path / "k.bin").read_bytes() == data
    assert lines == [] and sleeps == []
    assert hub.served("k.bin") == len(data)
