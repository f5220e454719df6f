"""`zr4 models` as a user runs it: real processes, a real local Hub, kill -9, two containers at once."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hub_server import FakeHub, deterministic_bytes
from zr4.image.models import load_manifest

GGUF_REPO = "MCG-NJU/SteadyDancer-GGUF"
GGUF_Q4 = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"  # the Hub repository's naming (test data)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def zr4(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STEADYDANCER_", "ENABLE_", "DRY_RUN", "MODELS_DIR", "HF_"))
    }
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "models", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def write_manifest(path: Path, files: dict[str, str]) -> Path:
    """A manifest with one Hub file per entry: {repo path: folder}."""
    lines = ["version: 1", "gguf: {aliases: {q4: Q4_K_M}, default_level: Q4_K_M}", "files:"]
    for index, (repo_path, folder) in enumerate(files.items()):
        lines += [
            f"  - id: file-{index}",
            "    role: test",
            "    repo: test/models",
            f"    path: {repo_path}",
            f"    folder: {folder}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dry_run_command_prints_the_plan(hub: FakeHub, tmp_path: Path) -> None:
    for entry in load_manifest().entries:
        if entry.repo and entry.path and entry.size is None:
            hub.add_file(entry.repo, entry.path, deterministic_bytes(1000, entry.path))
    hub.add_file(GGUF_REPO, GGUF_Q4, deterministic_bytes(5000, GGUF_Q4))
    models = tmp_path / "models"
    env = {
        "DRY_RUN": "true",
        "ENABLE_STEADYDANCER": "true",
        "STEADYDANCER_VARIANT": "gguf",
        "STEADYDANCER_GGUF_MODEL": "q4_k_m",
        "HF_ENDPOINT": hub.endpoint,
        "MODELS_DIR": str(models),
    }
    code, out, err = finish(zr4(["download"], env))
    assert code == 0, err
    assert out.startswith(
        "[SteadyDancer] variant gguf Q4_K_M (variant from env STEADYDANCER_VARIANT, "
        "level from env STEADYDANCER_GGUF_MODEL)"
    )
    assert (
        "fetch" in out
        and f"diffusion_models/{GGUF_Q4}" in out
        and "text_encoders/umt5-xxl-enc-bf16.safetensors" in out
    )
    assert "DRY_RUN=true: nothing downloaded" in out
    assert hub.total_served == 0 and not models.exists()
    code, plan_out, _ = finish(zr4(["plan"], {**env, "DRY_RUN": "false"}))
    assert code == 0 and plan_out.splitlines()[:3] == out.splitlines()[:3]


def test_kill_9_at_half_then_rerun_fetches_only_the_rest(hub: FakeHub, tmp_path: Path) -> None:
    size = 48 << 20
    data = deterministic_bytes(size, "big")
    hub.add_file("test/models", "big.safetensors", data)
    manifest = write_manifest(tmp_path / "m.yaml", {"big.safetensors": "diffusion_models"})
    models = tmp_path / "models"
    env = {"HF_ENDPOINT": hub.endpoint, "MODELS_DIR": str(models)}
    hub.rate_bytes_per_s = 16 << 20  # ~3 s for the file: time to kill it in the middle
    partial = models / "diffusion_models" / "big.safetensors.partial"
    process = zr4(["download", "--manifest", str(manifest)], env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < size // 2):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    # What the rerun keeps is what the ranges log records: a buffer written just before the kill but not
    # yet logged is fetched again (the log never claims bytes the file lacks; see models/download.py).
    log = partial.with_name(partial.name + ".ranges").read_bytes()
    spans = [struct.unpack_from("<QQ", log, offset) for offset in range(0, len(log) - len(log) % 16, 16)]
    kept, covered_to = 0, 0
    for start, end in sorted(spans):  # the union of the logged spans
        kept += max(0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    assert size // 2 - (1 << 20) <= kept <= partial.stat().st_size < size
    hub.wait_idle()
    served_first = hub.served("big.safetensors")

    hub.rate_bytes_per_s = None
    code, out, err = finish(zr4(["download", "--manifest", str(manifest)], env))
    assert code == 0, err
    refetched = hub.served("big.safetensors") - served_first
    assert refetched == size - kept, "the rerun continues exactly where the partial file ends"
    assert (models / "diffusion_models" / "big.safetensors").read_bytes() == data
    assert not partial.exists()
    assert "models ready: 1 files verified" in out


def test_two_processes_on_one_volume_fetch_each_file_once(hub: FakeHub, tmp_path: Path) -> None:
    files = {f"part-{i}.safetensors": "loras" for i in range(3)}
    contents = {name: deterministic_bytes(6 << 20, name) for name in files}
    for name, data in contents.items():
        hub.add_file("test/models", name, data)
    manifest = write_manifest(tmp_path / "m.yaml", files)
    models = tmp_path / "models"
    env = {"HF_ENDPOINT": hub.endpoint, "MODELS_DIR": str(models)}
    hub.rate_bytes_per_s = 12 << 20
    first = zr4(["download", "--manifest", str(manifest)], env)
    second = zr4(["download", "--manifest", str(manifest)], env)
    results = [finish(first), finish(second)]
    for code, _out, err in results:
        assert code == 0, err
    for name, data in contents.items():
        assert hub.served(name) == len(data), f"{name} fetched more than once"
        assert (models / "loras" / name).read_bytes() == data


def test_warm_start_command_is_offline(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file("test/models", "a.safetensors", deterministic_bytes(1 << 20, "a"))
    manifest = write_manifest(tmp_path / "m.yaml", {"a.safetensors": "vae"})
    env = {"HF_ENDPOINT": hub.endpoint, "MODELS_DIR": str(tmp_path / "models")}
    assert finish(zr4(["download", "--manifest", str(manifest)], env))[0] == 0
    hub.stop()
    code, out, err = finish(zr4(["download", "--manifest", str(manifest)], env))
    assert code == 0, err
    # Offline (the Hub is stopped) and it says how long the check took; how fast is a benchmark's job.
    assert "models ready: 1 files verified in" in out


def test_errors_are_one_red_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("test/models", token="hf_right")
    hub.add_file("test/models", "a.safetensors", b"x" * 100)
    manifest = write_manifest(tmp_path / "m.yaml", {"a.safetensors": "vae"})
    env = {"HF_ENDPOINT": hub.endpoint, "MODELS_DIR": str(tmp_path / "models")}
    code, _out, err = finish(zr4(["download", "--manifest", str(manifest)], env))
    assert code == 1 and err.strip().startswith("error: HTTP 401") and "HF_TOKEN" in err
    assert "Traceback" not in err
    code, _out, err = finish(zr4(["download", "--manifest", str(manifest)], {**env, "HF_TOKEN": "hf_right"}))
    assert code == 0, err


def test_plan_says_when_no_profile_is_baked_and_where_each_choice_came_from(tmp_path: Path) -> None:
    # No Hub at all (port 9 refuses): plan still prints its choices, with estimated sizes.
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "MODELS_DIR": str(tmp_path / "models"),
        "STEADYDANCER_GGUF_MODEL": "q5",
    }
    code, out, err = finish(zr4(["plan"], {**env, "ZR4_PROFILE": ""}))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(
        "[SteadyDancer] variant gguf Q5_K_M (variant from default, level from env STEADYDANCER_GGUF_MODEL)"
    )
    assert lines[2].startswith("[SteadyDancer] no resolved profile: none at /opt/zr4/profile.json")

    profile = tmp_path / "profile.json"
    profile.write_text(
        '{"model": {"variant": "gguf", "gguf_level": "Q4_K_M"}, "features": {"pose_backend": "mmpose"}}'
    )
    code, out, err = finish(zr4(["plan"], {**env, "ZR4_PROFILE": str(profile)}))
    assert code == 0, err
    assert out.splitlines()[0].startswith(
        "[SteadyDancer] variant gguf Q5_K_M (variant from profile, level from env STEADYDANCER_GGUF_MODEL)"
    )
    assert "no resolved profile" not in out and "pose mmpose+onnx" in out


def test_plan_total_says_it_leaves_out_the_files_of_unknown_size(tmp_path: Path) -> None:
    """Offline, some files have neither a size nor an estimate: the total must say it leaves them out."""
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "MODELS_DIR": str(tmp_path / "models"), "ZR4_PROFILE": ""}
    code, out, err = finish(zr4(["plan"], env))
    assert code == 0, err
    lines = out.splitlines()
    sizeless = sum(1 for line in lines[:-1] if " size ? " in line)
    assert sizeless > 0, out
    assert lines[-1].startswith("to download: ~")
    assert f"files; the {sizeless} shown as size ? are not counted); free in " in lines[-1]
