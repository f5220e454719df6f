"""The VRAM planner: a table of cards × model variants × host RAM, the rules behind it, and properties
that hold for every request (no flag ComfyUI rejects, never more than the card)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zr4.core.comfy_flags import flag_set, split_args
from zr4.core.planner import (
    GpuFacts,
    PlanRequest,
    Workload,
    activation_bytes,
    bar,
    format_plan,
    load_facts,
    plan,
    tier_for,
    vae_decode_bytes,
)

MIB = 1024 * 1024
FLAGS = flag_set("v0.7.0")
MODES = {"full": "full", "model": "model_cpu_offload", "seq": "sequential_cpu_offload"}


def request(vram_gib: float, variant: str, ram_gib: float | None = 64, **changes: object) -> PlanRequest:
    """What the 4080super profile asks for (GGUF, ONNX pose, bf16 text encoder, LoRA, 480×832×81),
    on a card of ``vram_gib`` with ``variant`` = fp16, fp8 or a GGUF level."""
    gguf = variant not in ("fp16", "fp8")
    base = PlanRequest(
        gpu=GpuFacts(f"{vram_gib:g} GiB card", int(vram_gib * 1024)),
        host_ram_mib=None if ram_gib is None else int(ram_gib * 1024),
        variant="gguf" if gguf else variant,  # type: ignore[arg-type]
        gguf_level=variant if gguf else "Q4_K_M",
        pose_backend="onnx",
        workload=Workload(width=480, height=832, frames=81, steps=4),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# card GiB, variant, host RAM GiB -> memory mode, blocks swapped, blocks prefetched, text encoder
# device, VAE tiling, host-RAM warning. The 16 GiB rows are the RTX 4080 SUPER reference answer
# (README, "VRAM planner").
EXPECTED = [
    (8, "fp16", 32, "seq", 40, 0, "cpu", False, True),
    (8, "fp16", 64, "seq", 40, 0, "cpu", False, False),
    (8, "fp8", 32, "seq", 38, 1, "cpu", False, True),
    (8, "fp8", 64, "seq", 38, 1, "cpu", False, False),
    (8, "Q8_0", 32, "seq", 39, 1, "cpu", False, True),
    (8, "Q8_0", 64, "seq", 39, 1, "cpu", False, False),
    (8, "Q6_K", 32, "seq", 37, 1, "cpu", False, False),
    (8, "Q6_K", 64, "seq", 37, 1, "cpu", False, False),
    (8, "Q4_K_M", 32, "seq", 36, 1, "cpu", False, False),
    (8, "Q4_K_M", 64, "seq", 36, 1, "cpu", False, False),
    (8, "Q3_K_M", 32, "seq", 33, 1, "cpu", False, False),
    (8, "Q3_K_M", 64, "seq", 33, 1, "cpu", False, False),
    (12, "fp16", 32, "seq", 35, 1, "cpu", False, True),
    (12, "fp16", 64, "seq", 35, 1, "cpu", False, False),
    (12, "fp8", 32, "seq", 28, 1, "cpu", False, False),
    (12, "fp8", 64, "seq", 28, 1, "cpu", False, False),
    (12, "Q8_0", 32, "seq", 29, 1, "cpu", False, False),
    (12, "Q8_0", 64, "seq", 29, 1, "cpu", False, False),
    (12, "Q6_K", 32, "seq", 24, 1, "cpu", False, False),
    (12, "Q6_K", 64, "seq", 24, 1, "cpu", False, False),
    (12, "Q4_K_M", 32, "seq", 20, 1, "cpu", False, False),
    (12, "Q4_K_M", 64, "seq", 20, 1, "cpu", False, False),
    (12, "Q3_K_M", 32, "seq", 13, 1, "cpu", False, False),
    (12, "Q3_K_M", 64, "seq", 13, 1, "cpu", False, False),
    (16, "fp16", 32, "seq", 30, 1, "gpu", False, True),
    (16, "fp16", 64, "seq", 30, 1, "gpu", False, False),
    (16, "fp8", 32, "seq", 17, 1, "gpu", False, False),
    (16, "fp8", 64, "seq", 17, 1, "gpu", False, False),
    (16, "Q8_0", 32, "seq", 19, 1, "gpu", False, False),
    (16, "Q8_0", 64, "seq", 19, 1, "gpu", False, False),
    (16, "Q6_K", 32, "seq", 12, 1, "gpu", False, False),
    (16, "Q6_K", 64, "seq", 12, 1, "gpu", False, False),
    (16, "Q4_K_M", 32, "seq", 5, 1, "gpu", False, False),
    (16, "Q4_K_M", 64, "seq", 5, 1, "gpu", False, False),
    (16, "Q3_K_M", 32, "model", 0, 0, "gpu", False, False),
    (16, "Q3_K_M", 64, "model", 0, 0, "gpu", False, False),
    (24, "fp16", 32, "seq", 19, 1, "gpu", False, True),
    (24, "fp16", 64, "seq", 19, 1, "gpu", False, False),
    (24, "fp8", 32, "model", 0, 0, "gpu", False, False),
    (24, "fp8", 64, "model", 0, 0, "gpu", False, False),
    (24, "Q8_0", 32, "model", 0, 0, "gpu", False, False),
    (24, "Q8_0", 64, "model", 0, 0, "gpu", False, False),
    (24, "Q6_K", 32, "model", 0, 0, "gpu", False, False),
    (24, "Q6_K", 64, "model", 0, 0, "gpu", False, False),
    (24, "Q4_K_M", 32, "model", 0, 0, "gpu", False, False),
    (24, "Q4_K_M", 64, "model", 0, 0, "gpu", False, False),
    (24, "Q3_K_M", 32, "model", 0, 0, "gpu", False, False),
    (24, "Q3_K_M", 64, "model", 0, 0, "gpu", False, False),
    (32, "fp16", 32, "seq", 9, 1, "gpu", False, False),
    (32, "fp16", 64, "seq", 9, 1, "gpu", False, False),
    (32, "fp8", 32, "model", 0, 0, "gpu", False, False),
    (32, "fp8", 64, "model", 0, 0, "gpu", False, False),
    (32, "Q8_0", 32, "model", 0, 0, "gpu", False, False),
    (32, "Q8_0", 64, "model", 0, 0, "gpu", False, False),
    (32, "Q6_K", 32, "model", 0, 0, "gpu", False, False),
    (32, "Q6_K", 64, "model", 0, 0, "gpu", False, False),
    (32, "Q4_K_M", 32, "model", 0, 0, "gpu", False, False),
    (32, "Q4_K_M", 64, "model", 0, 0, "gpu", False, False),
    (32, "Q3_K_M", 32, "full", 0, 0, "gpu", False, False),
    (32, "Q3_K_M", 64, "full", 0, 0, "gpu", False, False),
    (48, "fp16", 32, "model", 0, 0, "gpu", False, False),
    (48, "fp16", 64, "model", 0, 0, "gpu", False, False),
    (48, "fp8", 32, "full", 0, 0, "gpu", False, False),
    (48, "fp8", 64, "full", 0, 0, "gpu", False, False),
    (48, "Q8_0", 32, "full", 0, 0, "gpu", False, False),
    (48, "Q8_0", 64, "full", 0, 0, "gpu", False, False),
    (48, "Q6_K", 32, "full", 0, 0, "gpu", False, False),
    (48, "Q6_K", 64, "full", 0, 0, "gpu", False, False),
    (48, "Q4_K_M", 32, "full", 0, 0, "gpu", False, False),
    (48, "Q4_K_M", 64, "full", 0, 0, "gpu", False, False),
    (48, "Q3_K_M", 32, "full", 0, 0, "gpu", False, False),
    (48, "Q3_K_M", 64, "full", 0, 0, "gpu", False, False),
    (80, "fp16", 32, "full", 0, 0, "gpu", False, False),
    (80, "fp16", 64, "full", 0, 0, "gpu", False, False),
    (80, "fp8", 32, "full", 0, 0, "gpu", False, False),
    (80, "fp8", 64, "full", 0, 0, "gpu", False, False),
    (80, "Q8_0", 32, "full", 0, 0, "gpu", False, False),
    (80, "Q8_0", 64, "full", 0, 0, "gpu", False, False),
    (80, "Q6_K", 32, "full", 0, 0, "gpu", False, False),
    (80, "Q6_K", 64, "full", 0, 0, "gpu", False, False),
    (80, "Q4_K_M", 32, "full", 0, 0, "gpu", False, False),
    (80, "Q4_K_M", 64, "full", 0, 0, "gpu", False, False),
    (80, "Q3_K_M", 32, "full", 0, 0, "gpu", False, False),
    (80, "Q3_K_M", 64, "full", 0, 0, "gpu", False, False),
]


@pytest.mark.parametrize(
    ("vram", "variant", "ram", "mode", "swap", "prefetch", "text", "tiled", "ram_warning"), EXPECTED
)
def test_plan_table(
    vram: int,
    variant: str,
    ram: int,
    mode: str,
    swap: int,
    prefetch: int,
    text: str,
    tiled: bool,
    ram_warning: bool,
) -> None:
    result = plan(request(vram, variant, ram))
    assert result.fits, result.error
    assert (result.memory_mode, result.block_swap, result.prefetch_blocks) == (MODES[mode], swap, prefetch)
    assert (result.text_encoder_device, result.vae_tiling) == (text, tiled)
    assert any("host RAM" in warning for warning in result.warnings) == ram_warning
    assert result.peak_mib <= vram * 1024
    assert not split_args(result.comfyui_args, FLAGS).rejected


def test_4080super_reference_budget() -> None:
    """The default profile's own plan: Q4_K_M with 5 of 40 blocks swapped (1 prefetched), one phase
    at a time. Every block on the card (the plan before the real-sampler measurement) needs more
    than the card once the allocator's pool and the measured CUDA context are budgeted."""
    result = plan(request(16, "Q4_K_M", 32))
    items = {item.key: item.mib for item in result.items}
    assert (result.memory_mode, result.block_swap, result.prefetch_blocks) == ("sequential_cpu_offload", 5, 1)
    assert items["diffusion_weights"] == 9549  # 1.0 GB non-block + 35 of 40 blocks × 257.5 MB resident
    assert items["swap_staging"] == 737  # running + prefetched + copying back, 3 × 257.5 MB
    assert items["activations"] == 3048  # 97,297 B × 32,760 tokens + 8 MiB, measured
    assert items["fragmentation"] == 762  # 25 % of the activations
    assert items["vae_decode"] == 4195  # 10,510 B × 480×832 + 6.2 B × 480×832×81 (measured 4,195)
    assert result.peak_phase == "sample"
    assert result.phase_mib["sample"] == sum(
        mib
        for key, mib in items.items()
        if key
        in (
            "cuda_context",
            "comfyui_reserve",
            "diffusion_weights",
            "swap_staging",
            "lora",
            "dequant_scratch",
            "activations",
            "fragmentation",
        )
    )
    assert not plan(request(16, "Q4_K_M", 32, block_swap=0)).fits
    assert result.comfyui_args == ("--lowvram", "--disable-smart-memory", "--use-pytorch-cross-attention")
    assert result.tier == "consumer"


