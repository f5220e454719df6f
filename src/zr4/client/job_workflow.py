"""Fill a job's inputs and parameters into an API-format SteadyDancer workflow.

The workflow is the one the boot wrote (``zr4 start`` builds it from the profile's spec with the
model files it resolved, see :mod:`zr4.core.workflow.install`) or one the caller brings. Nodes
are found by their type, not their id, so a user's own API-format workflow works the same way:

- ``LoadImage``.image ← the uploaded photo;
- ``VHS_LoadVideo``.video ← the uploaded clip; ``frame_load_cap`` ← frames, ``custom_width`` /
  ``custom_height`` ← the size, ``force_rate`` ← fps (every other node takes the size from there);
- the sampler's ``seed`` (``WanVideoSamplerSettings``, ``WanVideoSampler``, ``KSampler`` …),
  ``steps`` and ``cfg``; the text encoder's ``positive_prompt``;
- ``VHS_VideoCombine``.filename_prefix gets the job's tag, so the output is this job's and no other.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zr4.errors import Zr4Error

Workflow = dict[str, dict[str, Any]]

IMAGE_LOADERS = ("LoadImage",)
VIDEO_LOADERS = ("VHS_LoadVideo",)
SAMPLERS = ("WanVideoSamplerSettings", "WanVideoSampler", "KSampler", "KSamplerAdvanced")
TEXT_ENCODERS = ("WanVideoTextEncodeCached", "WanVideoTextEncode")
VIDEO_SAVERS = ("VHS_VideoCombine",)
SEED_MAX = 2**53 - 1  # JSON numbers stay exact below 2**53 in every client
WORKFLOW_DIR = "workflows"


class JobWorkflowError(Zr4Error):
    """The workflow or a parameter cannot make this job; the message says which."""


@dataclass(frozen=True)
class DanceParams:
    """What a job may change; None keeps the workflow's value (a seed of None: a fresh random one)."""

    seed: int | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    fps: float | None = None
    prompt: str | None = None

    def problems(self) -> list[str]:
        found = []
        for name in ("seed", "frames", "width", "height", "steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                found.append(f"{name} must be an integer, got {value!r}")
        if found:
            return found
        if self.seed is not None and not 0 <= self.seed <= SEED_MAX:
            found.append(f"seed={self.seed} must be between 0 and {SEED_MAX}")
        if self.frames is not None and (self.frames < 1 or self.frames % 4 != 1):
            found.append(f"frames={self.frames} must be 4n+1 (81 = 5 s at 16 fps)")
        for axis in ("width", "height"):
            pixels = getattr(self, axis)
            if pixels is not None and (not 64 <= pixels <= 2048 or pixels % 16):
                found.append(f"{axis}={pixels} must be a multiple of 16 between 64 and 2048")
        if (self.width is None) != (self.height is None):
            found.append("give width and height together")
        if self.steps is not None and not 1 <= self.steps <= 200:
            found.append(f"steps={self.steps} must be between 1 and 200")
        if self.cfg is not None and not 0.0 <= float(self.cfg) <= 30.0:
            found.append(f"cfg={self.cfg} must be between 0 and 30")
        if self.fps is not None and not 1 <= float(self.fps) <= 60:
            found.append(f"fps={self.fps} must be between 1 and 60")
        return found

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise JobWorkflowError("; ".join(problems))


@dataclass(frozen=True)
class FilledWorkflow:
    workflow: Workflow
    seed: int
    output_prefix: str
    output_node_ids: tuple[str, ...]


def is_api_workflow(data: Any) -> bool:
    """ComfyUI's API ("prompt") format: ``{"<id>": {"class_type": …, "inputs": {…}}}``."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), dict)
            for node in data.values()
        )
    )


def parse_workflow(text: str | bytes, where: str) -> Workflow:
    """An API-format workflow from JSON text; a UI-format file is refused with the way out."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise JobWorkflowError(f"{where} is not JSON ({error})") from None
    if isinstance(data, dict) and "prompt" in data and is_api_workflow(data["prompt"]):
        data = data["prompt"]  # a saved POST /prompt body
    if not is_api_workflow(data):
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            raise JobWorkflowError(
                f"{where} is a UI-format workflow; export it in API format (Workflow → Export (API))"
            )
        raise JobWorkflowError(f"{where} is not an API-format ComfyUI workflow")
    return data


def _nodes(workflow: Workflow, types: tuple[str, ...]) -> list[str]:
    return sorted((node_id for node_id, node in workflow.items() if node["class_type"] in types), key=_id_key)


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _set(workflow: Workflow, node_ids: list[str], name: str, value: Any) -> None:
    for node_id in node_ids:
        inputs = workflow[node_id]["inputs"]
        if name in inputs and isinstance(inputs[name], list):
            continue  # a link from another node: the value is not ours to set
        inputs[name] = value


def fill_workflow(
    workflow: Mapping[str, Any], image_name: str, video_name: str, params: DanceParams, tag: str
) -> FilledWorkflow:
    """A copy of ``workflow`` with the uploaded files, the parameters and the job's output prefix."""
    params.check()
    filled: Workflow = copy.deepcopy(dict(workflow))
    images, videos = _nodes(filled, IMAGE_LOADERS), _nodes(filled, VIDEO_LOADERS)
    savers = _nodes(filled, VIDEO_SAVERS)
    if not images:
        raise JobWorkflowError("the workflow has no LoadImage node to take the photo")
    if not videos:
        raise JobWorkflowError("the workflow has no VHS_LoadVideo node to take the dance clip")
    if not savers:
        raise JobWorkflowError("the workflow has no VHS_VideoCombine node to save the video")
    _set(filled, images, "image", image_name)
    _set(filled, videos, "video", video_name)
    if params.frames is not None:
        _set(filled, videos, "frame_load_cap", params.frames)
    if params.width is not None and params.height is not None:
        _set(filled, videos, "custom_width", params.width)
        _set(filled, videos, "custom_height", params.height)
    if params.fps is not None:
        _set(filled, videos, "force_rate", float(params.fps))

    seed = params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)
    samplers = _nodes(filled, SAMPLERS)
    for node_id in samplers:
        inputs = filled[node_id]["inputs"]
        key = "noise_seed" if "noise_seed" in inputs else "seed"
        _set(filled, [node_id], key, seed)
    if params.steps is not None:
        _set(filled, samplers, "steps", params.steps)
    if params.cfg is not None:
        _set(filled, samplers, "cfg", float(params.cfg))
    if params.prompt is not None:
        _set(filled, _nodes(filled, TEXT_ENCODERS), "positive_prompt", params.prompt)

    prefixes = []
    for node_id in savers:
        inputs = filled[node_id]["inputs"]
        base = str(inputs.get("filename_prefix") or "SteadyDancer").strip("/") or "SteadyDancer"
        inputs["filename_prefix"] = f"{base}_{tag}"
        inputs["save_output"] = True
        prefixes.append(inputs["filename_prefix"])
    return FilledWorkflow(filled, seed, prefixes[0], tuple(savers))


