"""The budget of one layout: each component's share of the card, phase by phase, and the peak.

How memory is used, phase by phase (the WanVideoWrapper workflow runs them one after another):
pose detection, text encoding, CLIP-vision encoding, sampling (diffusion weights + activations),
VAE decode. ``full`` keeps every model on the GPU, so the peak is all weights plus the largest
transient; the offload modes move each model to host RAM after its phase, so the peak is the
largest single phase. Every item says where its number comes from: a file size, a measurement
(``bench/results/planner.md``), a formula, or an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from zr4.core.planner.facts import Encoders, Facts, Lora, Pose, Runtime
from zr4.core.planner.formulas import MIB, activation_bytes, mib, vae_decode_bytes
from zr4.core.planner.request import PlanRequest, Workload
from zr4.core.planner.result import PHASES, BudgetItem


@dataclass(frozen=True)
class Layout:
    """One candidate arrangement of the models on the card."""

    mode: str
    swap: int
    prefetch: int
    text_on_gpu: bool
    vae_tiled: bool
    pose_on_gpu: bool = True


@dataclass(frozen=True)
class DiffusionWeights:
    """The diffusion model file, split into the part that stays resident and the transformer
    blocks that WanVideoBlockSwap may keep in host RAM."""

    variant: str
    level: str | None
    file_bytes: int
    non_block_bytes: float
    block_bytes: float
    blocks: int
    source: str
    note: str | None
    lora_merged: bool

    @classmethod
    def of(cls, facts: Facts, variant: str, level: str | None) -> DiffusionWeights:
        file_bytes, source, note, lora_merged = facts.weights(variant, level)
        non_block = min(facts.diffusion.non_block_bytes, file_bytes * 0.5)
        return cls(
            variant=variant,
            level=level,
            file_bytes=file_bytes,
            non_block_bytes=non_block,
            block_bytes=(file_bytes - non_block) / facts.blocks,
            blocks=facts.blocks,
            source=source,
            note=note,
            lora_merged=lora_merged,
        )


@dataclass(frozen=True)
class Evaluation:
    """A layout's budget: its items, what is on the card in each phase, the peak, host RAM."""

    layout: Layout
    items: tuple[BudgetItem, ...]
    phase_mib: dict[str, int]
    peak_mib: int
    peak_phase: str
    host_ram_needed_mib: int


# --- one function per phase ----------------------------------------------------------------------


def overhead_items(*, runtime: Runtime) -> list[BudgetItem]:
    """What is on the card in every phase: the CUDA context and ComfyUI's reserve."""
    return [
        BudgetItem(
            "cuda_context",
            "CUDA context + kernels",
            runtime.cuda_context_mib,
            "always",
            "overhead",
            "NVML use of the ComfyUI process − PyTorch reserved",
            runtime.cuda_context_source,
        ),
        BudgetItem(
            "comfyui_reserve",
            "ComfyUI reserve",
            runtime.comfyui_reserve_mib,
            "always",
            "overhead",
            "EXTRA_RESERVED_VRAM on Linux",
            runtime.comfyui_reserve_source,
        ),
    ]


def pose_items(*, pose: Pose, backend: str, on_gpu: bool) -> list[BudgetItem]:
    """Pose detection: the backend's weights and workspace, nothing when it runs on the CPU."""
    if not on_gpu:
        return []
    models = pose.backend(backend)
    assert models.bytes is not None
    return [
        BudgetItem(
            "pose_weights",
            f"pose models ({backend})",
            mib(models.bytes),
            "pose",
            "weights",
            "file sizes",
            models.source,
        ),
        BudgetItem(
            "pose_workspace",
            "pose inference workspace",
            models.workspace_mib,
            "pose",
            "transient",
            "onnxruntime/mmdet arena and workspace",
            pose.workspace_source,
        ),
    ]


def text_items(*, encoders: Encoders, precision: str, on_gpu: bool) -> list[BudgetItem]:
    """Text encoding: umt5-xxl and its activations on the GPU, or only what its loading stages there."""
    if not on_gpu:
        return [
            BudgetItem(
                "text_encoder_staging",
                "text encoder staging (runs on the CPU)",
                encoders.text_cpu_staging_mib,
                "text",
                "transient",
                "WanVideoTextEncodeCached builds the encoder on the GPU: its fp32 token embedding passes through",
                encoders.source,
            )
        ]
    encoder = encoders.text[precision]
    assert encoder.bytes is not None
    return [
        BudgetItem(
            "text_encoder",
            f"text encoder umt5-xxl ({precision})",
            mib(encoder.bytes),
            "text",
            "weights",
            "file size; offloaded after encoding (WanVideoTextEncode force_offload)",
            encoder.source,
        ),
        BudgetItem(
            "text_activations",
            "text encoder activations + allocator pool",
            encoders.text_activation.mib,
            "text",
            "transient",
            f"{encoders.text_activation.tokens} tokens, batch 1; reserved − weights, measured",
            encoders.source,
        ),
    ]


