"""Check a ComfyUI API-format workflow against ComfyUI's node definitions (`/object_info`).

It catches, before any GPU time is spent, what ComfyUI's own `validate_prompt` would reject when
the workflow is queued, and a little more:

- a node type the pinned ComfyUI + custom nodes do not register;
- a required input neither set nor connected;
- a link to a node that is not there, to an output index the node does not have, or from an
  output whose type the input does not take (`*` and comma-separated unions as ComfyUI does);
- a value of the wrong kind for INT / FLOAT / BOOLEAN / STRING (stricter than ComfyUI, which
  would coerce "5" to 5: a generator that writes the wrong kind has a bug), outside min/max,
  or not among a COMBO's choices;
- a value given to an input that only takes a connection (e.g. WANVIDEOMODEL);
- a workflow with no output node, or with a cycle.

COMBOs whose choices are files are checked only for a non-empty file name: object_info was
captured with empty model folders (so model lists are empty) and an input folder holding only
ComfyUI's example (LoadImage's `image_upload` list); the real names exist only on the pod.

Unknown input names are warnings, not errors: ComfyUI ignores inputs a node does not declare, so
the workflow still runs, but the value has no effect — usually a typo or a renamed input. The
inputs VideoHelperSuite adds per chosen format (`formats` in the `format` COMBO's options, e.g.
crf and pix_fmt for video/h264-mp4) count as declared and are type-checked too.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zr4.errors import Zr4Error
from zr4.paths import data_dir

Severity = Literal["error", "warning"]

# Inputs whose COMBO lists files in a ComfyUI folder, flagged in object_info.
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload")
_SHOWN_CHOICES = 12


@dataclass(frozen=True)
class WorkflowProblem:
    """One thing wrong with one node's input (or with the workflow, when node_id is empty)."""

    node_id: str
    class_type: str
    input_name: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "workflow"
        if self.input_name:
            where += f" input '{self.input_name}'"
        return f"{self.severity}: {where}: {self.message}"


def errors_only(problems: list[WorkflowProblem]) -> list[WorkflowProblem]:
    return [p for p in problems if p.severity == "error"]


def load_object_info(version: str = "v0.7.0") -> dict[str, Any]:
    """The bundled `/object_info` of ComfyUI `version` with zr4's pinned custom nodes."""
    folder = data_dir() / "comfyui"
    path = folder / f"object_info-{version}.json.gz"
    if not path.is_file():
        bundled = sorted(
            p.name.removeprefix("object_info-").removesuffix(".json.gz")
            for p in folder.glob("object_info-*.json.gz")
        )
        raise Zr4Error(
            f"no ComfyUI node definitions bundled for {version} (have: {', '.join(bundled) or 'none'}); "
            f"capture GET /object_info from that ComfyUI into {path}"
        )
    with gzip.open(path, "rb") as handle:
        info: dict[str, Any] = json.load(handle)
    return info


@dataclass(frozen=True)
class _InputSpec:
    name: str
    type: Any  # "INT", "WANVAE", "*", "A,B" or a list of choices (COMBO)
    options: Mapping[str, Any]
    required: bool


def _parse_spec(name: str, raw: Any, required: bool) -> _InputSpec:
    if isinstance(raw, str):  # hidden inputs: "UNIQUE_ID", "PROMPT"
        return _InputSpec(name, raw, {}, required)
    kind = raw[0] if raw else "*"
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if kind == "COMBO":  # V3 nodes: ["COMBO", {"options": [...]}]
        kind = list(options.get("options", []))
    return _InputSpec(name, kind, options, required)


def _declared_inputs(node_info: Mapping[str, Any]) -> tuple[dict[str, _InputSpec], set[str]]:
    inputs = node_info.get("input", {})
    declared: dict[str, _InputSpec] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, raw in inputs.get(section, {}).items():
            declared[name] = _parse_spec(name, raw, required)
    return declared, set(inputs.get("hidden", {}))


def _format_extras(declared: Mapping[str, _InputSpec], values: Mapping[str, Any]) -> dict[str, _InputSpec]:
    """VideoHelperSuite's per-format widgets for the format the workflow picked."""
    extras: dict[str, _InputSpec] = {}
    for spec in declared.values():
        formats = spec.options.get("formats")
        chosen = values.get(spec.name)
        if not isinstance(formats, Mapping) or not isinstance(chosen, str):
            continue
        widgets = formats.get(chosen)
        if not isinstance(widgets, list):
            continue
        for widget in widgets:
            if isinstance(widget, list) and widget and isinstance(widget[0], str):
                extras[widget[0]] = _parse_spec(widget[0], widget[1:], required=False)
    return extras


def _type_name(kind: Any) -> str:
    return "COMBO" if isinstance(kind, list) else str(kind)