def find_boot_workflow(client: Any) -> tuple[Workflow, str]:
    """The API-format SteadyDancer workflow the boot installed (newest first). Returns it and its path.

    `zr4 start` writes it to the user folder ``zr4/`` (``workflows/`` gets its UI-format twin, the
    only format ComfyUI's Workflows sidebar opens; see :mod:`zr4.core.workflow.install`). An
    API-format file in ``workflows/`` is taken too, for a workflow a user exported there.
    ``client`` is a :class:`zr4.client.comfy_api.ComfyClient`.
    """
    from zr4.core.workflow.install import API_WORKFLOWS_DIR

    for folder in (API_WORKFLOWS_DIR, WORKFLOW_DIR):
        found = _newest_api_workflow(client, folder)
        if found is not None:
            return found
    raise JobWorkflowError(
        f"ComfyUI at {client.base_url} has no API-format SteadyDancer workflow in its user folders "
        f"{API_WORKFLOWS_DIR}/ or {WORKFLOW_DIR}/ (`zr4 start` writes one at boot); pass --workflow FILE"
    )


def _newest_api_workflow(client: Any, folder: str) -> tuple[Workflow, str] | None:
    entries = client.list_userdata(folder)
    candidates = [
        entry
        for entry in entries
        if str(entry.get("path", "")).lower().endswith(".json")
        and "steadydancer" in str(entry.get("path", "")).lower()
    ]
    candidates.sort(key=lambda entry: float(entry.get("modified", 0) or 0), reverse=True)
    for entry in candidates:
        path = f"{folder}/{entry['path']}"
        try:
            data = json.loads(client.userdata(path))
        except (ValueError, Zr4Error):
            continue
        if isinstance(data, dict) and "prompt" in data and is_api_workflow(data["prompt"]):
            data = data["prompt"]
        if is_api_workflow(data):
            return data, path
    return None