def image_items(*, encoders: Encoders) -> list[BudgetItem]:
    """CLIP-vision encoding of the reference image."""
    clip = encoders.clip_vision
    assert clip.bytes is not None
    return [
        BudgetItem(
            "clip_vision",
            "CLIP vision (clip_vision_h)",
            mib(clip.bytes),
            "image",
            "weights",
            "file size; offloaded after encoding",
            clip.source,
        ),
        BudgetItem(
            "clip_activations",
            "CLIP vision activations + allocator pool",
            encoders.clip_activation.mib,
            "image",
            "transient",
            f"{encoders.clip_activation.tokens} tokens, batch 1; reserved − weights, measured",
            encoders.source,
        ),
    ]


def sample_items(
    *,
    facts: Facts,
    weights: DiffusionWeights,
    layout: Layout,
    workload: Workload,
    attention: str,
    step_distill_lora: bool,
    native_allocator: bool,
) -> list[BudgetItem]:
    """Sampling: the resident diffusion weights (with what block swap stages and the LoRA), then
    the activations and the allocator's headroom above them."""
    return [
        *_diffusion_items(facts=facts, weights=weights, layout=layout, step_distill_lora=step_distill_lora),
        *_activation_items(
            facts=facts, workload=workload, attention=attention, native_allocator=native_allocator
        ),
    ]


def _diffusion_items(
    *, facts: Facts, weights: DiffusionWeights, layout: Layout, step_distill_lora: bool
) -> list[BudgetItem]:
    resident_blocks = weights.blocks - layout.swap
    level = f" {weights.level}" if weights.level else ""
    items = [
        BudgetItem(
            "diffusion_weights",
            f"diffusion weights ({weights.variant}{level})",
            mib(weights.non_block_bytes + resident_blocks * weights.block_bytes),
            "sample",
            "weights",
            f"non-block {weights.non_block_bytes / 1e9:.2f} GB + {resident_blocks}/{weights.blocks} blocks × "
            f"{weights.block_bytes / 1e6:.0f} MB (file {weights.file_bytes / 1e9:.2f} GB, "
            f"{layout.swap} blocks swapped)",
            weights.source,
        )
    ]
    if layout.swap:
        # The block being run, the prefetched ones, and the one just run whose non-blocking copy
        # back to the host is still in flight (its memory returns to the pool when the copy ends).
        staged = min(2 + layout.prefetch, layout.swap)
        items.append(
            BudgetItem(
                "swap_staging",
                f"block swap staging ({staged} block{'s' if staged > 1 else ''})",
                mib(staged * weights.block_bytes),
                "sample",
                "transient",
                f"the block being run + {layout.prefetch} prefetched + 1 being copied back, at most the "
                f"{layout.swap} swapped, × {weights.block_bytes / 1e6:.0f} MB",
                facts.diffusion.swap_staging_source,
            )
        )
    if step_distill_lora and not weights.lora_merged:
        items.append(_lora_item(lora=facts.lora, resident_blocks=resident_blocks, blocks=weights.blocks))
    if weights.variant in ("gguf", "fp8"):
        rows, columns = facts.diffusion.largest_linear
        items.append(
            BudgetItem(
                "dequant_scratch",
                "dequantized layer scratch",
                mib(2 * rows * columns * 2),
                "sample",
                "transient",
                f"2 × the largest linear ({rows}×{columns}) in bf16",
                facts.diffusion.dequant_scratch_source,
            )
        )
    return items


def _lora_item(*, lora: Lora, resident_blocks: int, blocks: int) -> BudgetItem:
    return BudgetItem(
        "lora",
        "step-distill LoRA (unmerged)",
        mib(lora.bytes * resident_blocks / blocks),
        "sample",
        "weights",
        f"{lora.bytes / 1e6:.0f} MB × {resident_blocks}/{blocks} resident blocks",
        f"{lora.source}; never merged into GGUF/scaled fp8 (WanVideoLoraSelect)",
    )


def _activation_items(
    *, facts: Facts, workload: Workload, attention: str, native_allocator: bool
) -> list[BudgetItem]:
    w, runtime = workload, facts.runtime
    act = activation_bytes(w.tokens, attention, facts)
    allocator = "native" if native_allocator else "cuda_malloc_async"
    fraction = getattr(runtime.fragmentation_fraction, allocator)
    return [
        BudgetItem(
            "activations",
            f"activations ({w.tokens:,} tokens, {attention})",
            mib(act),
            "sample",
            "transient",
            f"{runtime.activation_bytes_per_token:,.0f} B × tokens + "
            f"{runtime.activation_base_mib:.0f} MiB; tokens = {w.latent_frames}×{w.height // 16}×{w.width // 16}",
            runtime.activation_source,
        ),
        BudgetItem(
            "fragmentation",
            f"allocator headroom ({'native' if native_allocator else 'cudaMallocAsync'})",
            mib(act * fraction),
            "sample",
            "transient",
            f"{fraction:.0%} of activations",
            runtime.fragmentation_source,
        ),
    ]


