"""Check 10: each workflow JSON in the context would be accepted by the pinned ComfyUI.

Reuses `zr4.core.workflow.check` (node types, required inputs, links, value types, ranges and
choices against the bundled `/object_info` of the profile's ComfyUI version). Also: every custom
node pack the Dockerfile installs provides a node some workflow uses (object_info's
`python_module` names each node's pack), unless the profile marks it optional; a pack
such as VibeVoice-ComfyUI (text-to-speech, unrelated to SteadyDancer) would otherwise ride along unnoticed.
"""

from __future__ import annotations

import json
import posixpath
import re

from zr4.core.workflow.check import check_workflow, errors_only, load_object_info
from zr4.core.workflow.ui import build_ui_workflow, is_ui_workflow, ui_problems
from zr4.errors import Zr4Error
from zr4.validate.check_pins import git_positionals
from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, outcome
from zr4.validate.shell import split_commands

TITLE = "workflows valid against ComfyUI object_info"


def _twin_problems(context: BuildContext, relative: str, ui: dict[str, object]) -> list[str]:
    """A ``<name>.ui.json`` must be what zr4 makes from its API twin ``<name>.json``: the two are
    one workflow (the sidebar's and /prompt's), so an edit to one alone is a mistake."""
    twin = relative.removesuffix(".ui.json") + ".json"
    if not relative.endswith(".ui.json") or twin not in context.files:
        return []
    try:
        expected = build_ui_workflow(json.loads(context.read(twin) or ""))
    except (json.JSONDecodeError, Zr4Error, KeyError, TypeError, ValueError):
        return []  # the twin's own check reports what is wrong with it
    if expected == ui:
        return []
    return [
        f"differs from the UI form of its API twin {twin}: edit neither by hand; re-render with `zr4 render`"
    ]


def check_workflows(context: BuildContext) -> CheckResult:
    """Check 10."""
    workflows = [f for f in context.files if f.startswith("workflows/") and f.endswith(".json")]
    if not workflows:
        return outcome(
            "workflow", TITLE, [Finding("no workflows/*.json in the context; render it with `zr4 render`")]
        )
    profile, problem = context.profile
    version = profile.comfyui.version if profile is not None else "v0.7.0"
    notes = [] if profile is not None else [f"{problem}; checked against ComfyUI {version}"]
    try:
        object_info = load_object_info(version)
    except Zr4Error as error:
        return outcome("workflow", TITLE, [Finding(str(error))], notes)
    findings: list[Finding] = []
    used_modules: set[str] = set()
    for relative in workflows:
        try:
            workflow = json.loads(context.read(relative) or "")
        except json.JSONDecodeError as error:
            findings.append(Finding(f"not valid JSON: {error}", relative, error.lineno))
            continue
        if is_ui_workflow(workflow):  # the sidebar's copy: its API twin is checked in full
            findings.extend(Finding(problem, relative) for problem in ui_problems(workflow, object_info))
            findings.extend(
                Finding(problem, relative) for problem in _twin_problems(context, relative, workflow)
            )
            notes.append(f"{relative}: UI format, {len(workflow['nodes'])} nodes and their links checked")
            continue
        problems = check_workflow(workflow, object_info)
        findings.extend(Finding(f"{p}", relative) for p in errors_only(problems))
        notes.extend(f"{relative}: {p}" for p in problems if p.severity != "error")
        notes.append(f"{relative}: {len(workflow)} nodes checked against ComfyUI {version}")
        used_modules.update(
            str(object_info.get(str(node.get("class_type")), {}).get("python_module", ""))
            for node in workflow.values()
            if isinstance(node, dict)
        )
    optional = {n.name for n in profile.comfyui.custom_nodes if n.optional} if profile is not None else set()
    known = {str(info.get("python_module", "")) for info in object_info.values()}
    for pack, line in installed_node_packs(context):
        module = f"custom_nodes.{pack}"
        if module in used_modules or pack in optional:
            continue
        unknown = (
            ""
            if module in known
            else " and it is not in the pinned node set (object_info), so nothing of it was checked"
        )
        findings.append(
            Finding(
                f"custom node pack {pack} is installed but no workflow uses any of its nodes{unknown}; remove it, "
                f"or mark it optional in the profile if users need it",
                context.dockerfile_name,
                line,
            )
        )
    return outcome("workflow", TITLE, findings, notes)


_NODE_DIR = re.compile(r"custom_nodes/([A-Za-z0-9_.-]+)")


def installed_node_packs(context: BuildContext) -> list[tuple[str, int]]:
    """(pack, Dockerfile line) for each ComfyUI custom node pack the Dockerfile puts in place."""
    packs: dict[str, int] = {}
    workdir = ""
    for instruction in context.instructions():
        text = " ".join(instruction.args)
        if instruction.cmd == "WORKDIR" and instruction.args:
            workdir = posixpath.join(workdir, instruction.args[0])
        if instruction.cmd in ("WORKDIR", "RUN", "COPY", "ADD"):
            for name in _NODE_DIR.findall(text):
                packs.setdefault(name, instruction.line)
        if instruction.cmd == "RUN" and workdir.rstrip("/").endswith("custom_nodes"):
            for command in split_commands(instruction.shell_text):
                words = command.words
                if words[:2] != ["git", "clone"]:
                    continue
                args = git_positionals(words[2:])
                if args:
                    name = args[1] if len(args) > 1 else args[0].rstrip("/").rsplit("/", 1)[-1]
                    packs.setdefault(name.removesuffix(".git"), instruction.line)
    return sorted(packs.items(), key=lambda item: item[1])
