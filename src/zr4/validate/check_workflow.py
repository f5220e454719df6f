"""Check 10: each workflow JSON in the context would be accepted by the pinned ComfyUI.

Reuses `zr4.workflow.check` (node types, required inputs, links, value types, ranges and
choices against the bundled `/object_info` of the profile's ComfyUI version).
"""

from __future__ import annotations

import json

from zr4.errors import Zr4Error
from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, outcome
from zr4.workflow.check import check_workflow, errors_only, load_object_info

TITLE = "workflows valid against ComfyUI object_info"


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
    for relative in workflows:
        try:
            workflow = json.loads(context.read(relative) or "")
        except json.JSONDecodeError as error:
            findings.append(Finding(f"not valid JSON: {error}", relative, error.lineno))
            continue
        problems = check_workflow(workflow, object_info)
        findings.extend(Finding(f"{p}", relative) for p in errors_only(problems))
        notes.extend(f"{relative}: {p}" for p in problems if p.severity != "error")
        notes.append(f"{relative}: {len(workflow)} nodes checked against ComfyUI {version}")
    return outcome("workflow", TITLE, findings, notes)
