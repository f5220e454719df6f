"""`zr4 plan` (budget a profile against a card, offline) and `zr4 tune` (the same on this machine)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import typer

from zr4.errors import UsageError, Zr4Error


class PlanDoesNotFit(Zr4Error):
    """The workload does not fit the card; the plan printed above lists alternatives."""


def _resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--resolution {text!r}: use WIDTHxHEIGHT, e.g. 832x480")
    return int(match.group(1)), int(match.group(2))


def plan_command(
    profile: str = typer.Option("4080super", "--profile", "-p", help="bundled profile name or YAML path"),
    vram_gib: float | None = typer.Option(
        None, "--vram-gib", help="card VRAM in GiB (default: the profile's)"
    ),
    ram_gib: float | None = typer.Option(None, "--ram-gib", help="host RAM in GiB (default: not checked)"),
    resolution: str | None = typer.Option(None, "--resolution", help="WIDTHxHEIGHT, multiples of 16"),
    frames: int | None = typer.Option(None, "--frames", help="frame count, 4n+1"),
    gguf_level: str | None = typer.Option(None, "--gguf-level", help="a GGUF level or auto"),
    variant: str | None = typer.Option(None, "--variant", help="fp16, fp8 or gguf"),
    mode: str | None = typer.Option(
        None, "--mode", help="auto, full, model_cpu_offload, sequential_cpu_offload"
    ),
    comfyui_args: str | None = typer.Option(None, "--comfyui-args", help="check these as COMFYUI_ARGS"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Budget the profile's workload on a card: a table with a bar per component, then decisions."""
    from zr4.compat import ensure_compatible
    from zr4.core import tune
    from zr4.core.planner.format import format_plan
    from zr4.core.planner.request import GpuFacts
    from zr4.core.planner.search import plan
    from zr4.profile import load_profile

    # Each option is checked here, under its own name: the planner reads them as the environment
    # variables the start script sets, whose messages would name a variable the user never typed.
    choices = (
        ("--variant", variant, tune.variant_choice, tune.allowed_variants),
        ("--gguf-level", gguf_level, tune.gguf_level_choice, tune.allowed_gguf_levels),
        ("--mode", mode, tune.memory_mode_choice, tune.allowed_memory_modes),
    )
    for option, value, choose, allowed in choices:
        if value is not None and choose(value) is None:
            raise UsageError(f"{option} {value!r} is not one of: {allowed()}")

    loaded = load_profile(profile)
    # The card and stack must be ones `zr4 render` accepts: a plan for an image that cannot be
    # built (or a card its kernels do not run on) is no plan.
    ensure_compatible(loaded)
    request, warnings = tune.request_from_profile(loaded.model_dump(mode="json"))
    env: dict[str, str] = {}
    if variant is not None:
        env["STEADYDANCER_VARIANT"] = variant
    if gguf_level is not None:
        env["STEADYDANCER_GGUF_MODEL"] = gguf_level
    if mode is not None:
        env["GPU_MEMORY_MODE"] = mode
    if comfyui_args is not None:
        env["COMFYUI_ARGS"] = comfyui_args
    request, _ = tune.apply_env(request, env)  # every value was checked above
    workload = request.workload
    try:
        if resolution is not None:
            width, height = _resolution(resolution)
            workload = replace(workload, width=width, height=height)
        if frames is not None:
            workload = replace(workload, frames=frames)
    except ValueError as error:
        raise UsageError(str(error)) from None
    vram = vram_gib if vram_gib is not None else loaded.gpu.vram_gib
    if vram <= 0:
        raise UsageError("--vram-gib must be positive")
    gpu = GpuFacts(
        name=loaded.gpu.name if vram_gib is None else f"{vram:g} GiB card",
        total_mib=int(vram * 1024) if vram_gib is not None else loaded.gpu.total_mib,
        compute_capability=loaded.gpu.compute_capability,
    )
    request = replace(
        request,
        gpu=gpu,
        workload=workload,
        host_ram_mib=None if ram_gib is None else int(ram_gib * 1024),
        tier=loaded.gpu.tier if vram_gib is None else None,
    )
    result = plan(request)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for warning in warnings:
            typer.echo(f"warning: {warning}")
        typer.echo(format_plan(result), nl=False)
    if not result.fits:
        raise PlanDoesNotFit(
            (result.error or "the plan does not fit")
            if as_json
            else "the plan does not fit this card; the alternatives are listed above"
        )


def tune_command(
    env_lines: bool = typer.Option(False, "--env", help="shell-quoted NAME=value lines for the start script"),
    args: bool = typer.Option(False, "--args", help="the ComfyUI arguments, one per line"),
    as_json: bool = typer.Option(False, "--json", help="detection, plan and env as JSON"),
    profile_json: Path | None = typer.Option(
        None, "--profile-json", help="resolved profile JSON (default: $ZR4_PROFILE or /opt/zr4/profile.json)"
    ),
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="plan with a bundled profile or YAML instead"
    ),
    write_json: Path | None = typer.Option(None, "--write-json", help="also write the JSON to this file"),
    strict: bool = typer.Option(False, "--strict", help="exit 3 when the plan does not fit"),
) -> None:
    """Detect the GPU (NVML, nvidia-smi, or none), plan, and print env lines, ComfyUI args or JSON."""
    import os

    from zr4.core.gpu import detect
    from zr4.core.tune import emit, read_profile, tune

    if sum((env_lines, args, as_json)) > 1:
        raise UsageError("choose one of --env, --args, --json")
    if profile is not None:
        from zr4.profile import load_profile

        profile_data: dict | None = load_profile(profile).model_dump(mode="json")
        profile_warnings: list[str] = []
    else:
        profile_data, profile_warnings = read_profile(profile_json, os.environ)
    result = tune(profile_data, os.environ, detect())
    result = replace(result, warnings=(*profile_warnings, *result.warnings))
    emit(result, env_lines=env_lines, args=args, as_json=as_json)
    if write_json is not None:
        from zr4.core.redact import redact

        write_json.write_text(redact(json.dumps(result.to_dict(), indent=2)) + "\n", encoding="utf-8")
    if strict and not result.plan.fits:
        error = PlanDoesNotFit(result.plan.error or "the plan does not fit")
        error.exit_code = 3
        raise error


def register(app: typer.Typer) -> None:
    """Add the planner's top-level commands to ``app``."""
    app.command("plan")(plan_command)
    app.command("tune")(tune_command)
