"""``zr4 tune``: detect the GPU, plan, and hand the result to the start command.

Inputs, later ones winning: the resolved profile baked into the image (``/opt/zr4/profile.json``,
or ``$ZR4_PROFILE``), then the environment variables (docs/reference/environment.md): ``STEADYDANCER_VARIANT``,
``STEADYDANCER_GGUF_MODEL`` (a level or ``auto``), ``GPU_MEMORY_MODE`` and the more specific
``STEADYDANCER_GPU_MEMORY_MODE``, ``GPU_TIER``, and ``COMFYUI_ARGS`` (the user's own ComfyUI flags;
ones the pinned ComfyUI rejects are reported and dropped). A bad value is a warning, never a crash.

Output: shell-quoted ``NAME=value`` lines (``--env``), the ComfyUI arguments (``--args``), JSON
(``--json``), or a readable report. Runs without Typer or Pydantic: ``python -m zr4.core.tune``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zr4.core import arch
from zr4.core.baked_profile import baked_profile_path, read_baked_profile
from zr4.core.comfy_flags import FlagEnvironment
from zr4.core.gguf_level import parse_gguf_level
from zr4.core.gpu import Detection, detect
from zr4.core.planner.facts import load_facts
from zr4.core.planner.format import format_plan
from zr4.core.planner.request import MEMORY_MODES, GpuFacts, PlanRequest, Workload
from zr4.core.planner.result import TuningPlan
from zr4.core.planner.search import plan

TIERS = ("consumer", "prosumer", "datacenter")
VARIANTS = ("fp16", "fp8", "gguf")


@dataclass(frozen=True)
class TuneResult:
    detection: Detection
    request: PlanRequest
    plan: TuningPlan
    warnings: tuple[str, ...] = field(default_factory=tuple)  # from reading inputs

    def env(self) -> dict[str, str]:
        """What the start command exports (documented names first, zr4's own after)."""
        p = self.plan
        values = {
            "GPU_TIER": p.tier,
            "GPU_MEMORY_MODE": p.memory_mode,
            "STEADYDANCER_GPU_MEMORY_MODE": p.memory_mode,
            "STEADYDANCER_VARIANT": p.variant,
            "COMFYUI_ARGS": shlex.join(p.comfyui_args),
            "ZR4_BLOCK_SWAP": str(p.block_swap),
            "ZR4_PREFETCH_BLOCKS": str(p.prefetch_blocks),
            "ZR4_TEXT_ENCODER_DEVICE": p.text_encoder_device,
            "ZR4_POSE_DEVICE": p.pose_device,
            "ZR4_VAE_TILING": "true" if p.vae_tiling else "false",
            "ZR4_ATTENTION": p.attention,
            "ZR4_PLAN_FITS": "true" if p.fits else "false",
            "ZR4_VRAM_PEAK_MIB": str(p.peak_mib),
            "ZR4_GPU_COUNT": str(self.detection.gpu_count),
        }
        if p.gguf_level is not None:
            values["STEADYDANCER_GGUF_MODEL"] = p.gguf_level
        return values

    def env_lines(self) -> list[str]:
        return [f"{name}={shlex.quote(value)}" for name, value in self.env().items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "detection": self.detection.to_dict(),
            "plan": self.plan.to_dict(),
            "env": self.env(),
            "input_warnings": list(self.warnings),
        }


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def normalise_gguf_level(value: str, known: Sequence[str]) -> str | None:
    """``q4_k_m``, ``Q4_K_M``, ``q4`` -> ``Q4_K_M``; ``auto`` -> ``auto``; unknown -> None."""
    return parse_gguf_level(value, known)


def request_from_profile(profile: Mapping[str, Any]) -> tuple[PlanRequest, list[str]]:
    """A PlanRequest from a resolved profile as JSON (``Profile.model_dump()``), without Pydantic."""
    warnings: list[str] = []

    def section(name: str) -> Mapping[str, Any]:
        value = profile.get(name)
        return value if isinstance(value, Mapping) else {}

    model, features, memory, workload, comfyui, stack, gpu = (
        section("model"),
        section("features"),
        section("memory"),
        section("workload"),
        section("comfyui"),
        section("stack"),
        section("gpu"),
    )
    defaults = PlanRequest(gpu=None)
    block_swap = memory.get("block_swap", "auto")
    try:
        work = Workload(
            width=int(workload.get("width", defaults.workload.width)),
            height=int(workload.get("height", defaults.workload.height)),
            frames=int(workload.get("frames", defaults.workload.frames)),
            steps=int(workload.get("steps", defaults.workload.steps)),
        )
    except (TypeError, ValueError) as error:
        warnings.append(f"profile workload ignored ({error}); using {defaults.workload}")
        work = defaults.workload
    request = PlanRequest(
        gpu=None,
        variant=model.get("variant", defaults.variant),
        gguf_level=str(model.get("gguf_level", defaults.gguf_level)),
        text_encoder=model.get("text_encoder", defaults.text_encoder),
        step_distill_lora=bool(model.get("step_distill_lora", defaults.step_distill_lora)),
        attention=str(features.get("attention", defaults.attention)),
        pose_backend=features.get("pose_backend", defaults.pose_backend),
        memory_mode=str(memory.get("mode", "auto")),
        block_swap=None if block_swap in (None, "auto") else int(block_swap),
        workload=work,
        comfyui_version=str(comfyui.get("version", defaults.comfyui_version)),
        flash_attn_kernel_majors=_flash_attn_kernel_majors(features, stack, gpu, defaults),
    )
    return request, warnings


def _flash_attn_kernel_majors(
    features: Mapping[str, Any], stack: Mapping[str, Any], gpu: Mapping[str, Any], defaults: PlanRequest
) -> tuple[int, ...]:
    """What the image's flash-attn was built for: the release wheel, or the Dockerfile's source
    build (FLASH_ATTN_CUDA_ARCHS from the profile's card and extra arches, the stack's nvcc)."""
    if features.get("flash_attn_source") != "source":
        return defaults.flash_attn_kernel_majors
    try:
        arches = [str(gpu["compute_capability"]), *map(str, gpu.get("extra_cuda_arches") or [])]
        version = stack.get("flash_attn")
        majors = arch.flash_attn_kernel_majors(
            str(stack["cuda"]), arches, None if version is None else str(version)
        )
        return tuple(sorted(majors))
    except (KeyError, ValueError):
        return defaults.flash_attn_kernel_majors


def variant_choice(value: str) -> str | None:
    """A SteadyDancer variant as written (any case), or None when it is none of :data:`VARIANTS`."""
    text = value.strip().lower()
    return text if text in VARIANTS else None


def memory_mode_choice(value: str) -> str | None:
    """``auto`` or one of the planner's memory modes (any case), or None."""
    text = value.strip().lower()
    return text if text == "auto" or text in MEMORY_MODES else None


def gguf_level_choice(value: str) -> str | None:
    """``auto`` or a GGUF level the planner knows (short forms too), or None."""
    return normalise_gguf_level(value, load_facts().gguf_levels)


def allowed_variants() -> str:
    return ", ".join(VARIANTS)


def allowed_memory_modes() -> str:
    return ", ".join(("auto", *MEMORY_MODES))


def allowed_gguf_levels() -> str:
    return "auto, " + ", ".join(load_facts().gguf_levels) + " (or Q2, Q3, Q4, Q5, Q6, Q8)"


def apply_env(request: PlanRequest, environ: Mapping[str, str]) -> tuple[PlanRequest, list[str]]:
    """The environment variables over the profile's choices; invalid values are reported and ignored."""
    warnings: list[str] = []
    changes: dict[str, Any] = {}
    variant = _env(environ, "STEADYDANCER_VARIANT")
    if variant is not None:
        chosen = variant_choice(variant)
        if chosen is not None:
            changes["variant"] = chosen
        else:
            warnings.append(f"STEADYDANCER_VARIANT={variant!r} ignored: use {allowed_variants()}")
    level = _env(environ, "STEADYDANCER_GGUF_MODEL")
    if level is not None:
        normalised = gguf_level_choice(level)
        if normalised is None:
            warnings.append(
                f"STEADYDANCER_GGUF_MODEL={level!r} ignored: not a GGUF level; use {allowed_gguf_levels()}"
            )
        else:
            changes["gguf_level"] = normalised
    for name in ("GPU_MEMORY_MODE", "STEADYDANCER_GPU_MEMORY_MODE"):  # the SteadyDancer one wins
        mode = _env(environ, name)
        if mode is None:
            continue
        chosen = memory_mode_choice(mode)
        if chosen is not None:
            changes["memory_mode"] = chosen
            changes["block_swap"] = None  # a forced mode picks its own swap count
        else:
            warnings.append(f"{name}={mode!r} ignored: use {allowed_memory_modes()}")
    tier = _env(environ, "GPU_TIER")
    if tier is not None and tier.lower() != "auto":
        if tier.lower() in TIERS:
            changes["tier"] = tier.lower()
        else:
            warnings.append(f"GPU_TIER={tier!r} ignored: use auto, {', '.join(TIERS)}")
    args = environ.get("COMFYUI_ARGS")
    if args is not None and args.strip():
        changes["user_comfyui_args"] = args
    return replace(request, **changes), warnings


def read_profile(path: Path | None, environ: Mapping[str, str]) -> tuple[dict[str, Any] | None, list[str]]:
    """The baked resolved profile as a dict, or None with a warning."""
    candidate = path or baked_profile_path(environ)
    try:
        data = read_baked_profile(candidate, ValueError, f"resolved profile {candidate}", missing_ok=True)
    except ValueError as error:
        return None, [f"{error}; planning with the built-in defaults"]
    if data is None:
        return None, [f"no resolved profile at {candidate}; planning with the built-in defaults"]
    return data, []


def gpu_facts(detection: Detection) -> GpuFacts | None:
    gpu = detection.primary
    if gpu is None:
        return None
    return GpuFacts(
        name=gpu.name,
        total_mib=gpu.total_mib,
        free_mib=gpu.free_mib,
        compute_capability=gpu.compute_capability,
        count=max(detection.gpu_count, 1),
    )


def tune(
    profile: Mapping[str, Any] | None,
    environ: Mapping[str, str],
    detection: Detection,
    flag_environment: FlagEnvironment | None = None,
) -> TuneResult:
    """Plan for the detected machine. Never raises for bad input: it becomes a warning.

    ``flag_environment``: ComfyUI's interpreter and folder, when the plan is for this machine's
    ComfyUI (`zr4 start`); its flags are then only those that ComfyUI can start with.
    """
    warnings: list[str] = []
    if profile is not None:
        request, profile_warnings = request_from_profile(profile)
        warnings += profile_warnings
    else:
        request = PlanRequest(gpu=None)
    request, env_warnings = apply_env(request, environ)
    warnings += env_warnings
    host_ram = detection.host_ram.total_mib if detection.host_ram is not None else None
    request = replace(
        request, gpu=gpu_facts(detection), host_ram_mib=host_ram, flag_environment=flag_environment
    )
    if detection.gpu_count > 1:
        warnings.append(f"{detection.gpu_count} GPUs: ComfyUI runs on one; planned for GPU 0 only")
    try:
        result = plan(request)
    except ValueError as error:  # e.g. an unknown memory mode or GGUF level in the profile
        warnings.append(f"profile value ignored ({error}); planning with auto settings")
        request = replace(request, memory_mode="auto", block_swap=None, gguf_level="auto")
        result = plan(request)
    return TuneResult(detection=detection, request=request, plan=result, warnings=tuple(warnings))


def format_report(result: TuneResult) -> str:
    d = result.detection
    lines = [f"detection: {d.source}, {d.gpu_count} GPU(s)"]
    for gpu in d.gpus:
        free = f", {gpu.free_mib:,} MiB free" if gpu.free_mib is not None else ""
        lines.append(
            f"  GPU {gpu.index}: {gpu.name}, {gpu.total_mib:,} MiB{free}, compute capability "
            f"{gpu.compute_capability or 'unknown'}"
        )
    lines.append(
        f"  driver {d.driver_version or 'unknown'}, CUDA (driver) {d.cuda_driver_version or 'unknown'}"
    )
    if d.host_ram is not None:
        limit = " (cgroup limit)" if d.host_ram.cgroup_limit_mib == d.host_ram.total_mib else ""
        lines.append(f"  host RAM {d.host_ram.total_mib / 1024:.1f} GiB{limit}")
    for warning in (*d.warnings, *result.warnings):
        lines.append(f"warning: {warning}")
    return "\n".join(lines) + "\n\n" + format_plan(result.plan)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    from zr4.core.redact import redact, redact_process_output

    redact_process_output()
    parser = argparse.ArgumentParser(
        prog="zr4 tune", description="Detect the GPU, plan VRAM, print the result."
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--env", action="store_true", help="shell-quoted NAME=value lines")
    output.add_argument("--args", action="store_true", help="the ComfyUI arguments, one per line")
    output.add_argument("--json", action="store_true", help="detection, plan and env as JSON")
    parser.add_argument("--profile-json", type=Path, default=None, help="resolved profile JSON")
    parser.add_argument("--write-json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 3 when the plan does not fit")
    options = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    profile, profile_warnings = read_profile(options.profile_json, env)
    result = tune(profile, env, detect(env))
    result = replace(result, warnings=(*profile_warnings, *result.warnings))
    emit(result, env_lines=options.env, args=options.args, as_json=options.json)
    if options.write_json is not None:
        options.write_json.write_text(redact(json.dumps(result.to_dict(), indent=2)) + "\n", encoding="utf-8")
    return 3 if options.strict and not result.plan.fits else 0


def emit(result: TuneResult, env_lines: bool = False, args: bool = False, as_json: bool = False) -> None:
    """Print one of the output forms; warnings go to stderr except in the readable report."""
    if env_lines or args or as_json:
        for warning in (*result.detection.warnings, *result.warnings, *result.plan.warnings):
            print(f"zr4 tune: warning: {warning}", file=sys.stderr)
        if result.plan.error:
            print(f"zr4 tune: warning: {result.plan.error}", file=sys.stderr)
    if env_lines:
        print("\n".join(result.env_lines()))
    elif args:
        print("\n".join(result.plan.comfyui_args))
    elif as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.write(format_report(result))


if __name__ == "__main__":
    raise SystemExit(main())
