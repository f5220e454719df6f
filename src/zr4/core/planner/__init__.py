"""The VRAM planner: GPU facts + profile choices + overrides + workload -> a TuningPlan.

A pure function (``plan``) over plain dataclasses. Every number in the budget says where it comes
from: a file size, a measurement (``bench/results/planner.md``), a formula, or an estimate. The
facts live in ``data/planner.yaml``; the ComfyUI flags the plan may emit in ``comfyui_flags.yaml``.

How memory is used, phase by phase (the WanVideoWrapper workflow runs them one after another):
pose detection, text encoding, CLIP-vision encoding, sampling (diffusion weights + activations),
VAE decode. ``full`` keeps every model on the GPU, so the peak is all weights plus the largest
transient; the offload modes move each model to host RAM after its phase, so the peak is the
largest single phase. Block swap (WanVideoBlockSwap) keeps ``blocks_to_swap`` of the 40 transformer
blocks in host RAM and streams them in one at a time while sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from zr4.core import arch
from zr4.core.comfy_flags import (
    ZR4_OWNED_FLAGS,
    FlagEnvironment,
    FlagSet,
    RejectedArg,
    check_environment,
    flag_set,
    merge_args,
    tokenize,
)
from zr4.paths import data_dir

MIB = 1024 * 1024
GIB_MIB = 1024

MemoryMode = Literal["full", "model_cpu_offload", "sequential_cpu_offload"]
MEMORY_MODES: tuple[str, ...] = ("full", "model_cpu_offload", "sequential_cpu_offload")
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
# Flags ComfyUI is started with by zr4's start command itself, never taken from COMFYUI_ARGS.
START_OWNED_FLAGS = ZR4_OWNED_FLAGS
ATTENTION_FLAGS = {
    "sdpa": "--use-pytorch-cross-attention",
    "flash_attn_2": "--use-flash-attention",
    "flash_attn": "--use-flash-attention",
    "sageattn": "--use-sage-attention",
}


FLASH_ATTENTION = ("flash_attn_2", "flash_attn")


class PlannerDataError(ValueError):
    """``planner.yaml`` is missing or malformed."""


# --- inputs ------------------------------------------------------------------------------------


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


# --- outputs -----------------------------------------------------------------------------------


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


# --- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """``planner.yaml``, parsed."""

    raw: Mapping[str, Any]

    def _get(self, *path: str) -> Any:
        node: Any = self.raw
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                raise PlannerDataError(f"planner.yaml: missing {'.'.join(path)}")
            node = node[key]
        return node

    def num(self, *path: str) -> float:
        value = self._get(*path)
        if not isinstance(value, int | float):
            raise PlannerDataError(f"planner.yaml: {'.'.join(path)} must be a number")
        return float(value)

    def text(self, *path: str) -> str:
        return str(self._get(*path))

    @property
    def blocks(self) -> int:
        return int(self.num("diffusion", "blocks"))

    @property
    def gguf_levels(self) -> list[str]:
        return list(self._get("diffusion", "gguf", "levels"))

    @property
    def auto_candidates(self) -> list[str]:
        return [str(level) for level in self._get("diffusion", "gguf", "auto_candidates")]

    def gguf_size(self, level: str) -> tuple[int, str, str | None]:
        """(bytes, source, note) for ``level``; unknown sizes take the next larger known level."""
        levels = self._get("diffusion", "gguf", "levels")
        if level not in levels:
            raise PlannerDataError(f"unknown GGUF level {level!r}; known: {', '.join(levels)}")
        names = list(levels)
        for candidate in names[names.index(level) :]:
            entry = levels[candidate] or {}
            if entry.get("bytes"):
                if candidate == level:
                    return int(entry["bytes"]), str(entry.get("source", "")), None
                note = (
                    f"no file size known for {level}; budgeted as {candidate} ({entry['bytes'] / 1e9:.2f} GB)"
                )
                return int(entry["bytes"]), f"upper bound: {entry.get('source', '')}", note
        raise PlannerDataError(f"no GGUF level at or above {level} has a known size")

    def weights(self, variant: str, level: str | None) -> tuple[int, str, str | None, bool]:
        """(bytes, source, note, lora_merged) of the diffusion model file."""
        if variant == "gguf":
            assert level is not None
            size, source, note = self.gguf_size(level)
            return size, source, note, bool(self._get("diffusion", "gguf", "lora_merged"))
        entry = self._get("diffusion", "variants", variant)
        return int(entry["bytes"]), str(entry["source"]), None, bool(entry["lora_merged"])


def planner_file() -> Path:
    return data_dir() / "planner.yaml"


@cache
def load_facts(path: Path | None = None) -> Facts:
    source = path or planner_file()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PlannerDataError(f"cannot read {source}: {error}") from None
    if not isinstance(raw, Mapping):
        raise PlannerDataError(f"{source}: expected a mapping")
    return Facts(raw)


# --- formulas ----------------------------------------------------------------------------------


def activation_bytes(tokens: int, attention: str = "sdpa", facts: Facts | None = None) -> int:
    """Peak activation memory of one diffusion forward pass (batch 1) for ``tokens`` tokens.

    Fitted on measurements of Wan 2.1 14B-shaped blocks (``bench/calibrate_activations.py``): the
    peak is the FFN's bf16 hidden state and its GELU output plus fp32 modulation copies, linear in
    the token count. SDPA's flash, memory-efficient and cuDNN kernels measured the same; flash-attn 2
    and SageAttention are O(tokens) too and peak below the FFN, so the same formula is used.
    """
    del attention  # same for every O(tokens) attention kernel, see above
    f = facts or load_facts()
    return int(
        f.num("runtime", "activation_bytes_per_token") * tokens
        + f.num("runtime", "activation_base_mib") * MIB
    )


def vae_decode_bytes(width: int, height: int, frames: int, tiled: bool, facts: Facts | None = None) -> int:
    """Peak of a Wan 2.1 VAE decode above its weights (bf16); tiled = WanVideoDecode's default tiles."""
    f = facts or load_facts()
    per_pixel = f.num("decode", "per_pixel_bytes")
    per_pixel_frame = f.num("decode", "per_pixel_frame_bytes")
    if tiled:
        tile = int(f.num("decode", "tile_px"))
        # tiles run one after another; the decoded video is assembled on the GPU
        return int(
            per_pixel * min(tile, width) * min(tile, height) + per_pixel_frame * width * height * frames
        )
    return int(per_pixel * width * height + per_pixel_frame * width * height * frames)