def _types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, `*`, or overlapping unions."""
    received, wanted = _type_name(received), _type_name(wanted)
    if received == wanted or "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _is_file_combo(spec: _InputSpec) -> bool:
    return isinstance(spec.type, list) and (not spec.type or any(spec.options.get(f) for f in _UPLOAD_FLAGS))


def _show_choices(choices: list[Any]) -> str:
    shown = ", ".join(repr(c) for c in choices[:_SHOWN_CHOICES])
    return shown + (f", … ({len(choices)} in all)" if len(choices) > _SHOWN_CHOICES else "")


def _value_problem(spec: _InputSpec, value: Any, strict_files: bool = False) -> str | None:
    kind = spec.type
    if isinstance(kind, list):
        if _is_file_combo(spec) and not strict_files:
            if isinstance(value, str) and value.strip():
                return None
            return f"must be a file name (a non-empty string), got {value!r}"
        if value in kind and type(value) in {type(c) for c in kind}:
            return None
        return f"{value!r} is not a valid choice; choose one of: {_show_choices(kind)}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, got {value!r}"
    elif kind == "FLOAT":
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
        return None
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        return None
    else:
        return f"takes a connection from a node output of type {kind}, not the value {value!r}"
    low, high = spec.options.get("min"), spec.options.get("max")
    if isinstance(low, int | float) and value < low:
        return f"{value} is below the minimum {low}"
    if isinstance(high, int | float) and value > high:
        return f"{value} is above the maximum {high}"
    return None


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int


def _link_problem(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any], spec: _InputSpec, value: list[Any]
) -> str | None:
    source_id, index = value
    source = workflow.get(source_id)
    if not isinstance(source, Mapping):
        return f"is connected to node {source_id!r}, which is not in the workflow"
    source_type = source.get("class_type")
    source_info = object_info.get(source_type) if isinstance(source_type, str) else None
    if source_info is None:
        return None  # the unknown source node is reported on its own
    outputs = source_info.get("output", [])
    names = source_info.get("output_name", [])
    if not 0 <= index < len(outputs):
        return f"is connected to output {index} of node {source_id} ({source_type}), which has outputs 0..{len(outputs) - 1}"
    received = outputs[index]
    if not _types_match(received, spec.type):
        name = names[index] if index < len(names) else index
        return (
            f"is connected to output {index} ('{name}') of node {source_id} ({source_type}), which gives "
            f"{_type_name(received)}; this input takes {_type_name(spec.type)}"
        )
    return None


def _check_node(
    node_id: str,
    node: Mapping[str, Any],
    workflow: Mapping[str, Any],
    object_info: Mapping[str, Any],
    strict_files: bool = False,
) -> list[WorkflowProblem]:
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        return [WorkflowProblem(node_id, "?", None, "has no class_type: every node needs one")]
    node_info = object_info.get(class_type)
    if node_info is None:
        return [
            WorkflowProblem(
                node_id,
                class_type,
                None,
                f"unknown node type {class_type!r}: the pinned ComfyUI and custom nodes do not register it; "
                "fix the spelling or add the node pack that provides it",
            )
        ]
    values = node.get("inputs", {})
    if not isinstance(values, Mapping):
        return [
            WorkflowProblem(node_id, class_type, None, "'inputs' must be an object of input name -> value")
        ]

    declared, hidden = _declared_inputs(node_info)
    declared |= _format_extras(declared, values)
    problems: list[WorkflowProblem] = []

    def problem(name: str | None, message: str, severity: Severity = "error") -> None:
        problems.append(WorkflowProblem(node_id, class_type, name, message, severity))

    for name, spec in declared.items():
        if name not in values:
            if spec.required:
                problem(
                    name,
                    f"required input is missing: set a value or connect a {_type_name(spec.type)} output",
                )
            continue
        value = values[name]
        if _is_link(value):
            message = _link_problem(workflow, object_info, spec, value)
        elif isinstance(value, list):
            message = f'bad link {value!r}: a link is ["<node id>", <output index>]'
        else:
            message = _value_problem(spec, value, strict_files)
        if message:
            problem(name, message)

    for name in sorted(set(values) - set(declared) - hidden):
        known = ", ".join(sorted(declared))
        problem(
            name,
            f"{class_type} has no input named {name!r}, so ComfyUI ignores it; its inputs: {known}",
            "warning",
        )
    return problems


def _cycle(workflow: Mapping[str, Any]) -> list[str] | None:
    """One dependency cycle (as node ids), or None."""
    edges: dict[str, list[str]] = {}
    for node_id, node in workflow.items():
        inputs = node.get("inputs", {}) if isinstance(node, Mapping) else {}
        values = inputs.values() if isinstance(inputs, Mapping) else []
        edges[node_id] = sorted({v[0] for v in values if _is_link(v) and v[0] in workflow})
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(workflow):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(edges[start])]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(edges[step]))
    return None


def check_workflow(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any], strict_files: bool = False
) -> list[WorkflowProblem]:
    """Every problem found, errors and warnings, in node-id order. Empty means it would queue.

    ``strict_files``: file-name COMBOs must name a listed file too. For a live ``/object_info``
    whose folders hold the files (the conformance suite's placeholders); the bundled capture lists
    none, so by default only a non-empty name is required.
    """
    if not isinstance(workflow, Mapping) or not workflow:
        return [WorkflowProblem("", "", None, "the workflow must be a non-empty object of node id -> node")]
    problems: list[WorkflowProblem] = []
    has_output = False
    for node_id in sorted(workflow, key=lambda key: (len(str(key)), str(key))):
        node = workflow[node_id]
        if not isinstance(node, Mapping):
            problems.append(
                WorkflowProblem(str(node_id), "?", None, "must be an object with class_type and inputs")
            )
            continue
        problems.extend(_check_node(str(node_id), node, workflow, object_info, strict_files))
        node_info = object_info.get(node.get("class_type", ""))
        has_output = has_output or bool(node_info and node_info.get("output_node"))
    if not has_output:
        problems.append(
            WorkflowProblem(
                "",
                "",
                None,
                "no output node (e.g. VHS_VideoCombine, SaveImage): ComfyUI refuses such a prompt",
            )
        )
    cycle = _cycle(workflow)
    if cycle:
        problems.append(
            WorkflowProblem(
                "", "", None, f"the links form a cycle: {' -> '.join(cycle)}; ComfyUI cannot order it"
            )
        )
    return problems