def test_more_swap_as_the_model_grows() -> None:
    swaps = [plan(request(16, level)).block_swap for level in ("Q3_K_M", "Q4_K_M", "Q6_K", "Q8_0")]
    assert swaps == sorted(swaps)
    assert swaps[0] == 0 and swaps[-1] > 0


def test_auto_level_is_the_largest_that_fits() -> None:
    assert plan(request(16, "auto")).gguf_level == "Q8_0"  # with 17 blocks in host RAM
    assert plan(request(80, "auto")).gguf_level == "Q8_0"
    # host RAM decides between levels that fit the card: 25 GiB holds the swapped blocks of Q3_K_M
    # plus the offloaded encoders and ONNX pose models (24,647 MiB), but not those of Q4_K_M (27,309)
    small_ram = plan(request(8, "auto", ram_gib=25))
    assert small_ram.gguf_level == "Q3_K_M"
    assert not any("host RAM" in warning for warning in small_ram.warnings)
    decision = {d.name: d for d in small_ram.decisions}["GGUF level"]
    assert decision.why.startswith("auto:")


def test_host_ram_shortage_is_a_warning_not_an_error() -> None:
    result = plan(request(8, "fp16", ram_gib=32))
    assert result.fits
    assert result.host_ram_needed_mib > 32 * 1024
    assert any("cannot hold" in warning and "40 swapped blocks" in warning for warning in result.warnings)


