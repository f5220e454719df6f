"""The SteadyDancer ComfyUI workflow: build it from plain values, check it against object_info.

Standard library only, so the container's runtime can rebuild the workflow at start.
"""

from __future__ import annotations

from zr4.core.workflow.build import (
    NODE_IDS,
    WorkflowSpec,
    WorkflowSpecError,
    attention_mode_for,
    build_steadydancer_workflow,
    default_diffusion_model_file,
    workflow_json,
)
from zr4.core.workflow.check import WorkflowProblem, check_workflow, errors_only, load_object_info

__all__ = [
    "NODE_IDS",
    "WorkflowProblem",
    "WorkflowSpec",
    "WorkflowSpecError",
    "attention_mode_for",
    "build_steadydancer_workflow",
    "check_workflow",
    "default_diffusion_model_file",
    "errors_only",
    "load_object_info",
    "workflow_json",
]
