"""What ``plan`` returns: the budget item by item, the decisions with their reasons, the plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zr4.core.comfy_flags import RejectedArg
from zr4.core.planner.request import Workload

Phase = Literal["always", "pose", "text", "image", "sample", "decode"]
PHASES: tuple[Phase, ...] = ("pose", "text", "image", "sample", "decode")
PHASE_LABELS = {
    "always": "always",
    "pose": "pose detection",
    "text": "text encoding",
    "image": "CLIP-vision encoding",
    "sample": "sampling",
    "decode": "VAE decode",
}


@dataclass(frozen=True)
class BudgetItem:
    """One component's share of the card."""

    key: str
    label: str
    mib: int
    phase: Phase
    kind: Literal["overhead", "weights", "transient"]
    formula: str
    source: str


@dataclass(frozen=True)
class Decision:
    name: str
    value: str
    why: str


@dataclass(frozen=True)
class TuningPlan:
    """The plan: budget, decisions, ComfyUI arguments, warnings, and an error when nothing fits."""

    gpu_name: str
    card_mib: int
    usable_mib: int
    tier: str
    workload: Workload
    variant: str
    gguf_level: str | None
    memory_mode: str
    block_swap: int
    prefetch_blocks: int
    text_encoder_device: Literal["gpu", "cpu"]
    pose_device: Literal["gpu", "cpu"]
    vae_tiling: bool
    attention: str
    items: tuple[BudgetItem, ...]
    phase_mib: Mapping[str, int]
    peak_mib: int
    peak_phase: str
    host_ram_needed_mib: int
    host_ram_mib: int | None
    comfyui_args: tuple[str, ...]
    rejected_args: tuple[RejectedArg, ...]
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...]
    error: str | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def reserve_mib(self) -> int:
        """What the budget keeps free for ComfyUI (its reserve): in every phase, used by no process."""
        return sum(item.mib for item in self.items if item.key == "comfyui_reserve")

    @property
    def fits(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu_name,
            "card_mib": self.card_mib,
            "usable_mib": self.usable_mib,
            "tier": self.tier,
            "workload": {
                "width": self.workload.width,
                "height": self.workload.height,
                "frames": self.workload.frames,
                "steps": self.workload.steps,
                "tokens": self.workload.tokens,
            },
            "variant": self.variant,
            "gguf_level": self.gguf_level,
            "memory_mode": self.memory_mode,
            "block_swap": self.block_swap,
            "prefetch_blocks": self.prefetch_blocks,
            "text_encoder_device": self.text_encoder_device,
            "pose_device": self.pose_device,
            "vae_tiling": self.vae_tiling,
            "attention": self.attention,
            "budget": [item.__dict__ for item in self.items],
            "phase_mib": dict(self.phase_mib),
            "peak_mib": self.peak_mib,
            "peak_phase": self.peak_phase,
            "host_ram_needed_mib": self.host_ram_needed_mib,
            "host_ram_mib": self.host_ram_mib,
            "comfyui_args": list(self.comfyui_args),
            "rejected_args": [{"tokens": list(r.tokens), "reason": r.reason} for r in self.rejected_args],
            "decisions": [d.__dict__ for d in self.decisions],
            "warnings": list(self.warnings),
            "fits": self.fits,
            "error": self.error,
            "alternatives": list(self.alternatives),
        }
