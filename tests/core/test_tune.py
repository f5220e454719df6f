"""`zr4 tune` and `zr4 plan`: the documented variables, COMFYUI_ARGS checking, and the real commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zr4.core.comfy_flags import FlagDataError, check_emitted, flag_set, merge_args, split_args
from zr4.core.gpu import Detection, GpuInfo, HostRam
from zr4.core.tune import apply_env, normalise_gguf_level, request_from_profile, tune
from zr4.profile import load_profile

FLAGS = flag_set("v0.7.0")
PROFILE = load_profile("4080super").model_dump(mode="json")
RTX_4080_SUPER = Detection(
    source="nvml",
    gpus=(GpuInfo(0, "NVIDIA GeForce RTX 4080 SUPER", 16376, 15800, "8.9"),),
    gpu_count=1,
    driver_version="550.54.15",
    cuda_driver_version="12.4",
    host_ram=HostRam(total_mib=64 * 1024),
)
CPU_ONLY = Detection(source="none", warnings=("nvidia-smi not found; running CPU-only",))


# --- COMFYUI_ARGS against ComfyUI v0.7.0's flags -------------------------------------------


@pytest.mark.parametrize(
    ("args", "accepted", "rejected"),
    [
        ("--lowvram --force-fp16", ["--lowvram", "--force-fp16"], []),
        ("--medvram", [], ["--medvram"]),  # A1111's flag, not ComfyUI's (absent from comfy/cli_args.py)
        ("--cpu-text-encoder", [], ["--cpu-text-encoder"]),
        ("--reserve-vram 1.5", ["--reserve-vram", "1.5"], []),
        ("--reserve-vram=2", ["--reserve-vram=2"], []),
        ("--reserve-vram lots", [], ["--reserve-vram lots"]),
        ("--reserve-vram", [], ["--reserve-vram"]),
        ("--port 8188", ["--port", "8188"], []),
        ("--port eighty", [], ["--port eighty"]),
        ("--preview-method auto", ["--preview-method", "auto"], []),
        ("--preview-method sometimes", [], ["--preview-method sometimes"]),
        ("--listen", ["--listen"], []),
        ("--listen 0.0.0.0 --verbose", ["--listen", "0.0.0.0", "--verbose"], []),
        ("--verbose DEBUG", ["--verbose", "DEBUG"], []),
        ("--fast", ["--fast"], []),
        ("--fast fp16_accumulation cublas_ops", ["--fast", "fp16_accumulation", "cublas_ops"], []),
        ("--fast autotune", ["--fast", "autotune"], []),  # v0.7.0's PerformanceFeature.AutoTune
        ("--fast sometimes", [], ["--fast sometimes"]),
        ("--extra-model-paths-config a.yaml b.yaml", ["--extra-model-paths-config", "a.yaml", "b.yaml"], []),
        ("--lowvram --highvram", ["--lowvram"], ["--highvram"]),  # one argparse group
        ("--use-sage-attention --use-flash-attention", ["--use-sage-attention"], ["--use-flash-attention"]),
        ("--lowvram=yes", [], ["--lowvram=yes"]),
        ("--medvram 6 --cpu", ["--cpu"], ["--medvram 6"]),  # an unknown flag takes its values along
        ("stray --cpu", ["--cpu"], ["stray"]),
        ("-h", [], ["-h"]),
        ("--quick-test-for-ci", [], ["--quick-test-for-ci"]),  # would exit ComfyUI at once
        ("--low", [], ["--low"]),  # argparse would expand prefixes; ambiguous, so never passed
        ("--cuda-device -1", ["--cuda-device", "-1"], []),
        ("", [], []),
    ],
)
def test_split_args(args: str, accepted: list[str], rejected: list[str]) -> None:
    split = split_args(args, FLAGS)
    assert list(split.accepted) == accepted
    assert [" ".join(r.tokens) for r in split.rejected] == rejected


def test_unbalanced_quotes_are_split_on_whitespace_and_checked() -> None:
    split = split_args("--reserve-vram '1.5 --cpu", FLAGS)
    assert split.accepted == ("--cpu",)
    assert split.rejected[0].tokens == ("--reserve-vram", "'1.5")


def test_flags_zr4_sets_itself_are_not_taken_from_the_user() -> None:
    split = split_args("--listen 0.0.0.0 --port 9000 --lowvram", FLAGS, owned=("--listen", "--port"))
    assert split.accepted == ("--lowvram",)
    assert all("set by zr4" in r.reason for r in split.rejected)


def test_merge_prefers_the_users_choice_within_a_group() -> None:
    final, user, dropped = merge_args(["--lowvram", "--use-pytorch-cross-attention"], "--gpu-only", FLAGS)
    assert final == ("--use-pytorch-cross-attention", "--gpu-only")
    assert dropped == ("--lowvram",)
    assert not user.rejected


def test_asking_for_the_planned_flag_again_is_not_an_override() -> None:
    final, _, dropped = merge_args(["--lowvram", "--disable-smart-memory"], "--lowvram", FLAGS)
    assert final == ("--disable-smart-memory", "--lowvram")
    assert dropped == ()


def test_planner_flags_are_checked_against_the_emittable_set() -> None:
    check_emitted(["--lowvram", "--disable-smart-memory"], FLAGS)
    with pytest.raises(FlagDataError, match="may not choose"):
        check_emitted(["--force-fp16"], FLAGS)
    with pytest.raises(FlagDataError, match="rejects"):
        check_emitted(["--medvram"], FLAGS)


def test_every_flag_the_design_lists_for_v070_is_accepted() -> None:
    # Each defined in comfyanonymous/ComfyUI@f59f71cf:comfy/cli_args.py.
    design = [
        *("--lowvram", "--normalvram", "--highvram", "--novram", "--cpu", "--gpu-only", "--reserve-vram"),
        *("--cpu-vae", "--force-fp16", "--use-sage-attention", "--use-flash-attention"),
        *("--use-pytorch-cross-attention", "--disable-smart-memory", "--async-offload"),
        *("--disable-pinned-memory", "--fast", "--listen", "--port", "--output-directory"),
        *("--extra-model-paths-config", "--disable-auto-launch", "--preview-method"),
    ]
    assert all(flag in FLAGS for flag in design)
    with pytest.raises(FlagDataError, match=r"no accepted-flag set for ComfyUI v9\.9\.9"):
        flag_set("v9.9.9")


# --- the documented variables ----------------------------------------------------------------------


def test_profile_then_environment() -> None:
    request, warnings = request_from_profile(PROFILE)
    assert warnings == []
    assert (request.variant, request.gguf_level, request.pose_backend) == ("gguf", "Q4_K_M", "onnx")
    assert (request.workload.width, request.workload.height, request.workload.frames) == (480, 832, 81)
    changed, warnings = apply_env(
        request,
        {
            "STEADYDANCER_VARIANT": "gguf",
            "STEADYDANCER_GGUF_MODEL": "q6_k",
            "GPU_MEMORY_MODE": "full",
            "STEADYDANCER_GPU_MEMORY_MODE": "sequential_cpu_offload",  # the more specific one wins
            "GPU_TIER": "prosumer",
            "COMFYUI_ARGS": "--lowvram --medvram",
        },
    )
    assert warnings == []
    assert changed.gguf_level == "Q6_K"
    assert changed.memory_mode == "sequential_cpu_offload"
    assert changed.tier == "prosumer"
    assert changed.user_comfyui_args == "--lowvram --medvram"


def test_bad_values_are_warnings() -> None:
    request, _ = request_from_profile(PROFILE)
    changed, warnings = apply_env(
        request,
        {
            "STEADYDANCER_VARIANT": "int4",
            "STEADYDANCER_GGUF_MODEL": "q9",
            "GPU_MEMORY_MODE": "medvram",
            "GPU_TIER": "gamer",
        },
    )
    assert changed == request
    assert len(warnings) == 4


def test_gguf_spellings() -> None:
    levels = ["Q3_K_M", "Q4_K_M", "Q8_0"]
    assert normalise_gguf_level("q4_k_m", levels) == "Q4_K_M"
    assert normalise_gguf_level("q4", levels) == "Q4_K_M"
    assert normalise_gguf_level("AUTO", levels) == "auto"
    assert normalise_gguf_level("q5_k_m", levels) is None


def test_tune_on_a_4080_super_with_auto_level_and_other_uis_flags() -> None:
    env = {"STEADYDANCER_GGUF_MODEL": "auto", "COMFYUI_ARGS": "--medvram --cpu-text-encoder --force-fp16"}
    result = tune(PROFILE, env, RTX_4080_SUPER)
    values = result.env()
    # 15,800 MiB free: Q8_0 with blocks in host RAM is the largest that fits
    assert values["STEADYDANCER_GGUF_MODEL"] == "Q8_0"
    assert values["GPU_MEMORY_MODE"] == values["STEADYDANCER_GPU_MEMORY_MODE"] == "sequential_cpu_offload"
    assert int(values["ZR4_BLOCK_SWAP"]) > 0
    assert values["GPU_TIER"] == "consumer"
    assert (
        values["COMFYUI_ARGS"]
        == "--lowvram --disable-smart-memory --use-pytorch-cross-attention --force-fp16"
    )
    assert values["ZR4_PLAN_FITS"] == "true"
    assert int(values["ZR4_VRAM_PEAK_MIB"]) <= 15800
    assert any("--medvram" in warning for warning in result.plan.warnings)
    document = json.loads(json.dumps(result.to_dict()))
    assert document["detection"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4080 SUPER"


def test_tune_without_a_gpu_or_profile() -> None:
    result = tune(None, {}, CPU_ONLY)
    assert result.env()["COMFYUI_ARGS"] == "--cpu"
    assert result.env()["ZR4_GPU_COUNT"] == "0"


# --- the commands, as a user runs them -----------------------------------------------------------


def _zr4() -> list[str]:
    found = shutil.which("zr4")
    return [found] if found else [sys.executable, "-m", "zr4.cli.main"]


# The CPU-only command tests need a machine without the NVIDIA driver (NVML loads from the system).
no_nvidia_driver = pytest.mark.skipif(
    Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None,
    reason="an NVIDIA driver is present: detection would find the GPU",
)


def _cpu_env(tmp_path: Path) -> dict[str, str]:
    """No nvidia-smi on PATH and no NVML library: detection must come out CPU-only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STEADYDANCER_", "GPU_"))}
    env.pop("COMFYUI_ARGS", None)
    env["PATH"] = f"{Path(sys.executable).parent}:{bin_dir}"
    env["LD_LIBRARY_PATH"] = str(tmp_path)
    return env


