"""Why the plan is what it is: a reason per decision, the warnings, and when nothing fits, the
changes that would (each one checked by planning it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from zr4.core.planner.bisection import largest
from zr4.core.planner.budget import DiffusionWeights, Evaluation, Layout
from zr4.core.planner.facts import Facts, hub_size
from zr4.core.planner.formulas import GIB_MIB
from zr4.core.planner.request import GpuFacts, PlanRequest
from zr4.core.planner.result import PHASE_LABELS, Decision, TuningPlan


def layout_decisions(
    *,
    request: PlanRequest,
    facts: Facts,
    weights: DiffusionWeights,
    layout: Layout,
    level_why: str | None,
) -> list[Decision]:
    """The GGUF level (``level_why`` None: as configured), the memory mode, block swap and prefetch,
    and where the text encoder, the pose models and the VAE decode run."""
    decisions: list[Decision] = []
    if request.variant == "gguf":
        why = "as configured" if level_why is None else f"auto: {level_why}"
        decisions.append(Decision("GGUF level", str(weights.level), why))
    mode_why = {
        "full": "every model and the largest transient fit on the card at once",
        "model_cpu_offload": f"one phase at a time fits with all {weights.blocks} blocks on the GPU",
        "sequential_cpu_offload": f"sampling fits only with {layout.swap} of {weights.blocks} blocks in host RAM",
    }[layout.mode]
    if request.memory_mode != "auto":
        mode_why = f"forced ({request.memory_mode})"
    decisions.append(Decision("memory mode", layout.mode, mode_why))
    swap_why = (
        "no swap needed"
        if layout.swap == 0
        else f"fewest blocks that let sampling fit; {layout.swap} × {weights.block_bytes / 1e6:.0f} MB = "
        f"{layout.swap * weights.block_bytes / 1e9:.1f} GB streamed from host RAM per model call"
    )
    if request.block_swap is not None:
        swap_why = "forced by the profile (memory.block_swap)"
    decisions.append(Decision("block swap", f"{layout.swap} of {weights.blocks}", swap_why))
    if layout.swap:
        decisions.append(
            Decision(
                "prefetch blocks",
                str(layout.prefetch),
                "one block prefetched hides most of the transfer time"
                if layout.prefetch
                else "no room to prefetch a block",
            )
        )
    decisions.append(
        Decision(
            "text encoder device",
            "gpu" if layout.text_on_gpu else "cpu",
            "fits on the card before sampling"
            if layout.text_on_gpu
            else "does not fit on the card: encode on the CPU (slower, once per prompt)",
        )
    )
    decisions.append(
        Decision(
            "pose device",
            "gpu" if layout.pose_on_gpu else "cpu",
            "fits on the card"
            if layout.pose_on_gpu
            else "does not fit on the card: run pose detection on the CPU (ONNX CPUExecutionProvider)",
        )
    )
    decisions.append(
        Decision(
            "VAE tiling",
            "on" if layout.vae_tiled else "off",
            f"an untiled decode does not fit: {facts.decode.tile_px} px tiles"
            if layout.vae_tiled
            else "the untiled decode fits",
        )
    )
    return decisions


def layout_warnings(
    *, request: PlanRequest, facts: Facts, weights: DiffusionWeights, layout: Layout
) -> list[str]:
    """An upper-bound model size, and a bf16 text encoder that had to move to the CPU."""
    warnings = [weights.note] if weights.note else []
    if not layout.text_on_gpu and request.text_encoder == "bf16":
        fp8 = facts.encoders.text["fp8"]
        assert fp8.bytes is not None
        warnings.append(
            f"the bf16 text encoder does not fit on the GPU; the fp8 one ({hub_size(fp8.bytes)}) might"
        )
    return warnings


def host_ram_warning(*, request: PlanRequest, evaluation: Evaluation, weights: DiffusionWeights) -> list[str]:
    """What is offloaded does not fit the host's RAM: a warning, since the card itself is fine."""
    ram = request.host_ram_mib
    if ram is None or evaluation.host_ram_needed_mib <= ram:
        return []
    layout = evaluation.layout
    return [
        f"host RAM {ram / GIB_MIB:.1f} GiB cannot hold what is offloaded "
        f"({evaluation.host_ram_needed_mib / GIB_MIB:.1f} GiB: {layout.swap} swapped blocks = "
        f"{layout.swap * weights.block_bytes / 2**30:.1f} GiB, plus encoders, VAE and ComfyUI itself); "
        "expect swapping to disk or an out-of-memory kill"
    ]


def misfit_error(evaluation: Evaluation, gpu: GpuFacts) -> str:
    return (
        f"does not fit: {PHASE_LABELS[evaluation.peak_phase]} needs {evaluation.peak_mib:,} MiB, "
        f"the card has {gpu.usable_mib:,} MiB usable"
    )


def alternatives(
    request: PlanRequest,
    facts: Facts,
    failed: Evaluation,
    replan: Callable[[PlanRequest], TuningPlan],
) -> list[str]:
    """Concrete changes that would fit, each checked by planning it with ``replan``."""
    out: list[str] = []
    forced = request.memory_mode != "auto" or request.block_swap is not None
    prefix = "GPU_MEMORY_MODE=auto and " if forced else ""

    def fits(changed: PlanRequest) -> TuningPlan | None:
        result = replan(changed)
        return result if result.fits else None

    if request.memory_mode != "auto" or request.block_swap is not None:
        relaxed = fits(replace(request, memory_mode="auto", block_swap=None))
        if relaxed is not None:
            out.append(
                f"GPU_MEMORY_MODE=auto (plans {relaxed.memory_mode} with {relaxed.block_swap} blocks swapped)"
            )
    if request.variant != "gguf" or request.gguf_level.lower() != "auto":
        current = facts.gguf_levels.index(request.gguf_level.upper()) if request.variant == "gguf" else None
        for level in facts.auto_candidates:
            if current is not None and facts.gguf_levels.index(level) >= current:
                continue
            result = fits(
                replace(request, variant="gguf", gguf_level=level, memory_mode="auto", block_swap=None)
            )
            if result is not None:
                out.append(
                    f"{prefix}STEADYDANCER_VARIANT=gguf STEADYDANCER_GGUF_MODEL={level} "
                    f"({result.memory_mode}, {result.block_swap} blocks swapped)"
                )
                break
    if request.text_encoder == "bf16":
        result = fits(replace(request, text_encoder="fp8", memory_mode="auto", block_swap=None))
        if result is not None:
            fp8 = facts.encoders.text["fp8"]
            assert fp8.bytes is not None
            out.append(f"{prefix}the fp8 text encoder ({fp8.stem}, {hub_size(fp8.bytes)})")
    w = request.workload
    # fewer frames never need more memory: the most latent frames that fit, by bisection
    latent = largest(
        1,
        w.latent_frames - 1,
        lambda n: (
            fits(replace(request, workload=replace(w, frames=4 * n - 3), memory_mode="auto", block_swap=None))
            is not None
        ),
    )
    if latent is not None:
        out.append(f"{prefix}{4 * latent - 3} frames instead of {w.frames} at {w.width}×{w.height}")
    out.append(f"a card with at least {failed.peak_mib / GIB_MIB:.1f} GiB free for this plan")
    return out
