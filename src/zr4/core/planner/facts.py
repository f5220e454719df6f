"""``data/planner.yaml`` as typed, frozen data, its model file sizes taken from the model manifest.

The planner budgets the files the model manager downloads, so their sizes are read from
``data/models.yaml`` rather than copied: a component names the manifest entries it loads (``files``)
and its source cites their sizes through ``{entry-id}`` placeholders, so the plan prints the figure
it budgeted. A figure that is deliberately not the file's size (an upper bound from a larger file, a
computed LoRA size, a measurement) stays in planner.yaml as ``bytes`` with its source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from zr4.core.data_file import DataFileError, load_data_file
from zr4.core.documents import read_yaml_mapping
from zr4.core.model_files.errors import ManifestError
from zr4.core.model_files.manifest import Manifest, default_manifest_path, parse_manifest
from zr4.paths import data_dir


class PlannerDataError(DataFileError):
    """``planner.yaml`` is missing or malformed, or names a file the model manifest lacks."""


def hub_size(size: float) -> str:
    """A size the way the Hub's file listings show it: three significant digits, decimal units."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale * 0.9995:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


# ``{entry-id}``, ``{entry-id:bytes}`` or ``{entry-id:LEVEL}`` in a source.
_CITED_SIZE = re.compile(r"\{([a-z0-9-]+)(?::([A-Za-z0-9_]+))?\}")


def _entry_size(manifest: Manifest, reference: str) -> int:
    """The bytes of manifest entry ``id`` or ``id:LEVEL`` (a GGUF level of a picked entry)."""
    entry_id, _, level = reference.partition(":")
    try:
        entry = manifest.entry(entry_id)
    except ManifestError:
        raise ValueError(f"the model manifest has no entry {entry_id!r}") from None
    if level:
        if level not in entry.size_estimates:
            raise ValueError(f"manifest entry {entry_id!r} has no size for {level}")
        return entry.size_estimates[level]
    return entry.size if entry.size is not None else (entry.size_estimate or 0)


def _file_name(manifest: Manifest, reference: str) -> str:
    """The file's name in its folder; a GGUF level's file is picked from a listing at run time."""
    entry = manifest.entry(reference.partition(":")[0])
    return reference if entry.pick is not None else entry.dest_name


def _cite(text: str, manifest: Manifest) -> str:
    def size(match: re.Match[str]) -> str:
        entry_id, spec = match.group(1), match.group(2)
        if spec == "bytes":
            return f"{_entry_size(manifest, entry_id):,} B"
        return hub_size(_entry_size(manifest, f"{entry_id}:{spec}" if spec else entry_id))

    return _CITED_SIZE.sub(size, text)