def test_text_encoder_moves_to_cpu_when_it_cannot_fit() -> None:
    result = plan(request(8, "Q4_K_M"))
    assert result.text_encoder_device == "cpu"
    assert "text_encoder" not in {item.key for item in result.items}
    assert any("fp8 one" in warning for warning in result.warnings)


def test_a_text_encoder_on_the_cpu_is_still_staged_on_the_gpu() -> None:
    # bench/results/sampler.md, v2 q4km-12g: WanVideoTextEncodeCached with device "cpu" held 4,722 MiB of
    # the device (NVML) while encoding; the plan must not promise less for that phase.
    result = plan(request(12, "Q4_K_M"))
    assert result.text_encoder_device == "cpu"
    (staging,) = [item for item in result.items if item.key == "text_encoder_staging"]
    assert staging.phase == "text" and staging.mib == 4032
    assert result.phase_mib["text"] >= 4722
    on_gpu = plan(request(24, "Q4_K_M"))
    assert on_gpu.text_encoder_device == "gpu"
    assert "text_encoder_staging" not in {item.key for item in on_gpu.items}


def test_vae_tiling_when_the_decode_alone_is_too_big() -> None:
    result = plan(request(8, "Q3_K_M", workload=Workload(width=1280, height=720, frames=33)))
    assert result.vae_tiling
    assert {item.key: item.mib for item in result.items}["vae_decode"] < vae_decode_bytes(
        1280, 720, 33, False
    ) // MIB


