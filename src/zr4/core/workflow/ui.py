"""The SteadyDancer workflow in ComfyUI's UI ("litegraph", schema version 0.4) format.

Why a second format: ComfyUI's Workflows sidebar opens only UI-format files; the API format
(`build.py`, what ``POST /prompt`` takes) opens as an empty canvas with "Workflow does not contain
a valid version". Both formats come from one API-format graph built from one
:class:`~zr4.core.workflow.build.WorkflowSpec`, so they cannot disagree: this module only adds what the
canvas needs (slots, links, widget values in widget order, positions, groups).

The shape follows comfyui-frontend-package 1.35.9's zod schema (``zComfyWorkflow``: last_node_id,
last_link_id, nodes, links as ``[id, origin, origin_slot, target, target_slot, type]``, groups,
config, extra, version) and how it rebuilds a node from its definition (observed in the real
frontend by ``tests/conformance/test_ui_browser.py``): input slots are the link-only inputs, then
the widget inputs, each part in ``input_order`` (required, then optional); each widget input is a
slot with ``widget: {name}``; ``widgets_values`` are in widget order with a ``control_after_generate`` value after a ``seed`` (frontend rule for inputs
named seed/noise_seed) and the upload widget's value after LoadImage's image; VideoHelperSuite
nodes keep theirs as a name -> value object (its ``useKVState`` in web/js/VHS.core.js).

The node definitions come from ``data/comfyui/workflow-nodes-<version>.json``: the entries of the
bundled ``object_info`` for the node types the workflow uses (small, so `zr4 start` reads it fast);
``tests/core/test_workflow_ui.py`` keeps it equal to that subset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from zr4.core.documents import read_document
from zr4.core.workflow.build import NODE_IDS, Workflow
from zr4.errors import Zr4Error
from zr4.paths import data_dir

UI_SCHEMA_VERSION = 0.4
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_INPUTS = ("seed", "noise_seed")  # the frontend adds control_after_generate after these
OPTIONAL_SHAPE = 7  # litegraph's hollow-circle slot shape for an optional input

# Groups, left to right, and the roles (NODE_IDS keys) they hold, top to bottom in columns.
GROUPS: tuple[tuple[str, str, tuple[tuple[str, ...], ...]], ...] = (
    (
        "Pose: driving video -> pose frames",
        "#3f789e",
        (
            ("video", "video_size", "image", "image_resize"),
            ("pose_model", "pose", "pose_resize", "pose_first"),
        ),
    ),
    (
        "Encoders: text, CLIP vision, VAE",
        "#8A8",
        (("text", "clip_vision", "clip_image", "clip_pose"), ("vae", "i2v", "pose_latents", "steadydancer")),
    ),
    (
        "Sampling: SteadyDancer model",
        "#a1309b",
        (
            ("compile", "model", "block_swap", "set_block_swap", "lora", "set_lora"),
            ("context", "sampler_settings", "sampler"),
        ),
    ),
    ("Output: decode and save", "#b58b2a", (("decode", "save"),)),
)
COLUMN_WIDTH = 400
COLUMN_GAP = 40
NODE_GAP = 36
GROUP_GAP = 80
GROUP_TITLE = 40
GROUP_PADDING = 20
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
TITLE_HEIGHT = 30
VIDEO_PREVIEW_HEIGHT = 300  # VHS nodes show the video under their widgets
# The zoom the canvas opens at: frontend 1.35.9 draws node text only while its 14 px
# (NODE_TEXT_SIZE) times the zoom is at least LiteGraph.Canvas.MinFontSizeForLOD (default 8 px),
# i.e. from 0.57; below that every node is a blank box.
VIEW_SCALE = 0.6


class WorkflowUiError(Zr4Error):
    """The node definitions lack something the workflow uses."""


def nodes_file(version: str = "v0.7.0") -> Path:
    return data_dir() / "comfyui" / f"workflow-nodes-{version}.json"


@cache
def load_node_definitions(version: str = "v0.7.0") -> Mapping[str, Any]:
    """object_info entries of the workflow's node types for ComfyUI ``version``."""
    path = nodes_file(version)
    data: dict[str, Any] = read_document(path, WorkflowUiError, "json", f"the node definitions {path}")
    return data


