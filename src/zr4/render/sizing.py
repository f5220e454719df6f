"""Disk sizes for the RunPod template, from the model manifest rather than guesses.

The volume holds the models of the profile's default choice with headroom for switching the GGUF
level at run time; the container disk holds the image (about 30 GB for this stack) plus scratch.
"""

from __future__ import annotations

import math

from zr4.core.model_files.manifest import ManifestEntry, load_manifest
from zr4.core.model_files.selection import select_entries
from zr4.core.model_files.settings import ModelSettings
from zr4.profile.models import Profile

_GB = 1_000_000_000
# The unpacked image of the cu124 stack (torch, xformers, onnxruntime-gpu, CUDA runtime, ComfyUI) is
# roughly 25-30 GB; RunPod's container disk also holds ComfyUI's temp files.
IMAGE_AND_SCRATCH_GB = 40
# Outputs and one more GGUF level or a partial download in flight.
VOLUME_HEADROOM = 1.25
VOLUME_FREE_GB = 20


def _entry_bytes(entry: ManifestEntry, gguf_level: str) -> int:
    if entry.size is not None:
        return entry.size
    if entry.pick == "gguf_level" and gguf_level in entry.size_estimates:
        return entry.size_estimates[gguf_level]
    if entry.size_estimate is not None:
        return entry.size_estimate
    return max(entry.size_estimates.values(), default=0)


def model_settings(profile: Profile, gguf_level: str) -> ModelSettings:
    """The model manager's settings for a profile's defaults (no environment overrides)."""
    return ModelSettings(
        variant=profile.model.variant,
        gguf_level=gguf_level,
        text_encoder=profile.model.text_encoder,
        pose_backends=frozenset({"onnx", profile.features.pose_backend}),
        step_distill_lora=profile.model.step_distill_lora,
    )


def model_bytes(profile: Profile) -> int:
    """Bytes of the model files the profile's default settings download."""
    manifest = load_manifest()
    level = profile.model.gguf_level if profile.model.gguf_level != "auto" else manifest.gguf_default_level
    return sum(
        _entry_bytes(entry, level) for entry in select_entries(manifest, model_settings(profile, level))
    )


def volume_gb(profile: Profile) -> int:
    """Persistent volume: models with headroom, plus room for outputs."""
    return math.ceil(model_bytes(profile) * VOLUME_HEADROOM / _GB) + VOLUME_FREE_GB


def container_disk_gb() -> int:
    """Container disk: the image and scratch, the same for every bundled stack; models live on the volume."""
    return IMAGE_AND_SCRATCH_GB
