"""The planner and `zr4 plan` apply what a card's compute capability allows, as `zr4 render` does:
no bf16 on Volta/Turing, flash-attn only where the image has kernels for the card."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from zr4.core.gpu import Detection, GpuInfo, HostRam
from zr4.core.planner import GpuFacts, PlanRequest, plan
from zr4.core.tune import request_from_profile, tune
from zr4.core.workflow.install import PlannedSettings
from zr4.profile import load_profile


def card(cc: str, name: str = "card", gib: int = 80) -> GpuFacts:
    return GpuFacts(name, gib * 1024, compute_capability=cc)


def detection(name: str, cc: str, gib: int = 80) -> Detection:
    return Detection(
        source="nvml",
        gpus=(GpuInfo(0, name, gib * 1024 - 600, gib * 1024 - 1200, cc),),
        gpu_count=1,
        host_ram=HostRam(total_mib=256 * 1024),
    )


@pytest.mark.parametrize(("cc", "name"), [("7.5", "Tesla T4"), ("7.0", "Tesla V100-SXM2-32GB")])
def test_a_card_without_bf16_gets_no_plan_and_the_reason(cc: str, name: str) -> None:
    result = plan(PlanRequest(gpu=card(cc, name, 32)))
    assert not result.fits
    assert result.error is not None
    assert result.error.startswith(f"{name} is sm_{cc.replace('.', '')}, which has no bf16 in hardware")
    assert result.alternatives == ()  # less VRAM use would not help


def test_flash_attention_is_not_emitted_for_a_card_without_kernels() -> None:
    b200 = plan(PlanRequest(gpu=card("10.0", "NVIDIA B200", 180), attention="flash_attn_2"))
    assert b200.fits
    assert "--use-flash-attention" not in b200.comfyui_args
    assert "--use-pytorch-cross-attention" in b200.comfyui_args
    assert b200.attention == "sdpa"
    assert any("kernels for sm_8x, sm_9x, not sm_100 (NVIDIA B200)" in w for w in b200.warnings)
    h100 = plan(PlanRequest(gpu=card("9.0", "NVIDIA H100"), attention="flash_attn_2"))
    assert "--use-flash-attention" in h100.comfyui_args and h100.attention == "flash_attn_2"


def test_a_source_built_flash_attn_on_cuda_128_runs_on_blackwell() -> None:
    data = load_profile(
        "5090",
        ["features.flash_attn=true", "stack.flash_attn=2.7.4.post1", "features.flash_attn_source=source"],
    ).model_dump(mode="json")
    data["features"]["attention"] = "flash_attn_2"
    request, _ = request_from_profile(data)
    assert request.flash_attn_kernel_majors == (12,)  # FLASH_ATTN_CUDA_ARCHS=120, nvcc 12.8
    result = plan(PlanRequest(gpu=card("12.0", "NVIDIA GeForce RTX 5090", 32), attention="flash_attn_2"))
    assert "--use-flash-attention" not in result.comfyui_args  # the release wheel would not
    result = plan(replace(request, gpu=card("12.0", "NVIDIA GeForce RTX 5090", 32)))
    assert "--use-flash-attention" in result.comfyui_args


def test_tune_on_a_b200_with_the_h100_image_boots_an_sdpa_workflow() -> None:
    result = tune(load_profile("h100").model_dump(mode="json"), {}, detection("NVIDIA B200", "10.0", 180))
    env = result.env()
    assert "--use-flash-attention" not in env["COMFYUI_ARGS"]
    assert env["ZR4_ATTENTION"] == "sdpa"
    assert PlannedSettings.from_plan_env(env).attention == "sdpa"
    on_h100 = tune(load_profile("h100").model_dump(mode="json"), {}, detection("NVIDIA H100", "9.0"))
    assert on_h100.env()["ZR4_ATTENTION"] == "flash_attn_2"


def _zr4() -> list[str]:
    found = shutil.which("zr4")
    return [found] if found else [sys.executable, "-m", "zr4.cli.main"]


@pytest.mark.parametrize(
    ("base", "gpu", "rule"),
    [
        ("h100", {"name": "NVIDIA B200", "vram_gib": 180, "compute_capability": "10.0"}, "[flash_attn_arch]"),
        ("4080super", {"name": "Tesla T4", "vram_gib": 16, "compute_capability": "7.5"}, "[arch_bf16]"),
    ],
)
def test_zr4_plan_refuses_what_render_refuses(tmp_path: Path, base: str, gpu: dict, rule: str) -> None:
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump({"extends": base, "gpu": gpu}))
    plan_run = subprocess.run(
        [*_zr4(), "plan", "--profile", str(profile)], capture_output=True, text=True, timeout=120
    )
    render_run = subprocess.run(
        [*_zr4(), "render", "--profile", str(profile), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan_run.returncode == render_run.returncode == 1
    assert rule in plan_run.stderr and rule in render_run.stderr
    assert "Traceback" not in plan_run.stderr
    assert plan_run.stdout == ""  # no budget table for an image that cannot run on the card
