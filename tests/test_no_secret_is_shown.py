"""No command shows a secret: each one a user can run without a GPU, run with every credential set.

Every variable zr4 (or a library it runs) reads a credential from holds a distinctive value, and the
URLs carry a user name and password. Each command's stdout and stderr, and every file it writes
under the test's folder (heartbeat, journals, sidecars, JSON reports, a rendered context), must
contain none of them. The servers are real: ``rclone serve s3`` for the sync, the local Hub for the
model download; the dead endpoints are closed ports on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fake_comfyui import PNG_BYTES
from support.hub_server import FakeHub, deterministic_bytes
from support.s3_server import RcloneS3, free_port

SECRETS = {
    "HF_TOKEN": "hf_zr4LeakCheckHubToken01",
    "HUGGING_FACE_HUB_TOKEN": "hf_zr4LeakCheckLegacyToken02",
    "ZR4_AUTH_TOKEN": "zr4_LeakCheckAuthToken03abcdef",
    "R2_ACCESS_KEY_ID": "zr4LeakCheckKeyId04",
    "R2_SECRET_ACCESS_KEY": "zr4LeakCheckSecretKey05",
    "AWS_ACCESS_KEY_ID": "zr4LeakCheckAwsKeyId06",
    "AWS_SECRET_ACCESS_KEY": "zr4LeakCheckAwsSecret07",
    "AWS_SESSION_TOKEN": "zr4LeakCheckAwsSession08",
    "RUNPOD_AI_API_KEY": "zr4LeakCheckRunpodKey09",
    "RUNPOD_API_KEY": "zr4LeakCheckRunpodApi10",
}
ENDPOINT_USER, ENDPOINT_PASSWORD = "zr4leakuser11", "zr4LeakCheckEndpointPass12"
HUB_USER, HUB_PASSWORD = "zr4leakhubuser13", "zr4LeakCheckHubPass14"
COMFY_USER, COMFY_PASSWORD = "zr4leakcomfyuser15", "zr4LeakCheckComfyPass16"
WRONG_SECRET = "zr4LeakCheckWrongSecret17"
FORBIDDEN = (
    *SECRETS.values(),
    ENDPOINT_USER,
    ENDPOINT_PASSWORD,
    HUB_USER,
    HUB_PASSWORD,
    COMFY_USER,
    COMFY_PASSWORD,
    WRONG_SECRET,
)
MP4_BYTES = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 200
_OURS = ("AWS_", "R2_", "ENABLE_", "HF_", "ZR4_", "STEADYDANCER_", "COMFYUI_", "RUNPOD_", "HUGGING")
_OURS_EXACT = {"MODELS_DIR", "OUTPUT_DIR", "DRY_RUN", "SKIP_MODEL_DOWNLOAD", "GPU_MEMORY_MODE", "GPU_TIER"}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    """A real S3 server whose key pair is the secret pair the commands are given."""
    root = tmp_path_factory.mktemp("s3")
    server = RcloneS3(
        root / "data", access_key=SECRETS["R2_ACCESS_KEY_ID"], secret_key=SECRETS["R2_SECRET_ACCESS_KEY"]
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_repo("test/models", token=SECRETS["HF_TOKEN"])
        server.add_file("test/models", "vae.safetensors", deterministic_bytes(4096, "vae"))
        yield server


class World:
    """The folders and environment of one command: everything it may write is under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs = root / "inputs"  # files the test writes: not scanned
        self.inputs.mkdir()
        self.work = root / "work"  # everything the command writes
        self.work.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS) and k not in _OURS_EXACT}
        self.env.update(SECRETS)
        self.env.update(
            {
                "HOME": str(self.work / "home"),
                "HF_HOME": str(self.work / "hf-home"),
                "XDG_CACHE_HOME": str(self.work / "cache"),
                "TMPDIR": str(self._folder("tmp")),
                "MODELS_DIR": str(self.work / "models"),
                "OUTPUT_DIR": str(self._folder("outputs")),
                "R2_SYNC_STATE_DIR": str(self.work / "sync-state"),
                "R2_SYNC_STABLE_SECONDS": "0.2",
                "R2_SYNC_MAX_ATTEMPTS": "1",
                "R2_SYNC_PERMANENT_RETRY_SECONDS": "1",
                "ZR4_AUTH_DIR": str(self.work / "auth"),
                "COMFYUI_DIR": str(self.work / "comfyui"),
                "COMFYUI_PYTHON": str(self.work / "no-such-python"),
                "COMFYUI_PORT": str(free_port()),
                "ZR4_PROFILE": str(self._profile()),
                "RUNPOD_POD_ID": "leak-check",
                "HF_ENDPOINT": f"http://{HUB_USER}:{HUB_PASSWORD}@127.0.0.1:{free_port()}",
                "R2_ENDPOINT": f"https://{ENDPOINT_USER}:{ENDPOINT_PASSWORD}@127.0.0.1:{free_port()}",
            }
        )
        (self.work / "outputs" / "video_00001_.mp4").write_bytes(MP4_BYTES)

    def _folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _profile(self) -> Path:
        from zr4.profile import load_profile

        path = self.inputs / "profile.json"
        path.write_text(json.dumps(load_profile("4080super").model_dump(mode="json")))
        return path

    def inputs_file(self, name: str, data: bytes) -> Path:
        path = self.inputs / name
        path.write_bytes(data)
        return path


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def assert_nothing_shown(world: World, *outputs: str) -> None:
    """No secret in the outputs, nor in any file the command wrote."""
    for text in outputs:
        for value in FORBIDDEN:
            assert value not in text, f"{value} was shown:\n{text}"
    for path in sorted(world.work.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for value in FORBIDDEN:
                assert value.encode() not in data, f"{value} was written to {path}"


def zr4(world: World, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", *args],
        env={**world.env, **env},
        cwd=world.work,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _media(world: World) -> list[str]:
    image = world.inputs_file("me.png", PNG_BYTES)
    video = world.inputs_file("moves.mp4", MP4_BYTES)
    return ["--image", str(image), "--video", str(video)]


# (id, arguments, extra environment); "{inputs}" and "{work}" stand for the World's folders.
COMMANDS: list[tuple[str, list[str], dict[str, str]]] = [
    ("help", ["--help"], {}),
    ("version", ["version"], {}),
    ("profiles", ["profiles"], {}),
    ("show", ["show", "4080super"], {}),
    ("plan", ["plan"], {}),
    ("plan-json", ["plan", "--json"], {}),
    ("plan-bad-option", ["plan", "--gguf-level", "Q9"], {}),
    ("tune", ["tune", "--json", "--write-json", "{work}/tune.json"], {}),
    ("tune-env", ["tune", "--env"], {}),
    ("schema-check", ["schema", "--check"], {}),
    ("render", ["render", "--out", "{work}/context"], {}),
    ("validate", ["validate", "--profile", "4080super", "--no-build"], {}),
    ("build-dry-run", ["build", "--dry-run", "--out", "{work}/build-context"], {}),
    ("health", ["health", "--timeout", "1"], {"ENABLE_R2_SYNC": "true"}),
    ("doctor", ["doctor", "--build-time"], {}),
    ("start", ["start"], {"SKIP_MODEL_DOWNLOAD": "true", "ENABLE_R2_SYNC": "true"}),
    ("start-no-sync", ["start"], {"SKIP_MODEL_DOWNLOAD": "true"}),
    ("models-plan", ["models", "plan"], {}),
    ("models-download-dead", ["models", "download", "--retries", "1"], {}),
    ("sync-test-endpoint-credentials", ["sync", "test"], {}),
    ("sync-once-endpoint-credentials", ["sync", "once", "--wait", "1"], {}),
    ("sync-run-endpoint-credentials", ["sync", "run"], {"ENABLE_R2_SYNC": "true"}),
    ("sync-test-dead", ["sync", "test"], {"R2_ENDPOINT": "dead"}),
    ("sync-once-dead", ["sync", "once", "--wait", "1"], {"R2_ENDPOINT": "dead"}),
    ("dance-dead", ["dance", "{media}", "--comfyui", "dead"], {}),
    ("dance-dead-json", ["dance", "{media}", "--comfyui", "dead", "--json"], {}),
    (
        "dance-url-credentials",
        ["dance", "{media}", "--comfyui", f"http://{COMFY_USER}:{COMFY_PASSWORD}@127.0.0.1:9"],
        {},
    ),
    (
        "dance-env-credentials",
        ["dance", "{media}", "--json"],
        {"ZR4_COMFYUI_URLS": f"http://{COMFY_USER}:{COMFY_PASSWORD}@127.0.0.1:9"},
    ),
]


def _expand(world: World, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    expanded: list[str] = []
    for arg in args:
        if arg == "{media}":
            expanded += _media(world)
        elif arg == "dead":
            expanded.append(dead_url())
        else:
            expanded.append(arg.replace("{work}", str(world.work)))
    return expanded, {k: dead_url() if v == "dead" else v for k, v in env.items()}


@pytest.mark.parametrize(("name", "args", "env"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_shows_no_secret(world: World, name: str, args: list[str], env: dict[str, str]) -> None:
    argv, extra = _expand(world, args, env)
    done = zr4(world, *argv, timeout=60, **extra)
    assert_nothing_shown(world, done.stdout, done.stderr)
    if name == "sync-test-endpoint-credentials":  # the reported case: the endpoint is named, masked
        port = world.env["R2_ENDPOINT"].rsplit(":", 1)[1]
        assert f"R2_ENDPOINT='https://***@127.0.0.1:{port}' holds credentials" in done.stderr


def test_sync_against_a_real_server_shows_no_secret(world: World, s3: RcloneS3) -> None:
    """The keys work: test, one pass with an upload, and the JSON the daemon leaves."""
    env = {"R2_ENDPOINT": s3.endpoint, "R2_PREFIX": "leak-check"}
    probe = zr4(world, "sync", "test", **env)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    once = zr4(world, "sync", "once", "--wait", "5", **env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert once.stdout.startswith("uploaded 1 file(s)")
    assert_nothing_shown(world, probe.stdout, probe.stderr, once.stdout, once.stderr)


@pytest.mark.parametrize("endpoint", ["server", "dead"])
def test_sync_daemon_heartbeat_and_log_show_no_secret(world: World, s3: RcloneS3, endpoint: str) -> None:
    """A daemon whose uploads fail (a wrong secret, or nobody there) records the error in its
    heartbeat and its log: neither holds a secret."""
    env = {
        **world.env,
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": s3.endpoint if endpoint == "server" else dead_url(),
        "R2_SECRET_ACCESS_KEY": WRONG_SECRET,
        "R2_SYNC_POLL_SECONDS": "0.1",
    }
    heartbeat = world.work / "sync-state" / "heartbeat.json"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
        env=env,
        cwd=world.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        beat: dict[str, object] = {}
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                beat = json.loads(heartbeat.read_text())
            except (OSError, ValueError):
                beat = {}
            if beat.get("last_error"):
                break
            time.sleep(0.2)
        assert beat.get("last_error"), f"no error recorded in the heartbeat: {beat}"
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            out, err = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            out, err = daemon.communicate()
    assert_nothing_shown(world, out, err)


def test_model_download_from_a_hub_that_needs_the_token_shows_no_secret(world: World, hub: FakeHub) -> None:
    manifest = world.inputs_file(
        "models.yaml",
        (
            b"version: 1\ngguf: {aliases: {q4: Q4_K_M}, default_level: Q4_K_M}\nfiles:\n"
            b"  - id: vae\n    role: test\n    repo: test/models\n    path: vae.safetensors\n    folder: vae\n"
        ),
    )
    done = zr4(world, "models", "download", "--manifest", str(manifest), HF_ENDPOINT=hub.endpoint)
    assert done.returncode == 0, done.stderr
    assert (world.work / "models" / "vae" / "vae.safetensors").is_file()
    plan = zr4(world, "models", "plan", "--manifest", str(manifest), HF_ENDPOINT=hub.endpoint)
    assert_nothing_shown(world, done.stdout, done.stderr, plan.stdout, plan.stderr)
