"""``data/compatibility.yaml`` as typed, frozen data: the one copy of the compatibility facts.

The host's rules (``zr4.compat``) refuse a profile with them, and the card facts the planner and
the boot apply (``zr4.core.arch``: bf16, fp8 compute, which cards flash-attn has kernels for) are
read from the same rows, so a render and a plan cannot disagree about a card. The model lives in
core because both sides read it; each row keeps its ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from zr4.core.data_file import DataFileError, load_data_file
from zr4.paths import data_dir


class CompatibilityDataError(DataFileError):
    """``compatibility.yaml`` is missing or malformed."""


@dataclass(frozen=True)
class TorchBuild:
    """A torch release: the Pythons PyPI has wheels for, its CUDA builds, each build's arch list."""

    torch: str
    python: tuple[str, ...]
    cuda: tuple[str, ...]
    pypi_cuda: str
    cxx11_abi: bool
    source: str
    arches: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Companions:
    """The torchvision and torchaudio releases built against one torch release."""

    torch: str
    torchvision: str
    torchaudio: str
    source: str


@dataclass(frozen=True)
class CudaMinForArch:
    """The oldest CUDA toolkit that compiles and runs code for an ``sm_XY`` arch."""

    arch: str
    cuda: str
    source: str


@dataclass(frozen=True)
class ArchFeatures:
    """What the hardware of one compute capability does, as ComfyUI decides it."""

    arch: str
    bf16: bool
    fp8_compute: bool
    cards: str


@dataclass(frozen=True)
class SourceBuildArches:
    cuda_min: str
    arches: tuple[str, ...]


@dataclass(frozen=True)
class FlashAttnRelease:
    """A flash-attn release: its wheels, the arches they carry, what its setup.py compiles."""

    version: str
    wheel_url: str
    wheel_cuda_major: tuple[str, ...]
    wheel_torch: tuple[str, ...]
    wheel_python: tuple[str, ...]
    # The arches the release wheels carry kernels for.
    arches: tuple[str, ...]
    # FLASH_ATTN_CUDA_ARCHS values setup.py compiles -> the oldest nvcc that compiles each.
    compile_archs: dict[str, str]
    source: str
    source_build_arches: SourceBuildArches | None = None
    wheel_sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Xformers:
    version: str
    torch: str
    source: str


@dataclass(frozen=True)
class MmcvWheels:
    torch: tuple[str, ...]
    cuda: tuple[str, ...]


@dataclass(frozen=True)
class Mmcv:
    """An mmcv release with official wheels (``wheels``) or known to compile (``source_build_torch``)."""

    version: str
    source: str
    wheels: MmcvWheels | None = None
    source_build_torch: tuple[str, ...] = ()


@dataclass(frozen=True)
class MmcvConsumer:
    """A package that asserts an mmcv range when imported."""

    package: str
    version: str
    mmcv_min: str
    mmcv_below: str
    source: str


@dataclass(frozen=True)
class OnnxruntimeGpu:
    """onnxruntime-gpu releases in [from, below) are built for one CUDA major."""

    from_: str = field(metadata={"key": "from"})
    below: str
    cuda_major: str
    source: str


@dataclass(frozen=True)
class ComfyuiTorch:
    """ComfyUI releases after ``last_version_for_old_torch`` need torch >= ``old_torch_below``."""

    last_version_for_old_torch: str
    old_torch_below: str
    source: str


@dataclass(frozen=True)
class RuntimeFlavor:
    """An nvidia/cuda image flavor the final stage may take, what it adds to the one before, and its source."""

    flavor: str
    adds: str
    source: str


@dataclass(frozen=True)
class CudaRuntimeBase:
    """The final stage's base: the flavors without compilers (smallest first) and the one the image needs."""

    needed: str
    flavors: tuple[RuntimeFlavor, ...]


@dataclass(frozen=True)
class CompatibilityMatrix:
    """The whole file, one list of rows per section."""

    torch_builds: tuple[TorchBuild, ...]
    companions: tuple[Companions, ...]
    cuda_min_for_arch: tuple[CudaMinForArch, ...]
    arch_features: tuple[ArchFeatures, ...]
    flash_attn: tuple[FlashAttnRelease, ...]
    xformers: tuple[Xformers, ...]
    mmcv: tuple[Mmcv, ...]
    mmcv_consumers: tuple[MmcvConsumer, ...]
    onnxruntime_gpu: tuple[OnnxruntimeGpu, ...]
    comfyui: tuple[ComfyuiTorch, ...]
    cuda_runtime_base: CudaRuntimeBase

    def torch_build(self, torch: str) -> TorchBuild | None:
        return next((row for row in self.torch_builds if row.torch == torch), None)

    def flash_attn_release(self, version: str | None) -> FlashAttnRelease | None:
        return next((row for row in self.flash_attn if row.version == version), None)


def compatibility_file() -> Path:
    return data_dir() / "compatibility.yaml"


@cache
def load_matrix(path: Path | None = None) -> CompatibilityMatrix:
    """The compatibility matrix (read once per process)."""
    return load_data_file(path or compatibility_file(), CompatibilityMatrix, CompatibilityDataError)