def test_zr4_plan_prints_the_budget_table() -> None:
    completed = subprocess.run(
        [*_zr4(), "plan", "--profile", "4080super", "--ram-gib", "64"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "NVIDIA GeForce RTX 4080 SUPER: 16,376 MiB, tier consumer" in out  # as the driver reports it
    assert "diffusion weights (gguf Q4_K_M)" in out and "█" in out
    assert "memory mode                    sequential_cpu_offload" in out
    # 16,376 − 16,146 planned at the sampling peak, plus the 400 MiB ComfyUI keeps free
    assert "left free at the peak       630 MiB  ComfyUI's 400 MiB reserve + 230 MiB" in out
    assert "ComfyUI arguments: --lowvram --disable-smart-memory --use-pytorch-cross-attention" in out


def test_zr4_plan_json_and_a_plan_that_does_not_fit() -> None:
    completed = subprocess.run(
        [*_zr4(), "plan", "--vram-gib", "6", "--resolution", "1280x720", "--mode", "full", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith("error: does not fit")
    document = json.loads(completed.stdout)
    assert document["fits"] is False
    assert document["alternatives"]
    assert document["workload"]["tokens"] == 21 * 45 * 80


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frames", "80"], "4n+1"),
        (["--resolution", "832by480"], "WIDTHxHEIGHT"),
        (["--mode", "turbo"], "error: --mode 'turbo' is not one of: auto, full, model_cpu_offload, "),
        (["--gguf-level", "Q9"], "error: --gguf-level 'Q9' is not one of: auto, Q2_K, "),
        (["--variant", "fp4"], "error: --variant 'fp4' is not one of: fp16, fp8, gguf"),
    ],
)
def test_zr4_plan_usage_errors(argv: list[str], message: str) -> None:
    completed = subprocess.run([*_zr4(), "plan", *argv], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert message in completed.stderr
    # The option the user typed is named, not the variable the planner reads; and the command stops,
    # so nothing was "ignored".
    assert "STEADYDANCER_" not in completed.stderr and "GPU_MEMORY_MODE" not in completed.stderr
    assert "ignored" not in completed.stderr and completed.stderr.count("\n") == 1


@no_nvidia_driver
def test_zr4_tune_env_lines_evaluate_in_a_shell(tmp_path: Path) -> None:
    profile_json = tmp_path / "profile.json"
    profile_json.write_text(json.dumps(PROFILE))
    env = _cpu_env(tmp_path)
    env["ZR4_PROFILE"] = str(profile_json)
    env["COMFYUI_ARGS"] = "--medvram --preview-method auto --reserve-vram 1.5"
    script = f'eval "$({" ".join(_zr4())} tune --env)"; printf "%s|%s|%s" "$COMFYUI_ARGS" "$GPU_MEMORY_MODE" "$ZR4_GPU_COUNT"'
    bash = shutil.which("bash") or "/bin/bash"
    completed = subprocess.run([bash, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "--cpu --preview-method auto --reserve-vram 1.5|cpu|0"
    assert "not passed to ComfyUI: --medvram" in completed.stderr


@no_nvidia_driver
def test_python_m_tune_runs_without_typer_or_pydantic(tmp_path: Path) -> None:
    """Inside the image zr4's runtime may live without its CLI dependencies."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    for name in ("typer", "pydantic", "jinja2"):
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} is not in the runtime')\n")
    env = _cpu_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(Path(__file__).resolve().parents[2] / "src")])
    out_json = tmp_path / "plan.json"
    completed = subprocess.run(
        [sys.executable, "-m", "zr4.core.tune", "--json", "--write-json", str(out_json)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["detection"]["source"] == "none"
    assert document["plan"]["comfyui_args"] == ["--cpu"]
    assert json.loads(out_json.read_text()) == document