@dataclass(frozen=True, kw_only=True)
class FileSize:
    """A component's weights: the manifest entries it loads (``files``: ``bytes`` is their sum) or,
    for a figure that is not a file's size, ``bytes`` as written. No size at all: not known."""

    files: tuple[str, ...] = ()
    bytes: int | None = None
    source: str = ""
    # The manifest's file names of ``files`` (filled in from the manifest).
    file_names: tuple[str, ...] = ()

    @classmethod
    def prepare(cls, data: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
        """Size ``files`` from the manifest and fill in the sizes a source cites."""
        if "file_names" in data:
            raise ValueError("file_names comes from the model manifest: name the entries in `files`")
        files = data.get("files") or ()
        if not isinstance(files, list | tuple):
            return data  # reported as not a list when the field is read
        if files and data.get("bytes") is not None:
            raise ValueError("give `files` (sized by the model manifest) or `bytes`, not both")
        if files:
            total = sum(_entry_size(manifest, str(reference)) for reference in files)
            if not total:
                raise ValueError(f"the model manifest has no size for any of {', '.join(files)}")
            data["bytes"] = total
            data["file_names"] = tuple(_file_name(manifest, str(reference)) for reference in files)
        if isinstance(data.get("source"), str):
            data["source"] = _cite(data["source"], manifest)
        return data

    def __post_init__(self) -> None:
        if self.bytes is not None and not self.source:
            raise ValueError("a size needs its `source`")

    @property
    def stem(self) -> str:
        """The first file's name without its extension (``umt5_xxl_fp8_e4m3fn_scaled``)."""
        return Path(self.file_names[0]).stem if self.file_names else ""


@dataclass(frozen=True, kw_only=True)
class Variant(FileSize):
    lora_merged: bool


@dataclass(frozen=True)
class Gguf:
    lora_merged: bool
    # Quality order, lowest first.
    levels: dict[str, FileSize]
    auto_candidates: tuple[str, ...]

    def __post_init__(self) -> None:
        for level in self.auto_candidates:
            if level not in self.levels or self.levels[level].bytes is None:
                raise ValueError(f"auto candidate {level} is not a level with a known size")


@dataclass(frozen=True)
class Diffusion:
    blocks: int
    non_block_bytes: float
    # (rows, columns) of the largest linear layer, held in bf16 when upcast.
    largest_linear: tuple[int, int]
    dequant_scratch_source: str
    swap_staging_source: str
    variants: dict[str, Variant]
    gguf: Gguf


@dataclass(frozen=True)
class Lora:
    bytes: float
    source: str


@dataclass(frozen=True)
class Activation:
    """An encoder's measured activations (MiB) for an input of ``tokens`` tokens."""

    mib: int
    tokens: int


@dataclass(frozen=True)
class Encoders:
    text: dict[str, FileSize]
    clip_vision: FileSize
    text_activation: Activation
    clip_activation: Activation
    text_cpu_staging_mib: int
    # The source of the three measurements above.
    source: str


@dataclass(frozen=True, kw_only=True)
class PoseBackend(FileSize):
    workspace_mib: int


@dataclass(frozen=True)
class Pose:
    onnx: PoseBackend
    mmpose: PoseBackend
    workspace_source: str

    def backend(self, name: str) -> PoseBackend:
        return self.onnx if name == "onnx" else self.mmpose


@dataclass(frozen=True)
class FragmentationFraction:
    cuda_malloc_async: float
    native: float


@dataclass(frozen=True)
class Runtime:
    cuda_context_mib: int
    cuda_context_source: str
    comfyui_reserve_mib: int
    comfyui_reserve_source: str
    activation_bytes_per_token: float
    activation_base_mib: float
    activation_source: str
    fragmentation_fraction: FragmentationFraction
    fragmentation_source: str
    host_baseline_mib: float


@dataclass(frozen=True)
class Decode:
    per_pixel_bytes: float
    per_pixel_frame_bytes: float
    source: str
    pool_fraction: float
    pool_source: str
    tile_px: int


@dataclass(frozen=True)
class Facts:
    """``planner.yaml``, typed; the files' sizes come from the model manifest it was loaded with."""

    # GPU_TIER name -> the total MiB from which a card has it, largest first.
    tiers: dict[str, int]
    diffusion: Diffusion
    lora: Lora
    encoders: Encoders
    vae: FileSize
    pose: Pose
    runtime: Runtime
    decode: Decode
    # The manifest's documented default STEADYDANCER_GGUF_MODEL (filled in from the manifest).
    default_gguf_level: str

    @classmethod
    def prepare(cls, data: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
        if "default_gguf_level" in data:
            raise ValueError("default_gguf_level comes from the model manifest (gguf.default_level)")
        return {**data, "default_gguf_level": manifest.gguf_default_level}

    def __post_init__(self) -> None:
        thresholds = list(self.tiers.values())
        if not thresholds or thresholds != sorted(thresholds, reverse=True) or thresholds[-1] != 0:
            raise ValueError("tiers: list them largest first, the last from 0 MiB")

    @property
    def blocks(self) -> int:
        return self.diffusion.blocks

    @property
    def gguf_levels(self) -> list[str]:
        return list(self.diffusion.gguf.levels)

    @property
    def auto_candidates(self) -> list[str]:
        return list(self.diffusion.gguf.auto_candidates)

    def gguf_size(self, level: str) -> tuple[int, str, str | None]:
        """(bytes, source, note) for ``level``; unknown sizes take the next larger known level."""
        levels = self.diffusion.gguf.levels
        if level not in levels:
            raise PlannerDataError(f"unknown GGUF level {level!r}; known: {', '.join(levels)}")
        names = list(levels)
        for candidate in names[names.index(level) :]:
            size = levels[candidate]
            if size.bytes:
                if candidate == level:
                    return size.bytes, size.source, None
                note = f"no file size known for {level}; budgeted as {candidate} ({size.bytes / 1e9:.2f} GB)"
                return size.bytes, f"upper bound: {size.source}", note
        raise PlannerDataError(f"no GGUF level at or above {level} has a known size")

    def weights(self, variant: str, level: str | None) -> tuple[int, str, str | None, bool]:
        """(bytes, source, note, lora_merged) of the diffusion model file."""
        if variant == "gguf":
            assert level is not None
            size, source, note = self.gguf_size(level)
            return size, source, note, self.diffusion.gguf.lora_merged
        entry = self.diffusion.variants[variant]
        assert entry.bytes is not None
        return entry.bytes, entry.source, None, entry.lora_merged


def planner_file() -> Path:
    return data_dir() / "planner.yaml"


@cache
def load_facts(path: Path | None = None, manifest_path: Path | None = None) -> Facts:
    """planner.yaml (default: the bundled one) with the sizes of ``manifest_path``'s files (default:
    the bundled data/models.yaml), read once per process."""
    manifest_file = manifest_path or default_manifest_path()
    try:
        manifest = parse_manifest(read_yaml_mapping(manifest_file, PlannerDataError), manifest_file)
    except ManifestError as error:
        raise PlannerDataError(f"the planner sizes its files from the model manifest: {error}") from None
    return load_data_file(path or planner_file(), Facts, PlannerDataError, context=manifest)
