"""The UI-format ("litegraph") workflow: one graph with the API format, node definitions generated.

That the real frontend opens it from the sidebar with every node, link and group, and that its
``graphToPrompt`` gives back the API twin, is checked in ``tests/conformance/test_ui_browser.py``
(needs the pinned ComfyUI and Chromium). These tests need neither.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.validate_context import context_of, messages
from zr4.core.workflow import WorkflowSpec, build_steadydancer_workflow, load_object_info
from zr4.core.workflow.ui import (
    GROUPS,
    UI_SCHEMA_VERSION,
    WorkflowUiError,
    build_ui_workflow,
    is_ui_workflow,
    load_node_definitions,
    slot_order,
    ui_problems,
    ui_workflow_json,
)
from zr4.paths import data_dir

GENERATOR = data_dir() / "comfyui" / "gen_object_info.py"


@pytest.fixture(scope="module")
def api() -> dict:
    spec = WorkflowSpec(
        variant="fp8", diffusion_model_file="m.safetensors", torch_compile=True, block_swap=20
    )
    return build_steadydancer_workflow(spec)


@pytest.fixture
def ui(api: dict) -> dict:
    return build_ui_workflow(api)


def test_node_definitions_are_generated_from_the_captured_object_info() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--subset-only", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_check_fails_on_a_hand_edit(tmp_path: Path) -> None:
    """--check compares bytes: a hand-edited definitions file is caught (run on a copy of data/)."""
    copy_dir = tmp_path / "comfyui"
    copy_dir.mkdir()
    for name in ("gen_object_info.py", "object_info-v0.7.0.json.gz", "workflow-nodes-v0.7.0.json"):
        (copy_dir / name).write_bytes((data_dir() / "comfyui" / name).read_bytes())
    nodes = copy_dir / "workflow-nodes-v0.7.0.json"
    nodes.write_text(
        nodes.read_text(encoding="utf-8").replace('"default": 81', '"default": 80', 1), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, str(copy_dir / "gen_object_info.py"), "--subset-only", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "workflow-nodes-v0.7.0.json differs" in result.stderr


def test_same_nodes_values_and_links_as_the_api_format(api: dict, ui: dict) -> None:
    assert ui["version"] == UI_SCHEMA_VERSION and is_ui_workflow(ui) and not is_ui_workflow(api)
    assert sorted(str(n["id"]) for n in ui["nodes"]) == sorted(api)
    connected = {
        (int(node_id), name): (int(value[0]), value[1])
        for node_id, node in api.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list)
    }
    by_id = {n["id"]: n for n in ui["nodes"]}
    seen = {}
    for link_id, origin, origin_slot, target, target_slot, kind in ui["links"]:
        slot = by_id[target]["inputs"][target_slot]
        assert slot["link"] == link_id and link_id in by_id[origin]["outputs"][origin_slot]["links"]
        assert kind == by_id[origin]["outputs"][origin_slot]["type"]
        seen[(target, slot["name"])] = (origin, origin_slot)
    assert seen == connected
    assert ui_problems(ui, load_object_info()) == []


def test_widget_values_follow_the_frontend_widget_order(api: dict, ui: dict) -> None:
    sampler = next(n for n in ui["nodes"] if n["type"] == "WanVideoSamplerSettings")
    inputs = api[str(sampler["id"])]["inputs"]
    widgets = [slot["name"] for slot in sampler["inputs"] if "widget" in slot]
    values = list(sampler["widgets_values"])
    for name in widgets:  # values in widget order; "fixed" comes after seed
        assert values.pop(0) == inputs[name], name
        if name == "seed":
            assert values.pop(0) == "fixed"
    assert values == []
    video = next(n for n in ui["nodes"] if n["type"] == "VHS_VideoCombine")  # VideoHelperSuite: by name
    assert video["widgets_values"]["frame_rate"] == api[str(video["id"])]["inputs"]["frame_rate"]


def test_sockets_come_before_widget_inputs() -> None:
    info = load_node_definitions()["ImageResizeKJv2"]
    names = [name for name, _raw, _optional in slot_order(info)]
    assert names[:2] == ["image", "mask"] and names.index("width") > names.index("mask")


def test_every_node_sits_inside_its_group(ui: dict) -> None:
    assert [g["title"] for g in ui["groups"]] == [title for title, _color, _columns in GROUPS]
    for node in ui["nodes"]:
        x, y = node["pos"]
        inside = [
            g["title"]
            for g in ui["groups"]
            if g["bounding"][0] <= x
            and x + node["size"][0] <= g["bounding"][0] + g["bounding"][2]
            and g["bounding"][1] <= y
            and y + node["size"][1] <= g["bounding"][1] + g["bounding"][3]
        ]
        assert len(inside) == 1, (node["id"], node["type"], inside)


def test_the_text_is_deterministic(api: dict) -> None:
    assert ui_workflow_json(build_ui_workflow(api)) == ui_workflow_json(build_ui_workflow(copy.deepcopy(api)))


def test_a_node_type_without_definition_is_named(api: dict) -> None:
    broken = copy.deepcopy(api)
    broken["99"] = {"class_type": "NotANode", "inputs": {}}
    with pytest.raises(WorkflowUiError, match="no node definition for NotANode"):
        build_ui_workflow(broken)


def test_ui_problems_name_a_dangling_link(ui: dict) -> None:
    ui["links"][0][3] = 999
    ui["version"] = None
    problems = ui_problems(ui, load_object_info())
    assert (
        f"link {ui['links'][0][0]} joins node {ui['links'][0][1]} to node 999, one of which is missing"
        in problems
    )
    assert any(p.startswith("version is None") for p in problems)


def test_validate_passes_the_rendered_pair_and_names_one_edited_alone(ctx: Path) -> None:
    from zr4.validate.check_workflow import check_workflows

    assert check_workflows(context_of(ctx)).status == "pass"
    path = next((ctx / "workflows").glob("*.ui.json"))
    ui = json.loads(path.read_text(encoding="utf-8"))
    loader = next(n for n in ui["nodes"] if n["type"] == "WanVideoVAELoader")
    loader["widgets_values"][0] = "other_vae.safetensors"
    path.write_text(json.dumps(ui), encoding="utf-8")
    report = messages(check_workflows(context_of(ctx)))
    assert (
        f"differs from the UI form of its API twin workflows/{path.name.removesuffix('.ui.json')}.json"
        in report
    )


@pytest.mark.parametrize(
    ("class_type", "input_name", "constant"),
    [
        ("WanVideoModelLoader", "attention_mode", "ATTENTION_MODES"),
        ("WanVideoModelLoader", "base_precision", "BASE_PRECISIONS"),
        ("WanVideoModelLoader", "quantization", "QUANTIZATIONS"),
        ("WanVideoTextEncodeCached", "quantization", "TEXT_ENCODER_QUANTIZATIONS"),
        ("WanVideoTextEncodeCached", "device", "TEXT_ENCODER_DEVICES"),
        ("OnnxDetectionModelLoader", "onnx_device", "ONNX_DEVICES"),
    ],
)
def test_the_builder_choice_lists_are_the_generated_definitions(
    class_type: str, input_name: str, constant: str
) -> None:
    """zr4.core.workflow.build names these choices in code (readable errors before any file is read);
    they must be exactly the pinned node packs' own lists."""
    from zr4.core.workflow import build

    specs = {name: raw for name, raw, _optional in slot_order(load_node_definitions()[class_type])}
    assert list(getattr(build, constant)) == specs[input_name][0]
