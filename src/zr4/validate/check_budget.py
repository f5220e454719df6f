"""Check 11: the profile's models fit the RunPod disks and its variant fits the GPU's VRAM.

Model bytes come from the manifest (`zr4.render.sizing.model_bytes`, the same numbers the
renderer sized the template with); the VRAM verdict from the VRAM planner
(`zr4.core.planner.plan`) for the profile's card, variant, memory mode and workload.
"""

from __future__ import annotations

import json
from typing import Any

from zr4.core import image_layout
from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, outcome

TITLE = "models fit RunPod disks; variant fits VRAM"
GB = 1_000_000_000
_DEFAULT_MODELS_DIR = image_layout.MODELS_DIR


def plan_for_profile(profile: Any) -> Any:
    """The VRAM planner's TuningPlan for the profile's own GPU (None when the planner is absent)."""
    try:
        from zr4.core.planner.request import GpuFacts, PlanRequest, Workload
        from zr4.core.planner.search import plan
    except ImportError:
        return None
    block_swap = profile.memory.block_swap
    request = PlanRequest(
        gpu=GpuFacts(
            name=profile.gpu.name,
            total_mib=profile.gpu.total_mib,
            compute_capability=profile.gpu.compute_capability,
        ),
        variant=profile.model.variant,
        gguf_level=profile.model.gguf_level,
        text_encoder=profile.model.text_encoder,
        step_distill_lora=profile.model.step_distill_lora,
        attention=profile.features.attention,
        pose_backend=profile.features.pose_backend,
        memory_mode=profile.memory.mode,
        block_swap=None if block_swap == "auto" else int(block_swap),
        workload=Workload(
            width=profile.workload.width,
            height=profile.workload.height,
            frames=profile.workload.frames,
            steps=profile.workload.steps,
        ),
        comfyui_version=profile.comfyui.version,
    )
    return plan(request)


def _models_dir(template: dict[str, Any]) -> str:
    for entry in template.get("env") or []:
        if isinstance(entry, dict) and entry.get("key") == "MODELS_DIR" and entry.get("value"):
            return str(entry["value"])
    return _DEFAULT_MODELS_DIR


def disk_findings(model_bytes: int, template: dict[str, Any]) -> tuple[list[Finding], list[str]]:
    """Whether ``model_bytes`` fit the disk that MODELS_DIR lives on in the RunPod template."""
    file = "runpod-template.json"
    models_dir = _models_dir(template)
    mount = str(template.get("volumeMountPath") or "")
    on_volume = bool(mount) and (models_dir == mount or models_dir.startswith(mount.rstrip("/") + "/"))
    disk, key = (
        (template.get("volumeInGb"), "volumeInGb")
        if on_volume
        else (template.get("containerDiskInGb"), "containerDiskInGb")
    )
    needed_gb = model_bytes / GB
    notes = [f"models {needed_gb:.1f} GB in {models_dir} ({key} = {disk})"]
    if not isinstance(disk, int | float):
        return [Finding(f"{key} is missing; the models need {needed_gb:.1f} GB", file)], notes
    if needed_gb > disk:
        return [
            Finding(
                f"the profile's models need {needed_gb:.1f} GB in {models_dir} but {key} is {disk} GB; "
                f"raise runpod.{'volume_gb' if on_volume else 'container_disk_gb'} in the profile to at least "
                f"{int(needed_gb) + 1}",
                file,
            )
        ], notes
    if not on_volume:
        notes.append(
            f"{models_dir} is not on the persistent volume {mount or '(none)'}: models download on every start"
        )
    return [], notes


def check_budget(context: BuildContext) -> CheckResult:
    """Check 11."""
    profile, problem = context.profile
    if profile is None:
        return outcome("budget", TITLE, [Finding(f"{problem}", "profile.json")])
    findings: list[Finding] = []
    notes: list[str] = []
    text = context.read("runpod-template.json")
    if text is None:
        findings.append(Finding("runpod-template.json is missing; render the context with `zr4 render`"))
    else:
        from zr4.render.sizing import model_bytes

        disk, disk_notes = disk_findings(model_bytes(profile), json.loads(text))
        findings += disk
        notes += disk_notes
    planned = plan_for_profile(profile)
    if planned is None:
        findings.extend(_weights_only(profile, notes))
    elif planned.error:
        alternatives = "; ".join(planned.alternatives[:3])
        findings.append(
            Finding(
                f"{profile.model.variant}"
                f"{' ' + profile.model.gguf_level if profile.model.variant == 'gguf' else ''} does not fit "
                f"{profile.gpu.name} ({profile.gpu.vram_gib:g} GiB) under memory mode {profile.memory.mode}: "
                f"{planned.error}" + (f" Options: {alternatives}" if alternatives else ""),
                "profile.json",
            )
        )
    else:
        notes.append(
            f"VRAM plan: peak {planned.peak_mib} of {planned.usable_mib} MiB ({planned.peak_phase}), "
            f"mode {planned.memory_mode}, block swap {planned.block_swap}/40, level {planned.gguf_level or '-'}"
        )
    return outcome("budget", TITLE, findings, notes)


def _weights_only(profile: Any, notes: list[str]) -> list[Finding]:
    """Without the planner: the diffusion weights alone against the card (block swap off)."""
    from zr4.core.model_files.manifest import load_manifest

    manifest = load_manifest()
    level = profile.model.gguf_level if profile.model.gguf_level != "auto" else manifest.gguf_default_level
    entry = manifest.entry(f"steadydancer-{profile.model.variant}")
    size = entry.size or entry.size_estimates.get(level) or entry.size_estimate or 0
    notes.append("VRAM planner not available: diffusion weights vs VRAM only")
    if size > profile.gpu.vram_gib * 1024**3 and profile.memory.block_swap == 0:
        return [
            Finding(
                f"{entry.id} weights ({size / GB:.1f} GB) exceed {profile.gpu.vram_gib:g} GiB with block swap "
                f"off; set memory.block_swap to auto or a smaller variant",
                "profile.json",
            )
        ]
    return []
