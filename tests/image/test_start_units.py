"""The pieces of `zr4 start`: ComfyUI's command line, extra model paths, the supervisor, health."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import typer
import yaml
from typer.testing import CliRunner

from support.s3_server import free_port
from zr4.cli.start import health, start
from zr4.core.comfy_flags import flag_set, merge_args
from zr4.core.comfy_launch import OWNED_FLAGS, comfyui_command, exit_code_of
from zr4.core.model_files.selection import select_entries, target_for
from zr4.core.model_files.settings import ModelSettings
from zr4.core.workflow.install import MissingModelFile, install_workflow, workflow_spec_for_boot
from zr4.image.extra_paths import needs_extra_paths, sync_extra_model_paths
from zr4.image.health import check_comfyui, check_health, check_sync
from zr4.image.models import load_manifest
from zr4.image.start import StartConfig, StartError
from zr4.image.supervise import Supervisor, next_delay
from zr4.profile import load_profile

SUPPORT = Path(__file__).resolve().parents[1] / "support"

# --- ComfyUI's command line ---------------------------------------------------------------------


def test_fixed_part_then_the_flags_of_step_1() -> None:
    plan = comfyui_command(
        python="/opt/venv/bin/python",
        comfyui_dir=Path("/opt/ComfyUI"),
        output_dir=Path("/workspace/outputs"),
        flags=["--lowvram", "--use-pytorch-cross-attention", "--preview-method", "auto"],
    )
    assert plan.argv == (
        "/opt/venv/bin/python", "/opt/ComfyUI/main.py",
        "--listen", "0.0.0.0", "--port", "8188", "--output-directory", "/workspace/outputs",
        "--lowvram", "--use-pytorch-cross-attention", "--preview-method", "auto",
    )  # fmt: skip
    assert plan.cwd == Path("/opt/ComfyUI")


def test_user_flags_comfyui_would_reject_are_left_out_with_a_reason() -> None:
    final, user, dropped = merge_args(
        ["--lowvram"], ["--medvram", "--port", "9000", "--output-directory", "/x", "--highvram"],
        flag_set("v0.7.0"), owned=OWNED_FLAGS,
    )  # fmt: skip
    reasons = {rejected.tokens[0]: rejected.reason for rejected in user.rejected}
    assert reasons["--medvram"] == "ComfyUI v0.7.0 has no --medvram flag"
    assert reasons["--port"] == "--port is set by zr4 itself"
    assert reasons["--output-directory"] == "--output-directory is set by zr4 itself"
    # The user's VRAM mode replaces the planned one (ComfyUI allows one of the group).
    assert dropped == ("--lowvram",) and final == ("--highvram",)


@pytest.mark.parametrize(("returncode", "code"), [(0, 0), (3, 3), (-15, 143), (-9, 137)])
def test_exit_code_of(returncode: int, code: int) -> None:
    assert exit_code_of(returncode) == code


def test_bad_port_is_a_start_error() -> None:
    with pytest.raises(StartError, match="COMFYUI_PORT='http' is not a port number"):
        StartConfig.from_env({"COMFYUI_PORT": "http"})
    config = StartConfig.from_env({"SKIP_MODEL_DOWNLOAD": "yes", "ZR4_MODEL_MANIFEST": "/m.yaml"})
    assert (config.port, config.skip_model_download, config.enable_r2_sync) == (8188, True, False)
    assert config.models_dir == Path("/workspace/models") and config.manifest_path == Path("/m.yaml")


# --- extra_model_paths.yaml ---------------------------------------------------------------------


def test_extra_model_paths_written_kept_and_removed(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    volume = tmp_path / "workspace" / "models"
    assert needs_extra_paths(volume, comfy)
    assert not needs_extra_paths(comfy / "models", comfy)
    assert not needs_extra_paths(comfy / "models" / "sub", comfy)

    message = sync_extra_model_paths(comfy, volume, ["vae", "diffusion_models"])
    assert message == f"wrote {comfy / 'extra_model_paths.yaml'} -> {volume}"
    document = yaml.safe_load((comfy / "extra_model_paths.yaml").read_text())
    assert document == {
        "zr4": {"base_path": str(volume), "diffusion_models": "diffusion_models", "vae": "vae"}
    }
    assert "already points" in sync_extra_model_paths(comfy, volume, ["vae", "diffusion_models"])

    # Models moved into ComfyUI's own folder: zr4's file goes.
    assert "removed" in sync_extra_model_paths(comfy, comfy / "models", ["vae"])
    assert not (comfy / "extra_model_paths.yaml").exists()

    # A file the user wrote is never touched.
    (comfy / "extra_model_paths.yaml").write_text("mine:\n  base_path: /data\n")
    assert "kept the user's" in sync_extra_model_paths(comfy, volume, ["vae"])
    assert (comfy / "extra_model_paths.yaml").read_text() == "mine:\n  base_path: /data\n"


# --- the boot's workflow ------------------------------------------------------------------------


def test_workflow_names_the_resolved_files(tmp_path: Path) -> None:
    profile = load_profile("4080super")
    manifest = load_manifest()
    settings = ModelSettings(variant="gguf", pose_backends=frozenset({"onnx", "mmpose"}))
    targets = []
    for entry in select_entries(manifest, settings):
        if entry.pick == "gguf_level":
            targets.append(target_for(entry, path="Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf"))
        else:
            targets.append(target_for(entry))
    data = profile.model_dump(mode="json")
    spec = workflow_spec_for_boot(data, targets, "gguf", block_swap=20)
    assert spec.diffusion_model_file == "Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf"
    assert spec.yolo_file == "yolov10m.onnx"  # the ONNX detector, not the mmpose backend's YOLOX
    assert spec.block_swap == 20 and spec.lora_file is not None
    path = install_workflow(tmp_path, spec)
    assert path == tmp_path / "user" / "default" / "workflows" / "steadydancer-gguf.json"
    installed = json.loads(path.read_text())  # the UI format, which the Workflows sidebar opens
    assert installed["version"] == 0.4
    assert any(node["type"] == "WanVideoBlockSwap" for node in installed["nodes"])
    with pytest.raises(MissingModelFile, match="no vae file"):
        workflow_spec_for_boot(data, [t for t in targets if t.role != "vae"], "gguf", block_swap=20)


# --- the supervisor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "uptime", "delay"),
    [(1.0, 0.5, 2.0), (2.0, 0.5, 4.0), (16.0, 1.0, 30.0), (30.0, 1.0, 30.0), (30.0, 60.0, 1.0)],
)
def test_back_off(previous: float, uptime: float, delay: float) -> None:
    assert next_delay(previous, uptime, first_s=1.0, max_s=30.0, stable_s=10.0) == delay


def test_a_dying_child_is_restarted_and_a_stubborn_one_killed(tmp_path: Path) -> None:
    lines: list[str] = []
    counter = tmp_path / "starts"
    script = (
        "import pathlib, signal, sys, time\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "if n < 2: sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor(
        "child", [sys.executable, "-c", script], {}, lines.append, first_delay_s=0.05, max_delay_s=0.2
    )
    supervisor.start()
    deadline = time.monotonic() + 30
    while supervisor.starts < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervisor.starts == 3 and supervisor.exits == [7, 7]
    assert lines[0].startswith("child exited with code 7 after ") and "restarting in" in lines[0]
    time.sleep(0.3)  # let the third one install its SIGTERM handler
    code = supervisor.stop(timeout_s=0.5)
    assert code == -signal.SIGKILL
    assert any("did not stop within" in line for line in lines)
    assert supervisor.restarts == 2


# --- health -------------------------------------------------------------------------------------


class _Stats(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"system": {"comfyui_version": "0.7.0"}}).encode()
        self.send_response(200 if self.path == "/system_stats" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_health_of_comfyui_and_sync() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert check_comfyui(port) == check_comfyui(port)
        ok = check_comfyui(port)
        assert ok.ok and ok.detail == f"answers on port {port} (ComfyUI 0.7.0)"
        closed = check_comfyui(free_port(), timeout_s=1)
        assert not closed.ok and "does not answer" in closed.detail
        assert check_sync({"ENABLE_R2_SYNC": "false"}) is None
        # Enabled (the compose and RunPod default) but nothing configured: outputs stay on the volume.
        unconfigured = check_sync({"ENABLE_R2_SYNC": "true", "R2_ENDPOINT": ""})
        assert unconfigured is not None and unconfigured.ok and "not configured" in unconfigured.detail
        checks = check_health({"COMFYUI_PORT": str(port), "ENABLE_R2_SYNC": "true"})
        assert [check.ok for check in checks] == [True, True]
        # Half configured (credentials, no endpoint) is a mistake worth reporting.
        misconfigured = check_sync({"ENABLE_R2_SYNC": "true", "R2_ACCESS_KEY_ID": "k"})
        assert misconfigured is not None and not misconfigured.ok and "R2_ENDPOINT" in misconfigured.detail
        checks = check_health({"COMFYUI_PORT": str(port), "ENABLE_R2_SYNC": "false"})
        assert [check.name for check in checks] == ["comfyui"] and checks[0].ok

        app = typer.Typer()
        app.command()(health)
        app.command("noop")(lambda: None)
        result = CliRunner().invoke(
            app, ["health"], env={"COMFYUI_PORT": str(port), "ENABLE_R2_SYNC": "false"}
        )
        assert result.exit_code == 0 and result.output.startswith("ok   comfyui: answers on port")
        result = CliRunner().invoke(app, ["health"], env={"COMFYUI_PORT": str(free_port())})
        assert result.exit_code == 1 and result.output.startswith("FAIL comfyui:")
    finally:
        server.shutdown()
        server.server_close()


# --- `zr4 start` as the CLI registers it ---------------------------------------------------------


def test_start_command_passes_extra_arguments_to_comfyui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    shutil.copy(SUPPORT / "fake_comfyui.py", comfy / "main.py")
    profile = load_profile("4080super", ["features.pose_backend=onnx"])
    (tmp_path / "profile.json").write_text(profile.model_dump_json())
    env = {
        "COMFYUI_DIR": str(comfy),
        "COMFYUI_PYTHON": sys.executable,
        "COMFYUI_PORT": str(free_port()),
        # A free port may sit above 55535, where the default backend port (public + 10000) overflows.
        "ZR4_COMFYUI_BACKEND_PORT": str(free_port()),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MODELS_DIR": str(tmp_path / "models"),
        "ZR4_AUTH_DIR": str(tmp_path / "auth"),
        "ZR4_BOOT_STATUS": str(tmp_path / "boot" / "status.json"),
        "ZR4_PROFILE": str(tmp_path / "profile.json"),
        "SKIP_MODEL_DOWNLOAD": "true",
        "ENABLE_R2_SYNC": "false",
        "FAKE_COMFYUI_STATE": str(tmp_path / "state"),
        "FAKE_COMFYUI_EXIT_AFTER": "0.2",
        "FAKE_COMFYUI_EXIT_CODE": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = typer.Typer()
    app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(start)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["start", "--preview-method", "taesd"])
    assert result.exit_code == 5, result.output
    argv = json.loads((tmp_path / "state" / "argv.json").read_text())["argv"]
    assert argv[-2:] == ["--preview-method", "taesd"]
    # decided with the plan in step 1, whose summary shows them
    assert f"ComfyUI flags: {' '.join(argv[6:])}\n" in result.output


def start_in(tmp_path: Path, comfyui_dir: Path, comfyui_python: Path) -> subprocess.CompletedProcess[str]:
    """`python -m zr4.image.start` with every folder it may write under ``tmp_path / "volume"``."""
    profile = load_profile("4080super", ["features.pose_backend=onnx"])
    (tmp_path / "profile.json").write_text(profile.model_dump_json())
    volume = tmp_path / "volume"
    env = {
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        "PATH": "/usr/bin:/bin",
        "COMFYUI_DIR": str(comfyui_dir),
        "COMFYUI_PYTHON": str(comfyui_python),
        "COMFYUI_PORT": str(free_port()),
        "ZR4_COMFYUI_BACKEND_PORT": str(free_port()),
        "OUTPUT_DIR": str(volume / "outputs"),
        "MODELS_DIR": str(volume / "models"),
        "ZR4_AUTH_DIR": str(volume / ".zr4" / "auth"),
        "ZR4_BOOT_STATUS": str(tmp_path / "boot" / "status.json"),
        "R2_SYNC_STATE_DIR": str(volume / ".zr4" / "sync"),
        "ZR4_PROFILE": str(tmp_path / "profile.json"),
        "SKIP_MODEL_DOWNLOAD": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "zr4.image.start"], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", ["main.py", "python"])
def test_no_comfyui_or_interpreter_stops_the_start_before_it_writes_anything(
    tmp_path: Path, missing: str
) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    if missing != "main.py":
        shutil.copy(SUPPORT / "fake_comfyui.py", comfy / "main.py")
    python = tmp_path / "no-python" if missing == "python" else Path(sys.executable)
    result = start_in(tmp_path, comfy, python)
    assert result.returncode == 1, result.stderr
    expected = {
        "main.py": f"error: zr4 start: no ComfyUI in {comfy}: {comfy / 'main.py'} is missing (COMFYUI_DIR)",
        "python": f"error: zr4 start: cannot run {python} (COMFYUI_PYTHON): no such executable file",
    }[missing]
    assert result.stderr.strip() == expected
    # No token, models, outputs or sync state on the volume; nothing added to ComfyUI's folder.
    assert not (tmp_path / "volume").exists()
    assert sorted(p.name for p in comfy.iterdir()) == ([] if missing == "main.py" else ["main.py"])


def test_an_interpreter_that_cannot_be_run_stops_at_step_5(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    shutil.copy(SUPPORT / "fake_comfyui.py", comfy / "main.py")
    python = tmp_path / "python"
    python.write_text("not a program\n")
    python.chmod(0o755)  # found and executable, but the kernel cannot run it
    result = start_in(tmp_path, comfy, python)
    assert result.returncode == 1
    assert "error: zr4 start stopped at step 5 (ComfyUI)" in result.stderr
    assert result.stderr.strip().endswith(f"cannot run {python}: Exec format error")


def test_a_volume_the_image_user_cannot_write_stops_the_start_with_the_fix() -> None:
    from zr4.image.start import StartReport, _step

    report = StartReport()
    with pytest.raises(StartError) as caught, _step(report, 2, "models", lambda line: None):
        raise PermissionError(13, "Permission denied", "/workspace/models")
    message = str(caught.value)
    assert "step 2 (models)" in message and "cannot write /workspace/models" in message
    assert f"writable by uid {os.getuid()}" in message
    assert "models" not in report.steps  # a failed step records no duration
