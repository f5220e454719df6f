"""Put the SteadyDancer workflow for THIS boot into ComfyUI's workflow browser.

The image carries a workflow rendered for the profile's defaults; at start the variant, GGUF
level and block swap may differ (environment variables, the GGUF fallback, the VRAM planner), and
the GGUF file name is only known once the model manager has listed the repository. So the start
sequence rebuilds the workflow from the files the model manager actually resolved and writes it
to ``<ComfyUI>/user/default/workflows/`` (where ComfyUI's frontend lists saved workflows).

The same settings as ``zr4.render.extras.workflow_spec`` (which the build uses), but file names
come from the resolved model files instead of the manifest defaults; this module stays free of
the renderer (and so of Jinja2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.core.atomic import write_text_atomically
from zr4.core.model_files.selection import FileTarget
from zr4.core.workflow.build import WorkflowSpec, build_steadydancer_workflow

WORKFLOWS_SUBDIR = Path("user") / "default" / "workflows"
# The API-format twin `zr4 dance` and the serverless worker queue (through ComfyUI's /userdata?dir=zr4):
# outside workflows/, whose sidebar cannot open the API format.
API_WORKFLOWS_DIR = "zr4"
API_WORKFLOWS_SUBDIR = Path("user") / "default" / API_WORKFLOWS_DIR
# Manifest entry ids (data/models.yaml) of the files the workflow loads by name.
# The pose files go by id: the mmpose backend adds files of the same roles (DWPose, YOLOX).
_YOLO_ID = "pose-yolov10m"
_VITPOSE_MODEL_ID = "pose-vitpose-h-model"


class MissingModelFile(ValueError):
    """The resolved model files lack one the workflow loads."""


def _by_role(targets: Iterable[FileTarget]) -> dict[str, FileTarget]:
    found: dict[str, FileTarget] = {}
    for target in targets:
        key = target.entry_id if target.entry_id in (_YOLO_ID, _VITPOSE_MODEL_ID) else target.role
        found.setdefault(key, target)
    return found


@dataclass(frozen=True)
class PlannedSettings:
    """The VRAM planner's decisions that have a workflow input (defaults: everything on the GPU).

    On a machine without a GPU the plan puts the text encoder and pose detection on the CPU; a
    workflow that still said ``device: gpu`` / ``CUDAExecutionProvider`` would fail there.
    """

    text_encoder_device: str = "gpu"
    pose_device: str = "gpu"
    vae_tiling: bool = False
    prefetch_blocks: int = 1
    attention: str | None = None  # None: the profile's; the plan's when the card lacks its kernels

    @classmethod
    def from_plan_env(cls, env: Mapping[str, str]) -> PlannedSettings:
        """From the variables `zr4 tune --env` / the start's plan exports (``ZR4_*``)."""
        default = cls()
        prefetch = env.get("ZR4_PREFETCH_BLOCKS", "")
        return cls(
            text_encoder_device=env.get("ZR4_TEXT_ENCODER_DEVICE") or default.text_encoder_device,
            pose_device=env.get("ZR4_POSE_DEVICE") or default.pose_device,
            vae_tiling=env.get("ZR4_VAE_TILING", "").lower() == "true",
            prefetch_blocks=int(prefetch) if prefetch.isdigit() else default.prefetch_blocks,
            attention=env.get("ZR4_ATTENTION") or default.attention,
        )

    @property
    def onnx_device(self) -> str:
        return "CPUExecutionProvider" if self.pose_device == "cpu" else "CUDAExecutionProvider"


def workflow_spec_for_boot(
    profile: Mapping[str, Any],
    targets: Iterable[FileTarget],
    variant: str,
    block_swap: int,
    planned: PlannedSettings | None = None,
) -> WorkflowSpec:
    """The workflow settings for the files this boot resolved and the plan's decisions (pure).

    ``profile`` is the resolved profile as JSON data (``Profile.model_dump(mode="json")``, i.e.
    the baked ``profile.json``): the start sequence reads it without importing Pydantic.
    """
    planned = planned or PlannedSettings()
    files = _by_role(targets)
    workload = profile["workload"]

    def name(role: str) -> str:
        if role not in files:
            raise MissingModelFile(f"no {role} file among the resolved models")
        return files[role].filename

    return WorkflowSpec(
        variant=variant,
        diffusion_model_file=name("steadydancer"),
        text_encoder_file=name("text_encoder"),
        clip_vision_file=name("clip_vision"),
        vae_file=name("vae"),
        lora_file=files["lora"].filename if "lora" in files else None,
        yolo_file=name(_YOLO_ID),
        vitpose_file=name(_VITPOSE_MODEL_ID),
        width=int(workload["width"]),
        height=int(workload["height"]),
        frames=int(workload["frames"]),
        steps=int(workload["steps"]),
        block_swap=block_swap,
        attention=planned.attention or str(profile["features"]["attention"]),
        text_encoder_device=planned.text_encoder_device,
        onnx_device=planned.onnx_device,
        vae_tiling=planned.vae_tiling,
        prefetch_blocks=planned.prefetch_blocks,
    )


def install_workflow(comfyui_dir: Path, spec: WorkflowSpec) -> Path:
    """Write ``steadydancer-<variant>.json`` into ComfyUI's user workflows folder (atomically).

    The Workflows sidebar opens only the UI ("litegraph") format, so that is what goes there; it
    is converted from the same API-format graph ``POST /prompt`` takes. That API-format graph goes
    to ``user/default/zr4/`` under the same name, where `zr4 dance` and the serverless worker find
    it (:func:`zr4.client.job_workflow.find_boot_workflow`).
    """
    from zr4.core.workflow.build import workflow_json
    from zr4.core.workflow.ui import build_ui_workflow, ui_workflow_json

    api = build_steadydancer_workflow(spec)
    name = f"steadydancer-{spec.variant}.json"
    write_text_atomically(comfyui_dir / API_WORKFLOWS_SUBDIR / name, workflow_json(api))
    target = comfyui_dir / WORKFLOWS_SUBDIR / name
    write_text_atomically(target, ui_workflow_json(build_ui_workflow(api)))
    return target