def test_nothing_fits_gives_an_error_with_checked_alternatives() -> None:
    result = plan(
        request(6, "fp16", memory_mode="full", workload=Workload(width=1280, height=720, frames=81))
    )
    assert not result.fits
    assert result.error is not None and "does not fit" in result.error
    assert result.alternatives
    assert any("frames instead of 81" in alternative for alternative in result.alternatives)
    assert result.alternatives[-1].startswith("a card with at least")
    for alternative in result.alternatives[:-1]:
        assert alternative.startswith("GPU_MEMORY_MODE=auto")  # the forced mode is what failed
    text = format_plan(result)
    assert "error: does not fit" in text and "instead:" in text


def test_forced_modes_and_block_swap() -> None:
    forced = plan(request(24, "Q4_K_M", memory_mode="sequential_cpu_offload"))
    assert forced.memory_mode == "sequential_cpu_offload"
    assert {d.name: d.why for d in forced.decisions}["memory mode"] == "forced (sequential_cpu_offload)"
    swapped = plan(request(24, "Q4_K_M", block_swap=20))
    assert (swapped.memory_mode, swapped.block_swap) == ("sequential_cpu_offload", 20)
    full = plan(request(16, "Q4_K_M", memory_mode="full"))
    assert full.memory_mode == "full" and not full.fits
    assert "--highvram" in full.comfyui_args


def test_user_flags_pass_through_and_rejected_ones_are_reported() -> None:
    # Q8_0 on 16 GiB swaps blocks: the plan wants --lowvram, the user asks for --highvram
    result = plan(
        request(16, "Q8_0", user_comfyui_args="--medvram --cpu-text-encoder --force-fp16 --highvram")
    )
    assert result.memory_mode == "sequential_cpu_offload"
    assert result.comfyui_args == (
        "--disable-smart-memory",
        "--use-pytorch-cross-attention",
        "--force-fp16",
        "--highvram",
    )
    assert [r.tokens for r in result.rejected_args] == [("--medvram",), ("--cpu-text-encoder",)]
    assert "COMFYUI_ARGS overrides the planned --lowvram" in result.warnings
    assert any("--medvram" in warning for warning in result.warnings)


def test_disabling_cuda_malloc_budgets_the_native_allocator_headroom() -> None:
    default = {i.key: i.mib for i in plan(request(24, "Q4_K_M")).items}["fragmentation"]
    native = {
        i.key: i.mib for i in plan(request(24, "Q4_K_M", user_comfyui_args="--disable-cuda-malloc")).items
    }
    assert native["fragmentation"] == pytest.approx(1.2 * default, rel=0.01)  # 30 % instead of 25 %


def test_cpu_only_plan() -> None:
    result = plan(request(16, "auto", gpu=None, user_comfyui_args="--medvram"))
    assert result.memory_mode == "cpu"
    assert result.comfyui_args == ("--cpu",)
    assert result.gguf_level == "Q4_K_M"
    assert any("no NVIDIA GPU" in warning for warning in result.warnings)
    assert any("--medvram" in warning for warning in result.warnings)


def test_free_memory_not_total_is_what_the_plan_uses() -> None:
    idle = plan(request(16, "Q4_K_M"))
    busy = plan(request(16, "Q4_K_M", gpu=GpuFacts("4080 SUPER", 16384, free_mib=14000)))
    assert busy.block_swap > idle.block_swap
    assert busy.peak_mib <= 14000


