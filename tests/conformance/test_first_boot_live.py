"""What the first boot relies on, against the real ComfyUI v0.7.0 + the pinned node packs on the CPU.

`zr4 start` launches ComfyUI before the models are in (zr4.image.boot_models), so: ComfyUI must start
with its model folders empty, every node pack loaded; it must offer a file moved into a folder after
it started (its listing is cached per folder modification time); and a job's check of the
workflow's files (zr4.client.boot_wait.missing_model_files) must agree with what ComfyUI's own
prompt validation then accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from support.real_comfyui import ComfySources, copy_comfyui, start_comfyui
from zr4.client.boot_wait import missing_model_files
from zr4.client.comfy_api import ComfyClient

pytestmark = pytest.mark.slow


def publish(path: Path) -> None:
    """As the model manager does: the bytes under another name, then one rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(b"\0" * 16)
    os.replace(partial, path)


def test_comfyui_starts_without_models_and_offers_each_file_as_it_lands(
    comfy_sources: ComfySources,
    tmp_path: Path,
    bundled_workflows: dict[tuple[str, str], dict[str, Any]],
    model_files: list[str],
) -> None:
    comfy = copy_comfyui(comfy_sources, tmp_path)
    workflow = bundled_workflows[("4080super", "workflows/steadydancer-gguf.json")]
    for node in workflow.values():  # the inputs a job would have uploaded
        inputs = node["inputs"]
        if node["class_type"] == "LoadImage":
            publish(comfy / "input" / inputs["image"])
        elif node["class_type"] == "VHS_LoadVideo":
            publish(comfy / "input" / inputs["video"])
    models = comfy / "models"
    suffixes = {".safetensors", ".gguf", ".onnx", ".bin", ".pth", ".pt", ".ckpt"}
    assert not [path for path in models.rglob("*") if path.suffix in suffixes]  # no model file at all
    with start_comfyui(comfy, comfy_sources.python, ("--cpu",), log_path=tmp_path / "comfyui.log") as server:
        info = server.object_info()
        assert len(info) > 900, f"a node pack failed to load without models\n{server.log()[-3000:]}"
        client = ComfyClient(server.url)
        before = missing_model_files(client, workflow)
        assert before and all(": " in line for line in before)

        clip = models / "clip_vision" / "clip_vision_h.safetensors"
        publish(clip)
        choices = client.object_info("CLIPVisionLoader")["input"]["required"]["clip_name"][0]  # type: ignore[index]
        assert "clip_vision_h.safetensors" in choices
        assert len(missing_model_files(client, workflow)) == len(before) - 1

        for rel in model_files:
            publish(models / rel)
        assert missing_model_files(client, workflow) == []
        status, answer = server.post_json("/prompt", {"prompt": workflow, "client_id": "zr4-first-boot"})
        node_errors = answer.get("node_errors", {}) if isinstance(answer, dict) else {}
        kinds = {error["type"] for node in node_errors.values() for error in node.get("errors", [])}
        assert "value_not_in_list" not in kinds, answer
        assert status == 200, answer