def node_subset(object_info: Mapping[str, Any], types: Sequence[str]) -> dict[str, Any]:
    """The object_info entries of ``types`` (what ``workflow-nodes-<version>.json`` holds)."""
    missing = sorted(set(types) - set(object_info))
    if missing:
        raise WorkflowUiError(f"object_info has no {', '.join(missing)}")
    return {name: object_info[name] for name in sorted(set(types))}


def _kind(raw: Any) -> str:
    kind = raw[0] if isinstance(raw, list | tuple) and raw else raw
    if isinstance(kind, list) or kind == "COMBO":
        return "COMBO"
    return str(kind)


def _options(raw: Any) -> Mapping[str, Any]:
    return raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 and isinstance(raw[1], Mapping) else {}


def ordered_inputs(info: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) in the frontend's order: ``input_order`` required, then optional."""
    sections = info.get("input", {})
    order = info.get("input_order") or {}
    result: list[tuple[str, Any, bool]] = []
    for section, optional in (("required", False), ("optional", True)):
        specs = sections.get(section, {})
        names = order.get(section) or list(specs)
        result += [(name, specs[name], optional) for name in names if name in specs]
    return result


def _is_widget(raw: Any) -> bool:
    return _kind(raw) in WIDGET_TYPES and not _options(raw).get("forceInput")