def decode_items(*, facts: Facts, workload: Workload, tiled: bool) -> list[BudgetItem]:
    """VAE decode: the VAE's weights, the decode (tiled when the untiled one does not fit) and the
    allocator's pool above it."""
    w, vae, decode = workload, facts.vae, facts.decode
    assert vae.bytes is not None
    decoded = vae_decode_bytes(w.width, w.height, w.frames, tiled, facts)
    return [
        BudgetItem("vae", "VAE weights", mib(vae.bytes), "decode", "weights", "file size", vae.source),
        BudgetItem(
            "vae_decode",
            f"VAE decode{f' (tiled {decode.tile_px} px)' if tiled else ''}",
            mib(decoded),
            "decode",
            "transient",
            f"{decode.per_pixel_bytes:,.0f} B × "
            f"{'tile' if tiled else 'frame'} px + "
            f"{decode.per_pixel_frame_bytes:g} B × W×H×frames",
            decode.source,
        ),
        BudgetItem(
            "vae_pool",
            "VAE allocator headroom",
            mib(decoded * decode.pool_fraction),
            "decode",
            "transient",
            f"{decode.pool_fraction:.0%} of the decode",
            decode.pool_source,
        ),
    ]


# --- the whole budget ----------------------------------------------------------------------------


def budget_items(
    *, facts: Facts, request: PlanRequest, weights: DiffusionWeights, layout: Layout, native_allocator: bool
) -> list[BudgetItem]:
    """Every component of ``layout``, phase by phase in the order the workflow runs them."""
    return [
        *overhead_items(runtime=facts.runtime),
        *pose_items(pose=facts.pose, backend=request.pose_backend, on_gpu=layout.pose_on_gpu),
        *text_items(encoders=facts.encoders, precision=request.text_encoder, on_gpu=layout.text_on_gpu),
        *image_items(encoders=facts.encoders),
        *sample_items(
            facts=facts,
            weights=weights,
            layout=layout,
            workload=request.workload,
            attention=request.attention,
            step_distill_lora=request.step_distill_lora,
            native_allocator=native_allocator,
        ),
        *decode_items(facts=facts, workload=request.workload, tiled=layout.vae_tiled),
    ]


def evaluate(layout: Layout, items: tuple[BudgetItem, ...], host_ram_needed_mib: int) -> Evaluation:
    """What is on the card in each phase, and the peak: in ``full`` every model stays loaded, so
    each phase holds all weights plus its own transients; otherwise a phase holds only its own."""
    overhead = sum(item.mib for item in items if item.phase == "always")
    phase_mib: dict[str, int] = {}
    peak_phase: str
    for phase in PHASES:
        phase_mib[phase] = overhead + sum(item.mib for item in items if item.phase == phase)
    if layout.mode == "full":
        weights = sum(item.mib for item in items if item.kind == "weights")
        transient = {
            phase: sum(i.mib for i in items if i.phase == phase and i.kind == "transient") for phase in PHASES
        }
        peak_phase = max(transient, key=lambda phase: transient[phase])
        peak = overhead + weights + transient[peak_phase]
        phase_mib = {phase: overhead + weights + transient[phase] for phase in PHASES}
    else:
        peak_phase = max(phase_mib, key=lambda phase: phase_mib[phase])
        peak = phase_mib[peak_phase]
    return Evaluation(layout, items, phase_mib, peak, peak_phase, host_ram_needed_mib)


def host_ram_needed(*, facts: Facts, request: PlanRequest, weights: DiffusionWeights, layout: Layout) -> int:
    """RAM for ComfyUI itself, swapped blocks, and every model while it is not on the GPU."""
    needed = facts.runtime.host_baseline_mib * MIB
    text, clip, vae = facts.encoders.text[request.text_encoder], facts.encoders.clip_vision, facts.vae
    pose = facts.pose.backend(request.pose_backend)
    assert text.bytes is not None and clip.bytes is not None and vae.bytes is not None
    assert pose.bytes is not None
    if layout.mode != "full" or not layout.text_on_gpu:
        needed += text.bytes
    if layout.mode != "full":
        needed += clip.bytes + vae.bytes
        needed += pose.bytes
    needed += layout.swap * weights.block_bytes
    if request.step_distill_lora and not weights.lora_merged:
        needed += facts.lora.bytes * layout.swap / weights.blocks
    return mib(needed)
