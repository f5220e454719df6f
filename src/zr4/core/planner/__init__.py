"""The VRAM planner: GPU facts + profile choices + overrides + workload -> a TuningPlan.

A pure function (``plan``) over plain dataclasses. Every number in the budget says where it comes
from: a file size, a measurement (``bench/results/planner.md``), a formula, or an estimate. The
facts live in ``data/planner.yaml``, the model files' sizes in ``data/models.yaml``; the ComfyUI
flags the plan may emit in ``comfyui_flags.yaml``.

One module per job:

- ``request`` and ``result``: what ``plan`` takes and returns;
- ``facts``: ``planner.yaml``, typed, with the manifest's file sizes;
- ``formulas``: activations, the VAE decode, the GPU tier;
- ``budget``: each component's share of the card, one function per phase, and the peak;
- ``search``: the cheapest layout per GGUF level, the level, and the plan;
- ``arguments``: ComfyUI's arguments (memory mode, attention, ``COMFYUI_ARGS``);
- ``explain``: why each decision, the warnings, and the alternatives when nothing fits;
- ``format``: the plan as the table ``zr4 plan`` prints.
"""

from __future__ import annotations

from zr4.core.planner.arguments import ATTENTION_FLAGS, START_OWNED_FLAGS
from zr4.core.planner.facts import Facts, PlannerDataError, load_facts, planner_file
from zr4.core.planner.format import bar, format_plan
from zr4.core.planner.formulas import GIB_MIB, MIB, activation_bytes, tier_for, vae_decode_bytes
from zr4.core.planner.request import MEMORY_MODES, GpuFacts, MemoryMode, PlanRequest, Workload
from zr4.core.planner.result import PHASE_LABELS, PHASES, BudgetItem, Decision, Phase, TuningPlan
from zr4.core.planner.search import plan

__all__ = [
    "ATTENTION_FLAGS",
    "GIB_MIB",
    "MEMORY_MODES",
    "MIB",
    "PHASES",
    "PHASE_LABELS",
    "START_OWNED_FLAGS",
    "BudgetItem",
    "Decision",
    "Facts",
    "GpuFacts",
    "MemoryMode",
    "Phase",
    "PlanRequest",
    "PlannerDataError",
    "TuningPlan",
    "Workload",
    "activation_bytes",
    "bar",
    "format_plan",
    "load_facts",
    "plan",
    "planner_file",
    "tier_for",
    "vae_decode_bytes",
]
