"""The boot workflow carries the VRAM planner's decisions that have a workflow input.

Seen against the real ComfyUI: with the text encoder or pose planned on the CPU, or VAE tiling on,
the installed workflow still said `device: gpu`, `onnx_device: CUDAExecutionProvider` and an
untiled decode, so the plan was ignored exactly where it mattered (and on a CPU-only machine the
workflow could not run at all).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from zr4.core.gpu import Detection, GpuInfo, HostRam
from zr4.core.planner import GpuFacts, PlanRequest, Workload, plan
from zr4.core.tune import tune
from zr4.core.workflow.build import NODE_IDS, WorkflowSpecError, build_steadydancer_workflow
from zr4.core.workflow.install import PlannedSettings, workflow_spec_for_boot
from zr4.profile import load_profile
from zr4.render.extras import default_targets

PROFILE = load_profile("4080super")
DATA = PROFILE.model_dump(mode="json")
TARGETS = default_targets(PROFILE)


def boot_workflow(plan_env: dict[str, str], block_swap: int) -> dict[str, Any]:
    spec = workflow_spec_for_boot(DATA, TARGETS, "gguf", block_swap, PlannedSettings.from_plan_env(plan_env))
    return build_steadydancer_workflow(spec)


def inputs(workflow: dict[str, Any], role: str) -> dict[str, Any]:
    return dict(workflow[NODE_IDS[role]]["inputs"])


def test_cpu_only_machine_runs_encoder_and_pose_on_the_cpu() -> None:
    result = tune(DATA, {}, Detection(source="none"))
    env = result.env()
    workflow = boot_workflow(env, result.plan.block_swap)
    assert inputs(workflow, "text")["device"] == "cpu"
    assert inputs(workflow, "pose_model")["onnx_device"] == "CPUExecutionProvider"
    assert NODE_IDS["block_swap"] not in workflow  # block swap 0 on the CPU
    assert inputs(workflow, "decode")["enable_vae_tiling"] is False


# Small cards, each with a workload it fits: the planner moves the encoder off the card, and tiles the
# decode where the untiled one does not fit. (The pose models on the CPU: the CPU-only test above. On a
# GPU no plan that fits puts them there: the text encoder staged on the GPU even when it runs on the CPU,
# bench/results/sampler.md v2, needs more of the card than the pose phase.)
CARDS = [(6144, Workload(832, 480, 49, 4)), (8192, Workload())]


def card_plan(mib: int, workload: Workload) -> Any:
    request = PlanRequest(
        gpu=GpuFacts("card", mib, mib - 100, "8.6"), host_ram_mib=128 * 1024, workload=workload
    )
    return plan(request)


def test_the_cards_cover_every_decision() -> None:
    plans = [card_plan(mib, workload) for mib, workload in CARDS]
    assert all(p.fits for p in plans)
    assert {p.text_encoder_device for p in plans} == {"cpu"}
    assert {p.pose_device for p in plans} == {"gpu"}
    assert {p.vae_tiling for p in plans} == {True, False}


def test_a_4_gib_card_is_refused_for_the_text_encoders_staging() -> None:
    refused = card_plan(4096, Workload(480, 272, 33, 4))
    assert not refused.fits
    assert refused.error is not None and refused.error.startswith("does not fit: text encoding needs")


@pytest.mark.parametrize(("mib", "workload"), CARDS)
def test_the_plans_decisions_are_followed_by_the_workflow(mib: int, workload: Workload) -> None:
    chosen = card_plan(mib, workload)
    env = {
        "ZR4_TEXT_ENCODER_DEVICE": chosen.text_encoder_device,
        "ZR4_POSE_DEVICE": chosen.pose_device,
        "ZR4_VAE_TILING": "true" if chosen.vae_tiling else "false",
        "ZR4_PREFETCH_BLOCKS": str(chosen.prefetch_blocks),
    }
    workflow = boot_workflow(env, chosen.block_swap)
    assert inputs(workflow, "text")["device"] == chosen.text_encoder_device
    expected_onnx = "CPUExecutionProvider" if chosen.pose_device == "cpu" else "CUDAExecutionProvider"
    assert inputs(workflow, "pose_model")["onnx_device"] == expected_onnx
    for role in ("decode", "pose_latents"):
        assert inputs(workflow, role)["enable_vae_tiling"] is chosen.vae_tiling
    assert inputs(workflow, "i2v")["tiled_vae"] is chosen.vae_tiling
    assert inputs(workflow, "block_swap")["blocks_to_swap"] == chosen.block_swap
    assert inputs(workflow, "block_swap")["prefetch_blocks"] == chosen.prefetch_blocks


def test_pose_on_the_cpu_selects_the_onnx_cpu_provider() -> None:
    workflow = boot_workflow({"ZR4_POSE_DEVICE": "cpu"}, 20)
    assert inputs(workflow, "pose_model")["onnx_device"] == "CPUExecutionProvider"
    assert inputs(workflow, "text")["device"] == "gpu"


def test_the_start_sequence_hands_the_plan_to_the_workflow() -> None:
    detection = Detection(
        source="nvml",
        gpus=(GpuInfo(0, "NVIDIA GeForce RTX 4080 SUPER", 16376, 15800, "8.9"),),
        gpu_count=1,
        host_ram=HostRam(total_mib=64 * 1024),
    )
    result = tune(DATA, {}, detection)
    planned = PlannedSettings.from_plan_env(result.env())
    assert planned == PlannedSettings(
        text_encoder_device=result.plan.text_encoder_device,
        pose_device=result.plan.pose_device,
        vae_tiling=result.plan.vae_tiling,
        prefetch_blocks=result.plan.prefetch_blocks,
        attention=result.plan.attention,
    )


@pytest.mark.parametrize("device", ["tpu", ""])
def test_an_unknown_encoder_device_is_refused(device: str) -> None:
    spec = workflow_spec_for_boot(DATA, TARGETS, "gguf", 20)
    with pytest.raises(WorkflowSpecError, match="text_encoder_device"):
        replace(spec, text_encoder_device=device)