def tier_for(total_mib: int) -> str:
    """The GPU_TIER thresholds (docs/reference/environment.md) (MiB as nvidia-smi reports them)."""
    if total_mib >= 48000:
        return "datacenter"
    if total_mib >= 20000:
        return "prosumer"
    return "consumer"


def _mib(value_bytes: float) -> int:
    return int(-(-value_bytes // MIB))  # round up


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """One candidate arrangement of the models on the card."""

    mode: str
    swap: int
    prefetch: int
    text_on_gpu: bool
    vae_tiled: bool
    pose_on_gpu: bool = True


@dataclass(frozen=True)
class _Evaluation:
    layout: _Layout
    items: tuple[BudgetItem, ...]
    phase_mib: dict[str, int]
    peak_mib: int
    peak_phase: str
    host_ram_needed_mib: int


class _Planner:
    def __init__(self, request: PlanRequest, facts: Facts, level: str | None) -> None:
        self.request = request
        self.facts = facts
        self.level = level
        self.blocks = facts.blocks
        assert request.gpu is not None
        self.gpu = request.gpu
        weights, self.weights_source, self.weights_note, self.lora_merged = facts.weights(
            request.variant, level
        )
        self.weights_bytes = weights
        self.non_block_bytes = min(facts.num("diffusion", "non_block_bytes"), weights * 0.5)
        # ComfyUI uses cudaMallocAsync unless the user turns it off
        user = tokenize(request.user_comfyui_args)
        self.native_allocator = "--disable-cuda-malloc" in user
        self.block_bytes = (weights - self.non_block_bytes) / self.blocks

    # components -------------------------------------------------------------------------------

    def items(self, layout: _Layout) -> list[BudgetItem]:
        f, r, w = self.facts, self.request, self.request.workload
        items = [
            BudgetItem(
                "cuda_context",
                "CUDA context + kernels",
                int(f.num("runtime", "cuda_context_mib")),
                "always",
                "overhead",
                "NVML use of the ComfyUI process − PyTorch reserved",
                "measured on the real sampler (bench/results/sampler.md)",
            ),
            BudgetItem(
                "comfyui_reserve",
                "ComfyUI reserve",
                int(f.num("runtime", "comfyui_reserve_mib")),
                "always",
                "overhead",
                "EXTRA_RESERVED_VRAM on Linux",
                "comfy/model_management.py",
            ),
        ]
        backend = r.pose_backend
        if layout.pose_on_gpu:
            items.append(
                BudgetItem(
                    "pose_weights",
                    f"pose models ({backend})",
                    _mib(f.num("pose", backend, "bytes")),
                    "pose",
                    "weights",
                    "file sizes",
                    f.text("pose", backend, "source"),
                )
            )
            items.append(
                BudgetItem(
                    "pose_workspace",
                    "pose inference workspace",
                    int(f.num("pose", backend, "workspace_mib")),
                    "pose",
                    "transient",
                    "onnxruntime/mmdet arena and workspace",
                    "estimate",
                )
            )
        if layout.text_on_gpu:
            items.append(
                BudgetItem(
                    "text_encoder",
                    f"text encoder umt5-xxl ({r.text_encoder})",
                    _mib(f.num("encoders", "text", r.text_encoder, "bytes")),
                    "text",
                    "weights",
                    "file size; offloaded after encoding (WanVideoTextEncode force_offload)",
                    f.text("encoders", "text", r.text_encoder, "source"),
                )
            )
            items.append(
                BudgetItem(
                    "text_activations",
                    "text encoder activations + allocator pool",
                    int(f.num("encoders", "text_activation_mib")),
                    "text",
                    "transient",
                    "512 tokens, batch 1; reserved − weights, measured",
                    "measured on the real sampler (bench/results/sampler.md)",
                )
            )
        else:
            items.append(
                BudgetItem(
                    "text_encoder_staging",
                    "text encoder staging (runs on the CPU)",
                    int(f.num("encoders", "text_cpu_staging_mib")),
                    "text",
                    "transient",
                    "WanVideoTextEncodeCached builds the encoder on the GPU: its fp32 token embedding passes through",
                    "measured on the real sampler (bench/results/sampler.md)",
                )
            )
        items.append(
            BudgetItem(
                "clip_vision",
                "CLIP vision (clip_vision_h)",
                _mib(f.num("encoders", "clip_vision", "bytes")),
                "image",
                "weights",
                "file size; offloaded after encoding",
                f.text("encoders", "clip_vision", "source"),
            )
        )
        items.append(
            BudgetItem(
                "clip_activations",
                "CLIP vision activations + allocator pool",
                int(f.num("encoders", "clip_activation_mib")),
                "image",
                "transient",
                "257 tokens, batch 1; reserved − weights, measured",
                "measured on the real sampler (bench/results/sampler.md)",
            )
        )
        resident_blocks = self.blocks - layout.swap
        weights_label = f"diffusion weights ({r.variant}{' ' + self.level if self.level else ''})"
        items.append(
            BudgetItem(
                "diffusion_weights",
                weights_label,
                _mib(self.non_block_bytes + resident_blocks * self.block_bytes),
                "sample",
                "weights",
                f"non-block {self.non_block_bytes / 1e9:.2f} GB + {resident_blocks}/{self.blocks} blocks × "
                f"{self.block_bytes / 1e6:.0f} MB (file {self.weights_bytes / 1e9:.2f} GB, "
                f"{layout.swap} blocks swapped)",
                self.weights_source,
            )
        )
        if layout.swap:
            # The block being run, the prefetched ones, and the one just run whose non-blocking copy
            # back to the host is still in flight (its memory returns to the pool when the copy ends).
            staged = min(2 + layout.prefetch, layout.swap)
            items.append(
                BudgetItem(
                    "swap_staging",
                    f"block swap staging ({staged} block{'s' if staged > 1 else ''})",
                    _mib(staged * self.block_bytes),
                    "sample",
                    "transient",
                    f"the block being run + {layout.prefetch} prefetched + 1 being copied back, at most the "
                    f"{layout.swap} swapped, × {self.block_bytes / 1e6:.0f} MB",
                    "WanVideoBlockSwap (blocks_to_swap, prefetch_blocks); wanvideo/modules/model.py offloads "
                    "each swapped block with non_blocking=True after it runs",
                )
            )
        if r.step_distill_lora and not self.lora_merged:
            lora_bytes = f.num("lora", "bytes") * resident_blocks / self.blocks
            items.append(
                BudgetItem(
                    "lora",
                    "step-distill LoRA (unmerged)",
                    _mib(lora_bytes),
                    "sample",
                    "weights",
                    f"{f.num('lora', 'bytes') / 1e6:.0f} MB × {resident_blocks}/{self.blocks} resident blocks",
                    f"{f.text('lora', 'source')}; never merged into GGUF/scaled fp8 (WanVideoLoraSelect)",
                )
            )
        if r.variant in ("gguf", "fp8"):
            items.append(
                BudgetItem(
                    "dequant_scratch",
                    "dequantized layer scratch",
                    _mib(2 * f.num("diffusion", "largest_linear_bf16_bytes")),
                    "sample",
                    "transient",
                    "2 × the largest linear (5120×13824) in bf16",
                    "estimate: weights are upcast one layer at a time",
                )
            )
        act = activation_bytes(w.tokens, r.attention, f)
        items.append(
            BudgetItem(
                "activations",
                f"activations ({w.tokens:,} tokens, {r.attention})",
                _mib(act),
                "sample",
                "transient",
                f"{f.num('runtime', 'activation_bytes_per_token'):,.0f} B × tokens + "
                f"{f.num('runtime', 'activation_base_mib'):.0f} MiB; tokens = {w.latent_frames}×{w.height // 16}×{w.width // 16}",
                "measured and fitted (bench/results/planner.md)",
            )
        )
        allocator = "native" if self.native_allocator else "cuda_malloc_async"
        fraction = f.num("runtime", "fragmentation_fraction", allocator)
        items.append(
            BudgetItem(
                "fragmentation",
                f"allocator headroom ({'native' if self.native_allocator else 'cudaMallocAsync'})",
                _mib(act * fraction),
                "sample",
                "transient",
                f"{fraction:.0%} of activations",
                "reserved − allocated on the real sampler (bench/results/sampler.md)",
            )
        )
        items.append(
            BudgetItem(
                "vae",
                "VAE weights",
                _mib(f.num("vae", "bytes")),
                "decode",
                "weights",
                "file size",
                f.text("vae", "source"),
            )
        )
        decode = vae_decode_bytes(w.width, w.height, w.frames, layout.vae_tiled, f)
        items.append(
            BudgetItem(
                "vae_decode",
                f"VAE decode{' (tiled 272 px)' if layout.vae_tiled else ''}",
                _mib(decode),
                "decode",
                "transient",
                f"{f.num('decode', 'per_pixel_bytes'):,.0f} B × "
                f"{'tile' if layout.vae_tiled else 'frame'} px + "
                f"{f.num('decode', 'per_pixel_frame_bytes'):g} B × W×H×frames",
                "measured and fitted (bench/results/planner.md)",
            )
        )
        pool = f.num("decode", "pool_fraction")
        items.append(
            BudgetItem(
                "vae_pool",
                "VAE allocator headroom",
                _mib(decode * pool),
                "decode",
                "transient",
                f"{pool:.0%} of the decode",
                "reserved − allocated on the real sampler (bench/results/sampler.md)",
            )
        )
        return items

    def evaluate(self, layout: _Layout) -> _Evaluation:
        items = tuple(self.items(layout))
        overhead = sum(item.mib for item in items if item.phase == "always")
        phase_mib: dict[str, int] = {}
        peak_phase: str
        for phase in PHASES:
            phase_mib[phase] = overhead + sum(item.mib for item in items if item.phase == phase)
        if layout.mode == "full":
            weights = sum(item.mib for item in items if item.kind == "weights")
            transient = {
                phase: sum(i.mib for i in items if i.phase == phase and i.kind == "transient")
                for phase in PHASES
            }
            peak_phase = max(transient, key=lambda phase: transient[phase])
            peak = overhead + weights + transient[peak_phase]
            phase_mib = {phase: overhead + weights + transient[phase] for phase in PHASES}
        else:
            peak_phase = max(phase_mib, key=lambda phase: phase_mib[phase])
            peak = phase_mib[peak_phase]
        return _Evaluation(layout, items, phase_mib, peak, peak_phase, self.host_ram_needed(layout))

    def host_ram_needed(self, layout: _Layout) -> int:
        """RAM for ComfyUI itself, swapped blocks, and every model while it is not on the GPU."""
        f, r = self.facts, self.request
        needed = f.num("runtime", "host_baseline_mib") * MIB
        if layout.mode != "full" or not layout.text_on_gpu:
            needed += f.num("encoders", "text", r.text_encoder, "bytes")
        if layout.mode != "full":
            needed += f.num("encoders", "clip_vision", "bytes") + f.num("vae", "bytes")
            needed += f.num("pose", r.pose_backend, "bytes")
        needed += layout.swap * self.block_bytes
        if r.step_distill_lora and not self.lora_merged:
            needed += f.num("lora", "bytes") * layout.swap / self.blocks
        return _mib(needed)

    # search -----------------------------------------------------------------------------------

    def fits(self, evaluation: _Evaluation) -> bool:
        return evaluation.peak_mib <= self.gpu.usable_mib

    def ram_ok(self, evaluation: _Evaluation) -> bool:
        ram = self.request.host_ram_mib
        return ram is None or evaluation.host_ram_needed_mib <= ram

    def _offload_layout(self, mode: str, swap: int, prefetch: int) -> _Evaluation:
        """The cheapest offload layout: text encoder on the GPU and an untiled decode when they fit."""
        evaluation = self.evaluate(_Layout(mode, swap, prefetch, True, False, True))
        usable = self.gpu.usable_mib
        text_on_gpu = evaluation.phase_mib["text"] <= usable
        tiled = evaluation.phase_mib["decode"] > usable
        pose_on_gpu = evaluation.phase_mib["pose"] <= usable
        if not text_on_gpu or tiled or not pose_on_gpu:
            evaluation = self.evaluate(_Layout(mode, swap, prefetch, text_on_gpu, tiled, pose_on_gpu))
        return evaluation

    def search(self, mode: str) -> _Evaluation:
        """The best layout for ``mode`` ("auto" tries full, then model offload, then block swap)."""
        forced_swap = self.request.block_swap
        if forced_swap is not None:
            swap = max(0, min(forced_swap, self.blocks))
            chosen = mode if mode != "auto" else ("sequential_cpu_offload" if swap else "model_cpu_offload")
            if chosen == "full":
                return self.evaluate(_Layout("full", swap, 0, True, False))
            return self._with_prefetch(chosen, swap)
        if mode in ("auto", "full"):
            full = self.evaluate(_Layout("full", 0, 0, True, False))
            if mode == "full" or self.fits(full):
                return full
        if mode in ("auto", "model_cpu_offload"):
            offload = self._offload_layout("model_cpu_offload", 0, 0)
            if mode == "model_cpu_offload" or self.fits(offload):
                return offload
        # sequential: the fewest swapped blocks that make sampling fit, with one block prefetched
        # ahead when there is room for it, else without
        for prefetch in (1, 0):

            def fits_with(n: int, ahead: int = prefetch) -> bool:
                return self.fits(self._offload_layout("sequential_cpu_offload", n, ahead))

            fewest = _smallest(1, self.blocks, fits_with)
            if fewest is not None:
                return self._offload_layout("sequential_cpu_offload", fewest, prefetch)
        return self._offload_layout("sequential_cpu_offload", self.blocks, 0)

    def _with_prefetch(self, mode: str, swap: int) -> _Evaluation:
        """Prefetch one block ahead when that still fits ("1 is usually enough", WanVideoBlockSwap)."""
        plain = self._offload_layout(mode, swap, 0)
        if swap == 0:
            return plain
        prefetched = self._offload_layout(mode, swap, 1)
        return prefetched if self.fits(prefetched) else plain


def _smallest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest n in [low, high] with ok(n), for ok monotone (False...False True...True)."""
    if low > high or not ok(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest n in [low, high] with ok(n), for ok monotone (True...True False...False)."""
    if low > high or not ok(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _flags_for(mode: str, attention: str, flags: FlagSet) -> tuple[list[str], list[Decision]]:
    planned: list[str] = []
    decisions: list[Decision] = []
    if mode == "full":
        planned.append("--highvram")
        decisions.append(
            Decision("--highvram", "on", "every model fits at once: keep them in VRAM between runs")
        )
    elif mode == "model_cpu_offload":
        planned.append("--disable-smart-memory")
        decisions.append(
            Decision(
                "--disable-smart-memory",
                "on",
                "offload each model to RAM after its phase so phases never overlap",
            )
        )
    else:
        planned += ["--lowvram", "--disable-smart-memory"]
        decisions.append(Decision("--lowvram", "on", "ComfyUI's own loaders (CLIP vision) load in parts"))
        decisions.append(
            Decision("--disable-smart-memory", "on", "offload each model to RAM right after use")
        )
    attention_flag = ATTENTION_FLAGS.get(attention)
    if attention_flag is not None:
        planned.append(attention_flag)
        decisions.append(Decision(attention_flag, "on", f"attention {attention} for ComfyUI's own nodes"))
    unknown = [flag for flag in planned if flag not in flags.emittable]
    if unknown:  # the flag data says this version does not take them: emit nothing rather than crash
        planned = [flag for flag in planned if flag in flags.emittable]
    return planned, decisions


def _level_candidates(request: PlanRequest, facts: Facts) -> list[str | None]:
    if request.variant != "gguf":
        return [None]
    if request.gguf_level.lower() == "auto":
        return list(facts.auto_candidates)
    return [request.gguf_level.upper()]


# The documented default STEADYDANCER_GGUF_MODEL, used for "auto" when there is no GPU to size for.
CPU_GGUF_LEVEL = "Q4_K_M"


def _with_user_args(
    planned: list[str], request: PlanRequest, flags: FlagSet
) -> tuple[tuple[str, ...], tuple[RejectedArg, ...], list[str]]:
    """The planned flags merged with COMFYUI_ARGS, less what ComfyUI's environment cannot honour.

    Returns (ComfyUI's arguments, the user's rejected ones, warnings saying what changed).
    """
    warnings: list[str] = []
    environment = request.flag_environment
    if environment is not None:
        planned_kept, unusable = check_environment(planned, flags, environment)
        planned = list(planned_kept)
        warnings += [f"planned flag not passed to ComfyUI: {rejected}" for rejected in unusable]
    final, user_split, dropped = merge_args(
        planned, request.user_comfyui_args, flags, owned=START_OWNED_FLAGS, environment=environment
    )
    warnings += [f"COMFYUI_ARGS overrides the planned {flag}" for flag in dropped]
    warnings += [f"COMFYUI_ARGS: not passed to ComfyUI: {rejected}" for rejected in user_split.rejected]
    return final, user_split.rejected, warnings


def _cpu_plan(request: PlanRequest, flags: FlagSet) -> TuningPlan:
    final, rejected_args, flag_warnings = _with_user_args(["--cpu"], request, flags)
    level = request.gguf_level.upper() if request.gguf_level.lower() != "auto" else CPU_GGUF_LEVEL
    warnings = ["no NVIDIA GPU: ComfyUI runs with --cpu; a 14B video model on a CPU takes hours per clip"]
    warnings += flag_warnings
    return TuningPlan(
        gpu_name="none (CPU only)",
        card_mib=0,
        usable_mib=0,
        tier=request.tier or "cpu",
        workload=request.workload,
        variant=request.variant,
        gguf_level=None if request.variant != "gguf" else level,
        memory_mode="cpu",
        block_swap=0,
        prefetch_blocks=0,
        text_encoder_device="cpu",
        pose_device="cpu",
        vae_tiling=False,
        attention=request.attention,
        items=(),
        phase_mib={},
        peak_mib=0,
        peak_phase="-",
        host_ram_needed_mib=0,
        host_ram_mib=request.host_ram_mib,
        comfyui_args=final,
        rejected_args=rejected_args,
        decisions=(Decision("--cpu", "on", "no NVIDIA GPU detected"),),
        warnings=tuple(warnings),
    )


def plan(request: PlanRequest, facts: Facts | None = None, flags: FlagSet | None = None) -> TuningPlan:
    """Budget, decide and explain. Pure: same request, same plan."""
    facts = facts or load_facts()
    flags = flags or flag_set(request.comfyui_version)
    return _plan(request, facts, flags, explain=True)


def _plan(request: PlanRequest, facts: Facts, flags: FlagSet, explain: bool) -> TuningPlan:
    if request.gpu is None:
        return _cpu_plan(request, flags)
    mode = request.memory_mode
    if mode != "auto" and mode not in MEMORY_MODES:
        raise ValueError(f"memory mode {mode!r}: use auto, {', '.join(MEMORY_MODES)}")

    candidates = _level_candidates(request, facts)
    results: list[tuple[str | None, _Planner, _Evaluation]] = []
    for level in candidates:
        planner = _Planner(request, facts, level)
        results.append((level, planner, planner.search(mode)))

    def ok(planner: _Planner, evaluation: _Evaluation, ram: bool = True) -> bool:
        return planner.fits(evaluation) and (not ram or planner.ram_ok(evaluation))

    chosen = None
    level_why = ""
    if len(results) > 1:  # auto: the largest level that fits, with the block swap it needs
        for rule, test in (
            ("the largest level that fits", lambda p, e: ok(p, e)),
            (
                "the largest level that fits on the card, though host RAM is short",
                lambda p, e: ok(p, e, ram=False),
            ),
        ):
            chosen = next((result for result in results if test(result[1], result[2])), None)
            if chosen is not None:
                level_why = rule
                break
        if chosen is None:
            chosen = results[-1]
            level_why = "nothing fits; showing the smallest level"
    else:
        chosen = results[0]
    level, planner, evaluation = chosen
    layout = evaluation.layout

    warnings: list[str] = []
    decisions: list[Decision] = []
    if planner.weights_note:
        warnings.append(planner.weights_note)
    if request.variant == "gguf":
        if len(results) > 1:
            decisions.append(Decision("GGUF level", str(level), f"auto: {level_why}"))
        else:
            decisions.append(Decision("GGUF level", str(level), "as configured"))
    mode_why = {
        "full": "every model and the largest transient fit on the card at once",
        "model_cpu_offload": "one phase at a time fits with all 40 blocks on the GPU",
        "sequential_cpu_offload": f"sampling fits only with {layout.swap} of {planner.blocks} blocks in host RAM",
    }[layout.mode]
    if mode != "auto":
        mode_why = f"forced ({mode})"
    decisions.append(Decision("memory mode", layout.mode, mode_why))
    swap_why = (
        "no swap needed"
        if layout.swap == 0
        else f"fewest blocks that let sampling fit; {layout.swap} × {planner.block_bytes / 1e6:.0f} MB = "
        f"{layout.swap * planner.block_bytes / 1e9:.1f} GB streamed from host RAM per model call"
    )
    if request.block_swap is not None:
        swap_why = "forced by the profile (memory.block_swap)"
    decisions.append(Decision("block swap", f"{layout.swap} of {planner.blocks}", swap_why))
    if layout.swap:
        decisions.append(
            Decision(
                "prefetch blocks",
                str(layout.prefetch),
                "one block prefetched hides most of the transfer time"
                if layout.prefetch
                else "no room to prefetch a block",
            )
        )
    decisions.append(
        Decision(
            "text encoder device",
            "gpu" if layout.text_on_gpu else "cpu",
            "fits on the card before sampling"
            if layout.text_on_gpu
            else "does not fit on the card: encode on the CPU (slower, once per prompt)",
        )
    )
    decisions.append(
        Decision(
            "pose device",
            "gpu" if layout.pose_on_gpu else "cpu",
            "fits on the card"
            if layout.pose_on_gpu
            else "does not fit on the card: run pose detection on the CPU (ONNX CPUExecutionProvider)",
        )
    )
    decisions.append(
        Decision(
            "VAE tiling",
            "on" if layout.vae_tiled else "off",
            "an untiled decode does not fit: 272 px tiles" if layout.vae_tiled else "the untiled decode fits",
        )
    )
    if not layout.text_on_gpu and request.text_encoder == "bf16":
        warnings.append("the bf16 text encoder does not fit on the GPU; the fp8 one (6.74 GB) might")

    attention, arch_error = _arch_limits(request, planner.gpu, warnings, decisions)
    planned, flag_decisions = _flags_for(layout.mode, attention, flags)
    decisions += flag_decisions
    final, rejected_args, flag_warnings = _with_user_args(planned, request, flags)
    warnings += flag_warnings

    ram = request.host_ram_mib
    if ram is not None and evaluation.host_ram_needed_mib > ram:
        warnings.append(
            f"host RAM {ram / GIB_MIB:.1f} GiB cannot hold what is offloaded "
            f"({evaluation.host_ram_needed_mib / GIB_MIB:.1f} GiB: {layout.swap} swapped blocks = "
            f"{layout.swap * planner.block_bytes / 2**30:.1f} GiB, plus encoders, VAE and ComfyUI itself); "
            "expect swapping to disk or an out-of-memory kill"
        )

    error = arch_error
    alternatives: tuple[str, ...] = ()
    if error is None and not planner.fits(evaluation):
        error = (
            f"does not fit: {PHASE_LABELS[evaluation.peak_phase]} needs {evaluation.peak_mib:,} MiB, "
            f"the card has {planner.gpu.usable_mib:,} MiB usable"
        )
        if explain:
            alternatives = tuple(_alternatives(request, facts, flags, evaluation))

    tier = request.tier or tier_for(planner.gpu.total_mib)
    return TuningPlan(
        gpu_name=planner.gpu.name,
        card_mib=planner.gpu.total_mib,
        usable_mib=planner.gpu.usable_mib,
        tier=tier,
        workload=request.workload,
        variant=request.variant,
        gguf_level=level,
        memory_mode=layout.mode,
        block_swap=layout.swap,
        prefetch_blocks=layout.prefetch,
        text_encoder_device="gpu" if layout.text_on_gpu else "cpu",
        pose_device="gpu" if layout.pose_on_gpu else "cpu",
        vae_tiling=layout.vae_tiled,
        attention=attention,
        items=evaluation.items,
        phase_mib=evaluation.phase_mib,
        peak_mib=evaluation.peak_mib,
        peak_phase=evaluation.peak_phase,
        host_ram_needed_mib=evaluation.host_ram_needed_mib,
        host_ram_mib=ram,
        comfyui_args=final,
        rejected_args=rejected_args,
        decisions=tuple(decisions),
        warnings=tuple(warnings),
        error=error,
        alternatives=alternatives,
    )


def _arch_limits(
    request: PlanRequest, gpu: GpuFacts, warnings: list[str], decisions: list[Decision]
) -> tuple[str, str | None]:
    """The attention the card can run, and why the card cannot run the workflow at all (or None).

    The same facts refuse a profile in ``zr4 render`` (src/zr4/compat.py): a card without bf16 in
    hardware, and flash-attn on a card it has no kernels for (ComfyUI would fail at the first
    attention call, so the plan falls back to SDPA rather than emit ``--use-flash-attention``).
    """
    cc = gpu.compute_capability
    if not cc:
        return request.attention, None
    attention = request.attention
    if attention in FLASH_ATTENTION and not arch.flash_attn_runs_on(cc, request.flash_attn_kernel_majors):
        attention = "sdpa"
        built = ", ".join(f"sm_{major}x" for major in request.flash_attn_kernel_majors) or "no card"
        why = f"flash-attn in this image has kernels for {built}, not {arch.sm_name(cc)} ({gpu.name})"
        warnings.append(f"{why}: attention falls back to sdpa")
        decisions.append(Decision("attention", "sdpa", why))
    if not arch.has_bf16(cc):
        return attention, arch.missing_bf16_reason(cc, gpu.name)
    return attention, None


def _alternatives(request: PlanRequest, facts: Facts, flags: FlagSet, failed: _Evaluation) -> list[str]:
    """Concrete changes that would fit, each checked by planning it."""
    out: list[str] = []
    forced = request.memory_mode != "auto" or request.block_swap is not None
    prefix = "GPU_MEMORY_MODE=auto and " if forced else ""

    def fits(changed: PlanRequest) -> TuningPlan | None:
        result = _plan(changed, facts, flags, explain=False)
        return result if result.fits else None

    if request.memory_mode != "auto" or request.block_swap is not None:
        relaxed = fits(replace(request, memory_mode="auto", block_swap=None))
        if relaxed is not None:
            out.append(
                f"GPU_MEMORY_MODE=auto (plans {relaxed.memory_mode} with {relaxed.block_swap} blocks swapped)"
            )
    if request.variant != "gguf" or request.gguf_level.lower() != "auto":
        current = facts.gguf_levels.index(request.gguf_level.upper()) if request.variant == "gguf" else None
        for level in facts.auto_candidates:
            if current is not None and facts.gguf_levels.index(level) >= current:
                continue
            result = fits(
                replace(request, variant="gguf", gguf_level=level, memory_mode="auto", block_swap=None)
            )
            if result is not None:
                out.append(
                    f"{prefix}STEADYDANCER_VARIANT=gguf STEADYDANCER_GGUF_MODEL={level} "
                    f"({result.memory_mode}, {result.block_swap} blocks swapped)"
                )
                break
    if request.text_encoder == "bf16":
        result = fits(replace(request, text_encoder="fp8", memory_mode="auto", block_swap=None))
        if result is not None:
            out.append(f"{prefix}the fp8 text encoder (umt5_xxl_fp8_e4m3fn_scaled, 6.74 GB)")
    w = request.workload
    # fewer frames never need more memory: the most latent frames that fit, by bisection
    latent = _largest(
        1,
        w.latent_frames - 1,
        lambda n: (
            fits(replace(request, workload=replace(w, frames=4 * n - 3), memory_mode="auto", block_swap=None))
            is not None
        ),
    )
    if latent is not None:
        out.append(f"{prefix}{4 * latent - 3} frames instead of {w.frames} at {w.width}×{w.height}")
    out.append(f"a card with at least {failed.peak_mib / GIB_MIB:.1f} GiB free for this plan")
    return out


# --- text rendering ------------------------------------------------------------------------------

BAR_WIDTH = 30
_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(mib: int, card_mib: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``mib`` against ``card_mib``; past the card it ends in ``!``."""
    if card_mib <= 0:
        return ""
    cells = min(mib / card_mib, 1.0) * width
    full = int(cells)
    partial = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    text = ("█" * full + partial.strip()).ljust(width, "·")
    return text + ("!" if mib > card_mib else "▕")


def format_plan(result: TuningPlan) -> str:
    """The plan as a table with a bar per component against the card, then the decisions."""
    w = result.workload
    lines: list[str] = []
    card = result.usable_mib
    lines.append(
        f"{result.gpu_name}: {result.card_mib:,} MiB"
        + (f" ({result.usable_mib:,} MiB free)" if result.usable_mib != result.card_mib else "")
        + f", tier {result.tier}"
    )
    lines.append(
        f"workload: {w.width}×{w.height}, {w.frames} frames ({w.latent_frames} latent), {w.steps} steps, "
        f"{w.tokens:,} tokens; model {result.variant}{' ' + result.gguf_level if result.gguf_level else ''}"
    )
    if result.items:
        lines.append("")
        name_width = max(len(item.label) for item in result.items)
        lines.append(f"{'component'.ljust(name_width)}  {'phase':<20} {'MiB':>7}  vs {card:,} MiB")
        for item in result.items:
            lines.append(
                f"{item.label.ljust(name_width)}  {PHASE_LABELS[item.phase]:<20} {item.mib:>7,}  {bar(item.mib, card)}"
            )
            lines.append(f"{''.ljust(name_width)}    = {item.formula} [{item.source}]")
        lines.append("")
        lines.append(
            "on the card at once, per phase"
            + (" (full: every model stays loaded)" if result.memory_mode == "full" else "")
            + ":"
        )
        for phase, mib in result.phase_mib.items():
            mark = "  ← peak" if phase == result.peak_phase else ""
            share = f"{mib / card:6.1%}" if card else ""
            lines.append(f"  {PHASE_LABELS[phase]:<22} {mib:>7,} MiB  {bar(mib, card)} {share}{mark}")
        ram = (
            f" of {result.host_ram_mib / GIB_MIB:.1f} GiB"
            if result.host_ram_mib is not None
            else " (host RAM not given)"
        )
        lines.append(f"  host RAM needed         {result.host_ram_needed_mib / GIB_MIB:7.1f} GiB{ram}")
        reserve = result.reserve_mib
        if result.fits and card:
            # Why say it: the peak's share of the card looks thin; what is actually left is the reserve
            # plus the rest, on top of terms measured as upper bounds (bench/results/sampler.md).
            left = card - result.peak_mib + reserve
            lines.append(
                f"  left free at the peak   {left:>7,} MiB  ComfyUI's {reserve:,} MiB reserve + "
                f"{card - result.peak_mib:,} MiB"
            )
    lines.append("")
    lines.append("decisions:")
    for decision in result.decisions:
        lines.append(f"  {decision.name:<30} {decision.value:<24} {decision.why}")
    lines.append("")
    lines.append(f"ComfyUI arguments: {' '.join(result.comfyui_args) or '(none)'}")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    if result.error:
        lines.append(f"error: {result.error}")
        for alternative in result.alternatives:
            lines.append(f"  instead: {alternative}")
    return "\n".join(lines) + "\n"
