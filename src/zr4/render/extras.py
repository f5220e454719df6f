"""Build-context files that are copied or generated rather than templated: locks, manifest, workflow."""

from __future__ import annotations

from pathlib import Path

from zr4.errors import Zr4Error
from zr4.paths import data_dir
from zr4.profile.models import Profile
from zr4.render.context import header
from zr4.runtime.models.manifest import Manifest, load_manifest
from zr4.workflow.build import WorkflowSpec, build_steadydancer_workflow, workflow_json

# The block-swap count kijai's SteadyDancer example uses (35 of 40 blocks); `zr4 start` replaces it
# with the VRAM planner's number for the GPU it actually finds.
EXAMPLE_BLOCK_SWAP = 35


def _with_header(profile: Profile, source: Path, what: str) -> bytes:
    if not source.is_file():
        raise Zr4Error(f"{what} {source} is missing; run `zr4 lock --profile {profile.name}` to create it")
    return (header(profile) + "\n" + source.read_text(encoding="utf-8")).encode("utf-8")


def lock_files(profile: Profile) -> dict[str, bytes]:
    """The stack's lock and zr4's own runtime lock, each with the generated-file header."""
    locks = data_dir() / "locks"
    return {
        "requirements.lock": _with_header(profile, locks / f"{profile.stack.lock}.txt", "lock file"),
        "zr4-runtime.lock": _with_header(profile, locks / "zr4-runtime.txt", "lock file"),
    }


def manifest_file(profile: Profile) -> bytes:
    """The model manifest the runtime reads (a copy, so the context describes itself)."""
    return _with_header(profile, data_dir() / "models.yaml", "model manifest")


def _dest_name(manifest: Manifest, entry_id: str) -> str:
    return manifest.entry(entry_id).dest_name


def gguf_file_name(level: str) -> str:
    """The name MCG-NJU/SteadyDancer-GGUF uses for a level (DESIGN.md / ERRATA 18); the runtime lists
    the repository and rewrites the workflow with the file it actually picked."""
    return f"Wan21_I2V_SteadyDancer_fp16-{level}_fix_5d_tensor.gguf"


def workflow_spec(
    profile: Profile, manifest: Manifest, block_swap: int, diffusion_file: str | None = None
) -> WorkflowSpec:
    """The workflow settings for a profile, naming files exactly as the model manager stores them."""
    variant = profile.model.variant
    if diffusion_file is None:
        if variant == "gguf":
            level = (
                profile.model.gguf_level
                if profile.model.gguf_level != "auto"
                else manifest.gguf_default_level
            )
            diffusion_file = gguf_file_name(level)
        else:
            diffusion_file = _dest_name(manifest, f"steadydancer-{variant}")
    text_encoder_id = "text-encoder-bf16" if profile.model.text_encoder == "bf16" else "text-encoder-fp8"
    return WorkflowSpec(
        variant=variant,
        diffusion_model_file=diffusion_file,
        text_encoder_file=_dest_name(manifest, text_encoder_id),
        clip_vision_file=_dest_name(manifest, "clip-vision-h"),
        vae_file=_dest_name(manifest, "vae-bf16"),
        lora_file=_dest_name(manifest, "lightx2v-step-distill-lora")
        if profile.model.step_distill_lora
        else None,
        yolo_file=_dest_name(manifest, "pose-yolov10m"),
        vitpose_file=_dest_name(manifest, "pose-vitpose-h-model"),
        width=profile.workload.width,
        height=profile.workload.height,
        frames=profile.workload.frames,
        steps=profile.workload.steps,
        block_swap=block_swap,
        attention=profile.features.attention,
    )


def workflow_file(profile: Profile) -> tuple[str, bytes]:
    """``workflows/steadydancer-<variant>.json`` for the profile's default variant."""
    manifest = load_manifest()
    block_swap = (
        profile.memory.block_swap if isinstance(profile.memory.block_swap, int) else EXAMPLE_BLOCK_SWAP
    )
    workflow = build_steadydancer_workflow(workflow_spec(profile, manifest, block_swap))
    return f"workflows/steadydancer-{profile.model.variant}.json", workflow_json(workflow).encode("utf-8")
