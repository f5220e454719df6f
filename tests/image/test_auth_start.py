"""`zr4 start` with authentication: on by default, the token kept on the volume, ComfyUI on loopback.

The whole start runs in its own process (as start.sh execs it) with the stand-in ComfyUI; the
proxy is the real one `zr4 start` spawns.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from image.test_start_sequence import Pod, heartbeat_pid, stop, sync_env, wait_for
from support.hub_server import FakeHub
from support.s3_server import RcloneS3
from zr4.core.auth_settings import TOKEN_PREFIX


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    server = RcloneS3(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def status_of(url: str, headers: dict[str, str] | None = None) -> int | str:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError as error:
        return f"unreachable: {getattr(error, 'reason', error)}"


def outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_auth_is_on_by_default_and_comfyui_is_loopback_only(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    process = pod.start(SKIP_MODEL_DOWNLOAD="true")
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start")
    public = f"http://127.0.0.1:{pod.port}/system_stats"
    wait_for(lambda: status_of(public) == 401, 30, "the proxy to refuse a request without a token")
    token_file = pod.workspace / ".zr4" / "auth" / "token"
    token = token_file.read_text().strip()
    try:
        assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        assert status_of(public, {"Authorization": f"Bearer {token}"}) == 200
        health = pod.health()
        assert health.returncode == 0, health.stdout
        argv = record["argv"]  # type: ignore[index]
        assert argv[argv.index("--listen") + 1] == "127.0.0.1"
        assert argv[argv.index("--port") + 1] == str(pod.backend_port)
        address = outside_address()
        if address is not None:  # the public port answers on every interface, ComfyUI's only on loopback
            assert status_of(f"http://{address}:{pod.port}/system_stats") == 401
            assert str(status_of(f"http://{address}:{pod.backend_port}/system_stats")).startswith(
                "unreachable"
            )
        # Health without a way to the token fails, and says why.
        blind = pod.health(ZR4_AUTH_DIR=str(tmp_path / "elsewhere"))
        assert blind.returncode == 1 and "HTTP 401" in blind.stdout
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert f"generated a token and saved it to {token_file}" in output
    assert token not in output and token[len(TOKEN_PREFIX) :] not in output

    # A restart keeps the token and says where it comes from.
    second = pod.start(SKIP_MODEL_DOWNLOAD="true")
    wait_for(lambda: status_of(public) == 401, 60, "the proxy after a restart")
    try:
        assert status_of(public, {"Authorization": f"Bearer {token}"}) == 200
    finally:
        output = stop(second)
    assert token_file.read_text().strip() == token
    assert f"token from {token_file}" in output and "generated" not in output


def test_token_from_the_environment_and_placeholder_ignored(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    chosen = "my-own-token-0123456789"
    process = pod.start(SKIP_MODEL_DOWNLOAD="true", ZR4_AUTH_TOKEN=chosen)
    public = f"http://127.0.0.1:{pod.port}/system_stats"
    wait_for(lambda: status_of(public) == 401, 60, "the proxy")
    try:
        assert status_of(public, {"Authorization": f"Bearer {chosen}"}) == 200
        assert pod.health(ZR4_AUTH_TOKEN=chosen).returncode == 0
    finally:
        output = stop(process)
    assert "token from ZR4_AUTH_TOKEN" in output and chosen not in output
    assert not (pod.workspace / ".zr4" / "auth" / "token").exists()

    # RunPod leaves `{{ RUNPOD_SECRET_ZR4_AUTH_TOKEN }}` as is without such a secret: never a token.
    placeholder = "{{ RUNPOD_SECRET_ZR4_AUTH_TOKEN }}"
    process = pod.start(SKIP_MODEL_DOWNLOAD="true", ZR4_AUTH_TOKEN=placeholder)
    wait_for(lambda: status_of(public) == 401, 60, "the proxy")
    try:
        assert status_of(public, {"Authorization": f"Bearer {placeholder}"}) == 401
    finally:
        output = stop(process)
    assert "unfilled template placeholder" in output
    assert (pod.workspace / ".zr4" / "auth" / "token").is_file()


def test_auth_off_warns_and_comfyui_takes_the_public_port(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    process = pod.start(SKIP_MODEL_DOWNLOAD="true", ZR4_AUTH="off")
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start")
    try:
        argv = record["argv"]  # type: ignore[index]
        assert argv[argv.index("--listen") + 1] == "0.0.0.0"
        assert argv[argv.index("--port") + 1] == str(pod.port)
        wait_for(lambda: status_of(f"http://127.0.0.1:{pod.port}/system_stats") == 200, 30, "ComfyUI")
        assert pod.health(ZR4_AUTH="off").returncode == 0
    finally:
        output = stop(process)
    assert f"WARNING: ZR4_AUTH=off: ComfyUI listens on port {pod.port} with NO authentication" in output
    assert not (pod.workspace / ".zr4" / "auth").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ZR4_AUTH": "maybe"}, "error: ZR4_AUTH='maybe' is not understood"),
        ({"ZR4_AUTH_TOKEN": "x7Kq2"}, "error: ZR4_AUTH_TOKEN is too short (5 characters, at least 16)"),
    ],
)
def test_unusable_auth_settings_stop_the_start_in_one_line(
    tmp_path: Path, hub: FakeHub, extra: dict[str, str], message: str
) -> None:
    pod = Pod(tmp_path, hub)
    result = subprocess.run(
        [sys.executable, "-m", "zr4.image.start"],
        env={**pod.env, **extra, "SKIP_MODEL_DOWNLOAD": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert pod.comfyui_record() is None


def environment_of(pid: int) -> dict[str, str]:
    """What a running process was started with (/proc/PID/environ, proc(5))."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def children_of(pid: int) -> dict[int, str]:
    """pid -> command line of each process whose parent is ``pid`` (proc(5): stat's 4th field)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat_fields[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_only_the_proxy_and_the_clients_get_the_token(tmp_path: Path, hub: FakeHub, s3: RcloneS3) -> None:
    """ComfyUI runs every custom node and the sync daemon talks to R2: neither needs the token."""
    pod = Pod(tmp_path, hub)
    chosen = "my-own-token-0123456789"
    process = pod.start(**sync_env(pod, s3), ZR4_AUTH_TOKEN=chosen)
    try:
        record = wait_for(pod.comfyui_record, 60, "ComfyUI to start")
        sync_pid = wait_for(lambda: heartbeat_pid(pod), 30, "the sync daemon")
        proxy_pid = wait_for(
            lambda: next(
                (p for p, cmd in children_of(process.pid).items() if "zr4.image.auth.proxy" in cmd), 0
            ),
            30,
            "the auth proxy",
        )
        holds_token = {
            "ComfyUI": environment_of(int(record["pid"])).get("ZR4_AUTH_TOKEN"),  # type: ignore[call-overload]
            "sync daemon": environment_of(int(sync_pid)).get("ZR4_AUTH_TOKEN"),  # type: ignore[call-overload]
            "proxy": environment_of(int(proxy_pid)).get("ZR4_AUTH_TOKEN"),  # type: ignore[call-overload]
        }
        health = pod.health(ZR4_AUTH_TOKEN=chosen)  # zr4 health, as the image's HEALTHCHECK runs it
    finally:
        output = stop(process)
    assert holds_token == {"ComfyUI": None, "sync daemon": None, "proxy": chosen}
    assert health.returncode == 0, health.stdout
    assert chosen not in output
