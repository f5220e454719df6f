"""The whole `zr4 start` sequence as the container runs it, against real local servers.

`python -m zr4.image.start` runs in its own process (as start.sh execs it), with the stand-in
ComfyUI (tests/support/fake_comfyui.py as ``main.py``), the local Hugging Face Hub
(tests/support/hub_server.py) and a local S3 server (rclone, tests/support/s3_server.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.test_gpu import smi_script
from support.hub_server import FakeHub, deterministic_bytes
from support.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, RcloneS3, free_port_run, s3_client
from zr4.paths import data_dir
from zr4.profile import load_profile

SUPPORT = Path(__file__).resolve().parents[1] / "support"
GGUF_REPO = "MCG-NJU/SteadyDancer-GGUF"
# How MCG-NJU/SteadyDancer-GGUF names its files (test data; zr4 lists the repository).
GGUF_Q4 = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"
FILE_BYTES = 300_000
OUTPUT_NAME = "ComfyUI_00001_.png"


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def manifest_for_tests(path: Path) -> Path:
    """The bundled manifest with sizes and hashes blanked (small test files), Hub entries only."""
    document = yaml.safe_load((data_dir() / "models.yaml").read_text(encoding="utf-8"))
    files = []
    for entry in document["files"]:
        if entry.get("url"):
            continue  # a plain-HTTPS file of the mmpose backend; these tests use the ONNX pose backend
        for key in ("size", "sha256", "sha256_prefix"):
            if key in entry:
                entry[key] = None
        files.append(entry)
    document["files"] = files
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def serve_models(hub: FakeHub, manifest: Path) -> None:
    for entry in yaml.safe_load(manifest.read_text())["files"]:
        if entry.get("repo") and entry.get("path"):
            hub.add_file(entry["repo"], entry["path"], deterministic_bytes(FILE_BYTES, entry["path"]))
    hub.add_file(GGUF_REPO, GGUF_Q4, deterministic_bytes(FILE_BYTES * 2, GGUF_Q4))


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


GPU_ROOM = 4  # the most GPUs a test pod starts ComfyUI on


def container_env(pod: Any, comfyui_python: str, hub: FakeHub) -> dict[str, str]:
    """What the image's start sees for ``pod`` (its folders, ports, profile and manifest, as the
    Dockerfile and the RunPod template set them), with the Hub stand-in, no R2 and no DWPose."""
    return {
        # The zr4 under test, where the suite runs from a source tree (PYTHONPATH=src) without installing it.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        "PATH": os.environ["PATH"],
        "HOME": str(pod.root / "home"),
        "PYTHONUNBUFFERED": "1",
        "COMFYUI_DIR": str(pod.comfyui),
        "COMFYUI_PYTHON": comfyui_python,
        "COMFYUI_PORT": str(pod.port),
        "ZR4_COMFYUI_BACKEND_PORT": str(pod.backend_port),
        "ZR4_AUTH_DIR": str(pod.workspace / ".zr4" / "auth"),
        # The container's temp folder in the image; the pod's own here (tests run side by side).
        "ZR4_BOOT_STATUS": str(pod.root / "tmp" / "zr4-boot" / "status.json"),
        "OUTPUT_DIR": str(pod.outputs),
        "MODELS_DIR": str(pod.models),
        "ZR4_PROFILE": str(pod.profile),
        "ZR4_MODEL_MANIFEST": str(pod.manifest),
        "HF_ENDPOINT": hub.endpoint,
        "ENABLE_DWPOSE": "false",
        "ENABLE_R2_SYNC": "false",
        # The zr4 under test where it is imported from a checkout (PYTHONPATH=src), not installed.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
    }


class Pod:
    """One container's worth of folders and environment on the local disk."""

    def __init__(self, root: Path, hub: FakeHub) -> None:
        self.root = root
        self.comfyui = root / "opt" / "ComfyUI"
        (self.comfyui / "models").mkdir(parents=True)
        (self.comfyui / "custom_nodes").mkdir()
        shutil.copy(SUPPORT / "fake_comfyui.py", self.comfyui / "main.py")
        self.workspace = root / "workspace"
        self.models = self.workspace / "models"
        self.outputs = self.workspace / "outputs"
        self.state = root / "fake-comfyui-state"
        self.manifest = manifest_for_tests(root / "models.yaml")
        serve_models(hub, self.manifest)
        profile = load_profile("4080super", ["features.pose_backend=onnx", "model.variant=gguf"])
        self.profile = root / "profile.json"
        self.profile.write_text(profile.model_dump_json(), encoding="utf-8")
        # Room for a ComfyUI per GPU (port + i) on both sides of the auth proxy (on by default); the
        # backend run must not overlap the public one (start refuses that, as it should).
        self.port = free_port_run(GPU_ROOM)
        self.backend_port = free_port_run(GPU_ROOM, avoid=range(self.port, self.port + GPU_ROOM))
        self.env = container_env(self, sys.executable, hub) | {"FAKE_COMFYUI_STATE": str(self.state)}

    def start(self, **extra: str) -> subprocess.Popen[str]:
        env = {**self.env, **extra}
        return subprocess.Popen(
            [sys.executable, "-m", "zr4.image.start"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def comfyui_record(self) -> dict[str, object] | None:
        path = self.state / "argv.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            return None

    def health(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zr4.image.health"],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )


def stop(process: subprocess.Popen[str], timeout_s: float = 60) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=timeout_s)
    return output


def test_cold_then_warm_boot_writes_paths_and_workflow_and_forwards_sigterm(
    tmp_path: Path, hub: FakeHub
) -> None:
    pod = Pod(tmp_path, hub)
    began = time.time()
    first = pod.start()
    record = wait_for(pod.comfyui_record, 120, "ComfyUI to start (first boot)")
    cold_s = record["started_at"] - began  # type: ignore[index,operator]
    wait_for(lambda: pod.health().returncode == 0, 30, "zr4 health to pass")
    output = stop(first)
    assert first.returncode == 0, output
    assert (pod.state / "sigterm").read_text() == str(int(signal.SIGTERM)), output

    # ComfyUI got the fixed flags (loopback only, behind the auth proxy) and the planner's (--cpu).
    argv = record["argv"]  # type: ignore[index]
    assert argv[:6] == [
        "--listen",
        "127.0.0.1",
        "--port",
        str(pod.backend_port),
        "--output-directory",
        str(pod.outputs),
    ]
    assert "--cpu" in argv
    for number in range(1, 6):
        assert f"step {number}/5" in output
    # Models downloaded from the Hub into MODELS_DIR; ComfyUI pointed at them.
    assert (pod.models / "diffusion_models" / GGUF_Q4).stat().st_size == FILE_BYTES * 2
    extra = yaml.safe_load((pod.comfyui / "extra_model_paths.yaml").read_text())
    assert extra["zr4"]["base_path"] == str(pod.models)
    assert extra["zr4"]["diffusion_models"] == "diffusion_models"
    # The workflow of this boot names the GGUF file the model manager picked.
    workflow = json.loads(
        (pod.comfyui / "user" / "default" / "workflows" / "steadydancer-gguf.json").read_text()
    )
    loaders = [node for node in workflow["nodes"] if node["type"] == "WanVideoModelLoader"]
    assert loaders and loaders[0]["widgets_values"][0] == GGUF_Q4
    assert (pod.outputs / OUTPUT_NAME).is_file()

    # Warm boot: the models are there; everything before ComfyUI takes < 1 s.
    (pod.state / "argv.json").unlink()
    requests_before = len(hub.requests)
    began = time.time()
    second = pod.start()
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start (warm boot)")
    warm_s = record["started_at"] - began  # type: ignore[index,operator]
    output = stop(second)
    assert second.returncode == 0, output
    assert len(hub.requests) == requests_before, "a warm boot must not touch the Hub"
    ready = [line for line in output.splitlines() if "ready to launch" in line]
    assert ready, output
    ready_s = float(ready[0].split("ready to launch ")[1].split(" s")[0])
    print(
        f"\nfirst boot -> ComfyUI spawned+started: {cold_s:.2f} s; warm boot: {warm_s:.2f} s; "
        f"warm boot ready to launch after {ready_s:.2f} s of the start process"
    )
    # How fast that is lives in bench/start_times.py (BENCHMARKS.md), not in a timed test.


def test_comfyui_exit_code_is_the_containers(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    process = pod.start(SKIP_MODEL_DOWNLOAD="true", FAKE_COMFYUI_EXIT_AFTER="0.5", FAKE_COMFYUI_EXIT_CODE="3")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 3, output
    assert "ComfyUI exited with code 3" in output
    assert "SKIP_MODEL_DOWNLOAD=true" in output
    assert hub.requests == []


def test_a_missing_model_is_reported_with_its_reason_and_comfyui_starts_anyway(
    tmp_path: Path, hub: FakeHub
) -> None:
    pod = Pod(tmp_path, hub)
    vae = next(e for e in yaml.safe_load(pod.manifest.read_text())["files"] if e["id"] == "vae-bf16")
    del hub.repos[vae["repo"]].files[vae["path"]]
    process = pod.start()
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start without its models")
    health = wait_for(
        lambda: (h := pod.health()).returncode == 1 and "models" in h.stdout and h, 30, "health"
    )
    output = stop(process)
    assert process.returncode == 0 and record, output
    errors = [line for line in output.splitlines() if line.startswith("[zr4 start] ERROR: models: ")]
    assert len(errors) == 2, output
    assert vae["path"] in errors[0] and vae["repo"] in errors[0]
    assert errors[1].startswith("[zr4 start] ERROR: models: fix: check HF_ENDPOINT and the model settings")
    assert f"FAIL models: download failed: {errors[0].split('ERROR: models: ', 1)[1]}" in health.stdout  # type: ignore[union-attr]
    status = json.loads(Path(pod.env["ZR4_BOOT_STATUS"]).read_text())
    assert status["models"]["state"] == "failed" and status["phase"] in ("failed", "stopped")
    # Without the plan, the image's default workflow stays; ComfyUI still got its paths.
    assert "workflow: no model files resolved" in output
    assert (pod.comfyui / "extra_model_paths.yaml").is_file()


def test_unknown_comfyui_args_are_reported_not_passed(tmp_path: Path, hub: FakeHub) -> None:
    pod = Pod(tmp_path, hub)
    process = pod.start(
        SKIP_MODEL_DOWNLOAD="true", COMFYUI_ARGS="--medvram --preview-method auto --port 1234"
    )
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start")
    output = stop(process)
    assert process.returncode == 0, output
    argv = record["argv"]  # type: ignore[index]
    assert "--medvram" not in argv and "1234" not in argv
    assert argv[argv.index("--preview-method") + 1] == "auto"
    assert "--medvram" in output


ONE_4080S = "0, NVIDIA GeForce RTX 4080 SUPER, 16376, 15890, 8.9, 580.159.04\n"
STEP_1_DONE = "[zr4 start] step 1/5 detect GPU + plan VRAM: done"


@pytest.mark.parametrize(
    ("gpu", "flag", "package"),
    [
        (True, "--use-sage-attention", "sageattention"),
        (True, "--use-flash-attention", "flash_attn"),
        (False, "--use-sage-attention", "sageattention"),
    ],
    ids=["gpu-sage", "gpu-flash", "cpu-sage"],
)
def test_an_attention_flag_comfyui_cannot_run_is_refused_in_step_1_keeping_the_planned_one(
    tmp_path: Path, hub: FakeHub, gpu: bool, flag: str, package: str
) -> None:
    pod = Pod(tmp_path / "pod", hub)
    # ComfyUI's environment: a real venv with neither sageattention nor flash_attn installed.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    extra = {
        "COMFYUI_PYTHON": str(venv / "bin" / "python"),
        "COMFYUI_ARGS": f"{flag} --preview-method auto",
        "SKIP_MODEL_DOWNLOAD": "true",
    }
    if gpu:  # the planner sees a 4080 SUPER (an nvidia-smi stand-in; no NVML here)
        extra["PATH"] = f"{smi_script(tmp_path, ONE_4080S)}:{pod.env['PATH']}"
    process = pod.start(**extra)
    record = wait_for(pod.comfyui_record, 60, "ComfyUI to start")
    output = stop(process)
    assert process.returncode == 0, output
    flags = record["argv"][6:]  # type: ignore[index]  # after --listen, --port, --output-directory
    assert flag not in flags and flags[-2:] == ["--preview-method", "auto"], output
    # The planned attention flag stays; a CPU plan has none (--cpu, then the user's flags).
    if gpu:
        assert "--use-pytorch-cross-attention" in flags and "--cpu" not in flags, output
    else:
        assert flags == ["--cpu", "--preview-method", "auto"], output
    assert "overrides the planned" not in output
    # Decided once, in step 1: its summary is what ComfyUI got, and the refusal is said there.
    lines = output.splitlines()
    summary = [line for line in lines if "ComfyUI flags:" in line]
    assert summary == [f"[zr4 start]   ComfyUI flags: {' '.join(flags)}"], output
    refusals = [line for line in lines if "not passed to ComfyUI" in line]
    step_1 = lines[: next(i for i, line in enumerate(lines) if line.startswith(STEP_1_DONE))]
    assert len(refusals) == 1 and refusals[0] in step_1, output
    assert flag in refusals[0] and repr(package) in refusals[0]


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    server = RcloneS3(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sync_env(pod: Pod, s3: RcloneS3) -> dict[str, str]:
    return {
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": s3.endpoint,
        "R2_ACCESS_KEY_ID": ACCESS_KEY,
        "R2_SECRET_ACCESS_KEY": SECRET_KEY,
        "R2_BUCKET": BUCKET,
        "R2_SYNC_STATE_DIR": str(pod.workspace / ".zr4" / "sync"),
        "R2_SYNC_STABLE_SECONDS": "0.2",
        "R2_SYNC_POLL_SECONDS": "0.1",
        "RUNPOD_POD_ID": "pod-test",
        "SKIP_MODEL_DOWNLOAD": "true",
    }


def bucket_keys(s3: RcloneS3) -> list[str]:
    listing = s3_client(s3.endpoint).list_objects_v2(Bucket=BUCKET)
    return [item["Key"] for item in listing.get("Contents", [])]


def heartbeat_pid(pod: Pod) -> int | None:
    path = pod.workspace / ".zr4" / "sync" / "heartbeat.json"
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_output_reaches_the_bucket_and_a_crashed_daemon_is_restarted(
    tmp_path: Path, hub: FakeHub, s3: RcloneS3
) -> None:
    pod = Pod(tmp_path, hub)
    extra = sync_env(pod, s3)
    process = pod.start(**extra)
    wait_for(pod.comfyui_record, 60, "ComfyUI to start")
    wait_for(lambda: any(k.endswith(OUTPUT_NAME) for k in bucket_keys(s3)), 60, "the output in the bucket")
    first_pid = wait_for(lambda: heartbeat_pid(pod), 30, "a sync heartbeat")
    wait_for(lambda: pod.health(**extra).returncode == 0, 30, "zr4 health with the sync on")

    os.kill(int(first_pid), signal.SIGKILL)  # type: ignore[arg-type]
    unhealthy = pod.health(**extra)
    assert unhealthy.returncode == 1 and "r2-sync" in unhealthy.stdout
    wait_for(lambda: (heartbeat_pid(pod) or first_pid) != first_pid, 60, "a restarted sync daemon")
    # The new daemon uploads what appears after the crash.
    (pod.outputs / "after_crash.mp4").write_bytes(b"\x00" * 4096)
    wait_for(
        lambda: any(k.endswith("after_crash.mp4") for k in bucket_keys(s3)), 60, "the new output uploaded"
    )

    output = stop(process, timeout_s=120)
    assert process.returncode == 0, output
    assert "r2-sync exited with code -9" in output
    assert "final sync pass done" in output


def test_final_pass_uploads_what_comfyui_wrote_last(tmp_path: Path, hub: FakeHub, s3: RcloneS3) -> None:
    pod = Pod(tmp_path, hub)
    extra = sync_env(pod, s3)
    # Outputs written while no daemon runs (e.g. before a crash) are caught by the final pass.
    pod.outputs.mkdir(parents=True)
    (pod.outputs / "left_over.mp4").write_bytes(b"\x01" * 2048)
    process = pod.start(**extra, FAKE_COMFYUI_EXIT_AFTER="0.2")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    keys = bucket_keys(s3)
    assert any(k.endswith("left_over.mp4") for k in keys) and any(k.endswith(OUTPUT_NAME) for k in keys), (
        output
    )