def slot_order(info: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """Input slots as the frontend lays them out: sockets (link-only inputs) first, then the
    inputs that have a widget, each part in ``input_order``. A file with another order still
    opens (links are matched by name), but the frontend rewrites its slot numbers."""
    inputs = ordered_inputs(info)
    return [i for i in inputs if not _is_widget(i[1])] + [i for i in inputs if _is_widget(i[1])]


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int


def _default(raw: Any) -> Any:
    options = _options(raw)
    if "default" in options:
        return options["default"]
    kind = raw[0] if isinstance(raw, list | tuple) and raw else None
    if isinstance(kind, list):
        return kind[0] if kind else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(_kind(raw))


def _is_vhs(info: Mapping[str, Any]) -> bool:
    return "VideoHelperSuite" in str(info.get("python_module", ""))


def _format_widgets(info: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """VideoHelperSuite's per-format widgets (e.g. crf, pix_fmt) for the chosen format, in order."""
    names: list[str] = []
    for name, raw, _optional in ordered_inputs(info):
        formats = _options(raw).get("formats")
        chosen = values.get(name)
        if isinstance(formats, Mapping) and isinstance(chosen, str):
            names += [w[0] for w in formats.get(chosen, []) if isinstance(w, list) and w]
    return names


def _size(inputs: int, outputs: int, widgets: int, vhs: bool) -> list[int]:
    height = TITLE_HEIGHT + max(inputs, outputs) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 10
    return [COLUMN_WIDTH, height + (VIDEO_PREVIEW_HEIGHT if vhs else 0)]


def build_ui_workflow(api: Workflow, definitions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The UI-format workflow of API-format ``api`` (same node ids, inputs and values)."""
    definitions = definitions if definitions is not None else load_node_definitions()
    missing = sorted({node["class_type"] for node in api.values()} - set(definitions))
    if missing:
        raise WorkflowUiError(f"no node definition for {', '.join(missing)}; regenerate {nodes_file().name}")

    # Links: one per connected input, numbered in (target id, input order).
    links: list[list[Any]] = []
    link_of: dict[tuple[str, str], int] = {}
    outgoing: dict[tuple[str, int], list[int]] = {}
    for node_id in sorted(api, key=int):
        node = api[node_id]
        info = definitions[node["class_type"]]
        inputs = node["inputs"]
        for index, (name, _raw, _optional) in enumerate(slot_order(info)):
            value = inputs.get(name)
            if not _is_link(value):
                continue
            source, output = value
            source_info = definitions[api[source]["class_type"]]
            link_id = len(links) + 1
            links.append([link_id, int(source), output, int(node_id), index, source_info["output"][output]])
            link_of[(node_id, name)] = link_id
            outgoing.setdefault((source, output), []).append(link_id)

    nodes: dict[str, dict[str, Any]] = {}
    for node_id in sorted(api, key=int):
        node = api[node_id]
        class_type = node["class_type"]
        info = definitions[class_type]
        values = node["inputs"]
        slots: list[dict[str, Any]] = []
        widget_names: list[str] = []
        for name, raw, optional in slot_order(info):
            slot: dict[str, Any] = {
                "name": name,
                "localized_name": name,
                "type": _kind(raw),
                "link": link_of.get((node_id, name)),
            }
            if optional:
                slot["shape"] = OPTIONAL_SHAPE
            if _is_widget(raw):
                slot["widget"] = {"name": name}
                widget_names.append(name)
            slots.append(slot)
        outputs = [
            {
                "name": info["output_name"][index],
                "localized_name": info["output_name"][index],
                "type": kind,
                "links": outgoing.get((node_id, index), []),
            }
            for index, kind in enumerate(info["output"])
        ]
        specs = {name: raw for name, raw, _ in ordered_inputs(info)}

        def widget_value(
            name: str, values: Mapping[str, Any] = values, specs: Mapping[str, Any] = specs
        ) -> Any:
            value = values.get(name)
            return _default(specs[name]) if value is None or _is_link(value) else value

        vhs = _is_vhs(info)
        extra = _format_widgets(info, values) if vhs else []
        if vhs:
            widgets_values: Any = {name: widget_value(name) for name in widget_names}
            widgets_values |= {name: values[name] for name in extra if name in values}
            widgets_values["videopreview"] = {"hidden": False, "paused": False, "params": {}}
        else:
            widgets_values = []
            for name in widget_names:
                widgets_values.append(widget_value(name))
                if name in SEED_INPUTS or _options(specs[name]).get("control_after_generate"):
                    widgets_values.append("fixed")
                if _options(specs[name]).get("image_upload"):
                    widgets_values.append("image")  # the upload button's value
        nodes[node_id] = {
            "id": int(node_id),
            "type": class_type,
            "title": node.get("_meta", {}).get("title", class_type),
            "pos": [0, 0],
            "size": _size(len(slots) - len(widget_names), len(outputs), len(widget_names) + len(extra), vhs),
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": slots,
            "outputs": outputs,
            "properties": {"Node name for S&R": class_type},
            "widgets_values": widgets_values,
        }

    for order, node_id in enumerate(_execution_order(api)):
        nodes[node_id]["order"] = order
    groups = _lay_out(nodes)
    return {
        "last_node_id": max(int(node_id) for node_id in api),
        "last_link_id": len(links),
        "nodes": [nodes[node_id] for node_id in sorted(nodes, key=int)],
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": VIEW_SCALE, "offset": [40, 60]}},
        "version": UI_SCHEMA_VERSION,
    }


def _execution_order(api: Workflow) -> list[str]:
    """Node ids sources-first (ties by id), as litegraph's ``order`` field expects."""
    remaining = {
        node_id: {v[0] for v in node["inputs"].values() if _is_link(v)} for node_id, node in api.items()
    }
    done: list[str] = []
    while remaining:
        ready = sorted((n for n, deps in remaining.items() if deps <= set(done)), key=int)
        if not ready:  # a cycle: check.py reports it; keep the rest in id order
            ready = sorted(remaining, key=int)
        for node_id in ready:
            done.append(node_id)
            del remaining[node_id]
    return done


def _lay_out(nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Place nodes in their group's columns; return the groups with their bounding boxes."""
    groups: list[dict[str, Any]] = []
    placed: set[str] = set()
    left = 0
    for index, (title, color, columns) in enumerate(GROUPS, start=1):
        column_x = left + GROUP_PADDING
        bottom = GROUP_TITLE
        used_columns = 0
        for column in columns:
            y = GROUP_TITLE + GROUP_PADDING
            ids = [NODE_IDS[role] for role in column if NODE_IDS[role] in nodes]
            for node_id in ids:
                nodes[node_id]["pos"] = [column_x, y]
                y += nodes[node_id]["size"][1] + NODE_GAP
                placed.add(node_id)
            if ids:
                bottom = max(bottom, y)
                column_x += COLUMN_WIDTH + COLUMN_GAP
                used_columns += 1
        if not used_columns:
            continue
        width = used_columns * COLUMN_WIDTH + (used_columns - 1) * COLUMN_GAP + 2 * GROUP_PADDING
        groups.append(
            {
                "id": index,
                "title": title,
                "bounding": [left, 0, width, bottom - NODE_GAP + GROUP_PADDING],
                "color": color,
                "font_size": 24,
                "flags": {},
            }
        )
        left += width + GROUP_GAP
    for offset, node_id in enumerate(sorted(set(nodes) - placed, key=int)):  # a role no group lists
        nodes[node_id]["pos"] = [left + GROUP_PADDING, GROUP_TITLE + offset * 200]
    return groups


def workflow_node_types() -> tuple[str, ...]:
    """Every node type the builder can emit (a spec with every optional node on)."""
    from zr4.core.workflow.build import WorkflowSpec, build_steadydancer_workflow

    spec = WorkflowSpec(
        variant="fp8",
        diffusion_model_file="x.safetensors",
        torch_compile=True,
        block_swap=1,
    )
    return tuple(sorted({node["class_type"] for node in build_steadydancer_workflow(spec).values()}))


def is_ui_workflow(document: Any) -> bool:
    """UI format: a mapping with ``nodes`` and ``links`` lists (the API format maps ids to nodes)."""
    return isinstance(document, Mapping) and isinstance(document.get("nodes"), list) and "links" in document


def ui_problems(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """What would stop the frontend from opening ``ui`` with every node and link in place."""
    problems: list[str] = []
    if ui.get("version") != UI_SCHEMA_VERSION:
        problems.append(f"version is {ui.get('version')!r}, the frontend's schema is {UI_SCHEMA_VERSION}")
    nodes: dict[int, Mapping[str, Any]] = {
        int(node["id"]): node for node in ui.get("nodes", []) if isinstance(node, Mapping) and "id" in node
    }
    for node in nodes.values():
        if node.get("type") not in object_info:
            problems.append(f"node {node.get('id')}: unknown node type {node.get('type')!r}")
    for link in ui.get("links", []):
        if not isinstance(link, list) or len(link) != 6:
            problems.append(f"link {link!r} is not [id, origin, origin_slot, target, target_slot, type]")
            continue
        link_id, origin, origin_slot, target, target_slot, _kind_name = link
        source, sink = nodes.get(origin), nodes.get(target)
        if source is None or sink is None:
            problems.append(f"link {link_id} joins node {origin} to node {target}, one of which is missing")
            continue
        outputs, inputs = source.get("outputs", []), sink.get("inputs", [])
        if origin_slot >= len(outputs) or link_id not in outputs[origin_slot].get("links", []):
            problems.append(f"link {link_id}: node {origin} output {origin_slot} does not list it")
        if target_slot >= len(inputs) or inputs[target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: node {target} input {target_slot} does not hold it")
    if ui.get("last_node_id") != max(nodes, default=0):
        problems.append("last_node_id is not the highest node id")
    if ui.get("last_link_id") != len(ui.get("links", [])):
        problems.append("last_link_id is not the number of links")
    return problems


def ui_workflow_json(ui: Mapping[str, Any]) -> str:
    """Stable text for a UI-format workflow (keys in insertion order: litegraph's own order)."""
    return json.dumps(ui, indent=2, ensure_ascii=False) + "\n"