def test_formulas_match_the_calibration() -> None:
    # bench/results/planner.md: whole forward 3,048 MiB at 832×480×81 (32,760 tokens), 7,023 MiB at 1280×720×81
    assert abs(activation_bytes(32760) / MIB - 3048) / 3048 < 0.01
    assert abs(activation_bytes(75600) / MIB - 7023) / 7023 < 0.01
    # VAE decode above weights: 4,195 MiB at 832×480×81, 9,674 MiB at 1280×720×81, 780 MiB for a 272 px tile
    assert abs(vae_decode_bytes(832, 480, 81, False) / MIB - 4195) / 4195 < 0.10
    assert abs(vae_decode_bytes(1280, 720, 81, False) / MIB - 9674) / 9674 < 0.10
    assert Workload(832, 480, 81).tokens == 32760 == Workload(480, 832, 81).tokens


def test_workload_rules() -> None:
    with pytest.raises(ValueError, match="4n\\+1"):
        Workload(frames=80)
    with pytest.raises(ValueError, match="multiples of 16"):
        Workload(width=830)


def test_tiers_bars_and_facts() -> None:
    assert [tier_for(mib) for mib in (16376, 24564, 81559)] == ["consumer", "prosumer", "datacenter"]
    assert bar(0, 100, width=10) == "··········▕"
    assert bar(50, 100, width=10) == "█████·····▕"
    assert bar(150, 100, width=10).endswith("!")
    facts = load_facts()
    assert facts.gguf_size("Q5_K_M")[0] == facts.gguf_size("Q6_K")[0]  # unknown size: next larger known
    assert facts.blocks == 40


# --- properties ------------------------------------------------------------------------------

USER_TOKENS = [
    "--medvram",
    "--lowvram",
    "--highvram",
    "--normalvram",
    "--novram",
    "--gpu-only",
    "--cpu",
    "--force-fp16",
    "--reserve-vram",
    "1.5",
    "abc",
    "--port",
    "8188",
    "--listen",
    "--preview-method",
    "auto",
    "bogus",
    "--fast",
    "fp16_accumulation",
    "--use-sage-attention",
    "--use-flash-attention",
    "--disable-cuda-malloc",
    "--cuda-malloc",
    "--verbose",
    "DEBUG",
    "--cache-lru",
    "3",
    "--quick-test-for-ci",
    "--disable-smart-memory",
    "-h",
    "--reserve-vram=2",
    "--cpu-vae",
]


@st.composite
def requests(draw: st.DrawFn) -> PlanRequest:
    total = draw(st.integers(min_value=2 * 1024, max_value=192 * 1024))
    free = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=total)))
    variant = draw(st.sampled_from(["fp16", "fp8", "gguf"]))
    return PlanRequest(
        gpu=draw(st.one_of(st.none(), st.just(GpuFacts("card", total, free)))),
        host_ram_mib=draw(st.one_of(st.none(), st.integers(min_value=1024, max_value=512 * 1024))),
        variant=variant,  # type: ignore[arg-type]
        gguf_level=draw(
            st.sampled_from(["auto", "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"])
        ),
        text_encoder=draw(st.sampled_from(["bf16", "fp8"])),
        step_distill_lora=draw(st.booleans()),
        attention=draw(st.sampled_from(["sdpa", "flash_attn_2", "sageattn"])),
        pose_backend=draw(st.sampled_from(["onnx", "mmpose"])),
        memory_mode=draw(st.sampled_from(["auto", "full", "model_cpu_offload", "sequential_cpu_offload"])),
        block_swap=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=40))),
        workload=Workload(
            width=16 * draw(st.integers(min_value=8, max_value=96)),
            height=16 * draw(st.integers(min_value=8, max_value=96)),
            frames=4 * draw(st.integers(min_value=0, max_value=40)) + 1,
            steps=draw(st.integers(min_value=1, max_value=50)),
        ),
        user_comfyui_args=draw(st.lists(st.sampled_from(USER_TOKENS), max_size=8)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_no_plan_emits_a_flag_comfyui_rejects_and_no_plan_exceeds_the_card(req: PlanRequest) -> None:
    result = plan(req)
    # every argument, the user's included, is one ComfyUI v0.7.0 accepts, with no group conflict
    assert not split_args(result.comfyui_args, FLAGS).rejected
    # the planner's own flags come only from the set it may choose
    own = plan(replace(req, user_comfyui_args=None))
    assert set(split_args(own.comfyui_args, FLAGS).by_flag) <= FLAGS.emittable
    if req.gpu is None:
        assert result.peak_mib == 0
    elif result.fits:
        assert result.peak_mib <= result.usable_mib <= result.card_mib
        assert max(result.phase_mib.values()) == result.peak_mib
    else:
        assert result.error and result.alternatives
