"""The planner's formulas: activations, the VAE decode, the GPU tier, MiB rounding.

Each is fitted on, or read from, what ``data/planner.yaml`` cites; the budget calls them with the
request's workload, and ``bench/calibrate_activations.py`` compares them with new measurements.
"""

from __future__ import annotations

from zr4.core.planner.facts import Facts, load_facts

MIB = 1024 * 1024
GIB_MIB = 1024


def activation_bytes(tokens: int, attention: str = "sdpa", facts: Facts | None = None) -> int:
    """Peak activation memory of one diffusion forward pass (batch 1) for ``tokens`` tokens.

    Fitted on measurements of Wan 2.1 14B-shaped blocks (``bench/calibrate_activations.py``): the
    peak is the FFN's bf16 hidden state and its GELU output plus fp32 modulation copies, linear in
    the token count. SDPA's flash, memory-efficient and cuDNN kernels measured the same; flash-attn 2
    and SageAttention are O(tokens) too and peak below the FFN, so the same formula is used.
    """
    del attention  # same for every O(tokens) attention kernel, see above
    runtime = (facts or load_facts()).runtime
    return int(runtime.activation_bytes_per_token * tokens + runtime.activation_base_mib * MIB)


def vae_decode_bytes(width: int, height: int, frames: int, tiled: bool, facts: Facts | None = None) -> int:
    """Peak of a Wan 2.1 VAE decode above its weights (bf16); tiled = WanVideoDecode's default tiles."""
    decode = (facts or load_facts()).decode
    per_pixel = decode.per_pixel_bytes
    per_pixel_frame = decode.per_pixel_frame_bytes
    if tiled:
        tile = decode.tile_px
        # tiles run one after another; the decoded video is assembled on the GPU
        return int(
            per_pixel * min(tile, width) * min(tile, height) + per_pixel_frame * width * height * frames
        )
    return int(per_pixel * width * height + per_pixel_frame * width * height * frames)


def tier_for(total_mib: int, facts: Facts | None = None) -> str:
    """The GPU_TIER of a card of ``total_mib`` (MiB as nvidia-smi reports them): the thresholds of
    docs/reference/environment.md, kept in planner.yaml ``tiers``."""
    tiers = (facts or load_facts()).tiers
    return next((name for name, from_mib in tiers.items() if total_mib >= from_mib), list(tiers)[-1])


def mib(value_bytes: float) -> int:
    """Bytes as MiB, rounded up: a budget never rounds a component down."""
    return int(-(-value_bytes // MIB))
