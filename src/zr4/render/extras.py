"""Build-context files that are copied or generated rather than templated: locks, manifest, workflow."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from zr4.core.model_files.manifest import load_manifest
from zr4.core.model_files.selection import FileTarget, select_entries, target_for
from zr4.core.workflow.build import build_steadydancer_workflow, workflow_json
from zr4.core.workflow.install import workflow_spec_for_boot
from zr4.core.workflow.ui import build_ui_workflow, ui_workflow_json
from zr4.errors import Zr4Error
from zr4.paths import data_dir
from zr4.profile.models import Profile
from zr4.render.context import header
from zr4.render.sizing import model_settings

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
        "requirements.lock": _with_header(profile, locks / f"{profile.lock_name}.txt", "lock file"),
        "zr4-runtime.lock": _with_header(profile, locks / "zr4-runtime.txt", "lock file"),
    }


# What the compile stages (mmcv, flash-attn from source) install before compiling: torch and numpy with
# their own dependencies, pinned from the stack's lock. A lock bump that leaves these alone keeps the
# compiled wheels cached.
COMPILE_ROOTS = ("torch", "numpy")


def compile_lock_file(profile: Profile) -> bytes:
    """``compile.lock``: the part of the stack's lock a CUDA extension compile needs, with its hashes."""
    from zr4.lock import lock_subset

    source = data_dir() / "locks" / f"{profile.lock_name}.txt"
    text = _with_header(profile, source, "lock file").decode("utf-8")
    note = (
        f"# {', '.join(COMPILE_ROOTS)} and what they pull in, copied from requirements.lock: all the mmcv and\n"
        "# flash-attn compile stages install, so a lock bump that leaves these pins alone recompiles nothing.\n"
    )
    return (header(profile) + "\n" + note + lock_subset(text, COMPILE_ROOTS)).encode("utf-8")


def flash_attn_lock_file(profile: Profile) -> bytes:
    """``flash-attn.lock``: the release wheel's URL and its pinned sha256, installed with --require-hashes."""
    from zr4.compat import flash_attn_wheel_sha256, flash_attn_wheel_url

    url, digest = flash_attn_wheel_url(profile), flash_attn_wheel_sha256(profile)
    if url is None or digest is None:
        raise Zr4Error(f"profile {profile.name}: no flash-attn release wheel with a pinned sha256")
    return (
        f"{header(profile)}\n"
        "# flash-attn's release wheel for this stack (GitHub release asset), checked by uv --require-hashes.\n"
        f"flash-attn @ {url} \\\n    --hash=sha256:{digest}\n"
    ).encode()


@cache
def zr4_wheel_files() -> dict[str, bytes]:
    """zr4's wheel (as the image installs it) and its ``sha256sum`` line (built once per process)."""
    from zr4.lock import requirement_lines, runtime_requirements_text
    from zr4.render.wheel import SHA256_NAME, WHEEL_NAME, build_wheel, sha256_line

    wheel = build_wheel(requirement_lines(runtime_requirements_text()))
    return {WHEEL_NAME: wheel, SHA256_NAME: sha256_line(wheel)}


def manifest_file(profile: Profile) -> bytes:
    """The model manifest the runtime reads (a copy, so the context describes itself)."""
    return _with_header(profile, data_dir() / "models.yaml", "model manifest")


def gguf_file_name(level: str) -> str:
    """The name MCG-NJU/SteadyDancer-GGUF uses for a level (its Hub file listing); the runtime lists
    the repository and rewrites the workflow with the file it actually picked."""
    return f"Wan21_I2V_SteadyDancer_fp16-{level}_fix_5d_tensor.gguf"


def default_targets(profile: Profile) -> list[FileTarget]:
    """The model files the profile's default settings resolve to, named as the model manager stores them."""
    manifest = load_manifest()
    level = profile.model.gguf_level if profile.model.gguf_level != "auto" else manifest.gguf_default_level
    targets = []
    for entry in select_entries(manifest, model_settings(profile, level)):
        if entry.pick == "gguf_level":
            targets.append(target_for(entry, path=gguf_file_name(level), level=level))
        else:
            targets.append(target_for(entry))
    return targets


def workflow_files(profile: Profile) -> list[tuple[str, bytes]]:
    """``workflows/steadydancer-<variant>.json`` (API format, for ``POST /prompt``) and
    ``workflows/steadydancer-<variant>.ui.json`` (UI format, for the Workflows sidebar) for the
    profile's default variant: both from one graph, with the same builder as at boot."""
    block_swap = (
        profile.memory.block_swap if isinstance(profile.memory.block_swap, int) else EXAMPLE_BLOCK_SWAP
    )
    spec = workflow_spec_for_boot(
        profile.model_dump(mode="json"), default_targets(profile), profile.model.variant, block_swap
    )
    api = build_steadydancer_workflow(spec)
    stem = f"workflows/steadydancer-{profile.model.variant}"
    return [
        (f"{stem}.json", workflow_json(api).encode("utf-8")),
        (f"{stem}.ui.json", ui_workflow_json(build_ui_workflow(api)).encode("utf-8")),
    ]
