"""What ``plan`` decides from: the card, the host and the profile's choices for one workload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from zr4.core import arch
from zr4.core.comfy_flags import FlagEnvironment

MemoryMode = Literal["full", "model_cpu_offload", "sequential_cpu_offload"]
MEMORY_MODES: tuple[str, ...] = ("full", "model_cpu_offload", "sequential_cpu_offload")


@dataclass(frozen=True)
class GpuFacts:
    """The card to plan for. ``free_mib`` is what the driver reports free now (None when planning
    offline); the plan never budgets more than it, nor more than ``total_mib``."""

    name: str
    total_mib: int
    free_mib: int | None = None
    compute_capability: str | None = None
    count: int = 1

    @property
    def usable_mib(self) -> int:
        if self.free_mib is None:
            return self.total_mib
        return min(self.free_mib, self.total_mib)


@dataclass(frozen=True)
class Workload:
    """What one generation looks like. Frames must be 4n+1 (Wan's VAE packs 4 frames per latent)."""

    width: int = 832
    height: int = 480
    frames: int = 81
    steps: int = 4

    def __post_init__(self) -> None:
        if self.frames < 1 or self.frames % 4 != 1:
            raise ValueError(f"frames must be 4n+1 (e.g. 81), got {self.frames}")
        if self.width < 16 or self.height < 16 or self.width % 16 or self.height % 16:
            raise ValueError(f"width and height must be multiples of 16, got {self.width}x{self.height}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    @property
    def tokens(self) -> int:
        """Transformer sequence length: VAE stride (4, 8, 8) then patch (1, 2, 2)."""
        return self.latent_frames * (self.height // 16) * (self.width // 16)


@dataclass(frozen=True)
class PlanRequest:
    """Everything ``plan`` decides from. Defaults are the 4080 SUPER profile's."""

    gpu: GpuFacts | None
    host_ram_mib: int | None = None
    variant: Literal["fp16", "fp8", "gguf"] = "gguf"
    gguf_level: str = "Q4_K_M"  # a level or "auto"
    text_encoder: Literal["bf16", "fp8"] = "bf16"
    step_distill_lora: bool = True
    attention: str = "sdpa"
    pose_backend: Literal["onnx", "mmpose"] = "onnx"
    memory_mode: str = "auto"  # "auto" or one of MEMORY_MODES
    block_swap: int | None = None  # None = auto
    workload: Workload = field(default_factory=Workload)
    comfyui_version: str = "v0.7.0"
    user_comfyui_args: str | Sequence[str] | None = None
    tier: str | None = None  # GPU_TIER override; None = from VRAM
    # What ComfyUI's interpreter and folder offer (packages, paths); None: not checked (planning
    # away from the machine). With it, the plan's flags are the ones ComfyUI can start with.
    flag_environment: FlagEnvironment | None = None
    # Compute capability majors the image's flash-attn has kernels for (default: the release wheel's).
    flash_attn_kernel_majors: tuple[int, ...] = field(
        default_factory=lambda: tuple(sorted(arch.flash_attn_kernel_majors(None)))
    )
