"""ComfyUI's arguments for a plan: the memory mode's flags, the attention the card can run, and
the user's ``COMFYUI_ARGS`` merged in, less what ComfyUI's environment cannot honour."""

from __future__ import annotations

from zr4.core import arch
from zr4.core.comfy_flags import ZR4_OWNED_FLAGS, FlagSet, RejectedArg, check_environment, merge_args
from zr4.core.planner.request import GpuFacts, PlanRequest
from zr4.core.planner.result import Decision

# Flags ComfyUI is started with by zr4's start command itself, never taken from COMFYUI_ARGS.
START_OWNED_FLAGS = ZR4_OWNED_FLAGS
ATTENTION_FLAGS = {
    "sdpa": "--use-pytorch-cross-attention",
    "flash_attn_2": "--use-flash-attention",
    "flash_attn": "--use-flash-attention",
    "sageattn": "--use-sage-attention",
}


FLASH_ATTENTION = ("flash_attn_2", "flash_attn")


def arch_limits(request: PlanRequest, gpu: GpuFacts) -> tuple[str, list[Decision], list[str], str | None]:
    """The attention the card can run (with the decision and warning when it changed), and why the
    card cannot run the workflow at all (or None).

    The same facts refuse a profile in ``zr4 render`` (src/zr4/compat.py): a card without bf16 in
    hardware, and flash-attn on a card it has no kernels for (ComfyUI would fail at the first
    attention call, so the plan falls back to SDPA rather than emit ``--use-flash-attention``).
    """
    cc = gpu.compute_capability
    if not cc:
        return request.attention, [], [], None
    attention = request.attention
    decisions: list[Decision] = []
    warnings: list[str] = []
    if attention in FLASH_ATTENTION and not arch.flash_attn_runs_on(cc, request.flash_attn_kernel_majors):
        attention = "sdpa"
        built = ", ".join(f"sm_{major}x" for major in request.flash_attn_kernel_majors) or "no card"
        why = f"flash-attn in this image has kernels for {built}, not {arch.sm_name(cc)} ({gpu.name})"
        warnings.append(f"{why}: attention falls back to sdpa")
        decisions.append(Decision("attention", "sdpa", why))
    if not arch.has_bf16(cc):
        return attention, decisions, warnings, arch.missing_bf16_reason(cc, gpu.name)
    return attention, decisions, warnings, None


def flags_for(mode: str, attention: str, flags: FlagSet) -> tuple[list[str], list[Decision]]:
    """The memory mode's and the attention's flags, each with its decision."""
    planned: list[str] = []
    decisions: list[Decision] = []
    if mode == "full":
        planned.append("--highvram")
        decisions.append(
            Decision("--highvram", "on", "every model fits at once: keep them in VRAM between runs")
        )
    elif mode == "model_cpu_offload":
        planned.append("--disable-smart-memory")
        decisions.append(
            Decision(
                "--disable-smart-memory",
                "on",
                "offload each model to RAM after its phase so phases never overlap",
            )
        )
    else:
        planned += ["--lowvram", "--disable-smart-memory"]
        decisions.append(Decision("--lowvram", "on", "ComfyUI's own loaders (CLIP vision) load in parts"))
        decisions.append(
            Decision("--disable-smart-memory", "on", "offload each model to RAM right after use")
        )
    attention_flag = ATTENTION_FLAGS.get(attention)
    if attention_flag is not None:
        planned.append(attention_flag)
        decisions.append(Decision(attention_flag, "on", f"attention {attention} for ComfyUI's own nodes"))
    unknown = [flag for flag in planned if flag not in flags.emittable]
    if unknown:  # the flag data says this version does not take them: emit nothing rather than crash
        planned = [flag for flag in planned if flag in flags.emittable]
    return planned, decisions


def with_user_args(
    planned: list[str], request: PlanRequest, flags: FlagSet
) -> tuple[tuple[str, ...], tuple[RejectedArg, ...], list[str]]:
    """The planned flags merged with COMFYUI_ARGS, less what ComfyUI's environment cannot honour.

    Returns (ComfyUI's arguments, the user's rejected ones, warnings saying what changed).
    """
    warnings: list[str] = []
    environment = request.flag_environment
    if environment is not None:
        planned_kept, unusable = check_environment(planned, flags, environment)
        planned = list(planned_kept)
        warnings += [f"planned flag not passed to ComfyUI: {rejected}" for rejected in unusable]
    final, user_split, dropped = merge_args(
        planned, request.user_comfyui_args, flags, owned=START_OWNED_FLAGS, environment=environment
    )
    warnings += [f"COMFYUI_ARGS overrides the planned {flag}" for flag in dropped]
    warnings += [f"COMFYUI_ARGS: not passed to ComfyUI: {rejected}" for rejected in user_split.rejected]
    return final, user_split.rejected, warnings
