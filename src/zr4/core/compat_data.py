"""``data/compatibility.yaml`` as typed, frozen data: the one copy of the compatibility facts.

The host's rules (``zr4.compat``) refuse a profile with them, and the card facts the planner and
the boot apply (``zr4.core.arch``: bf16, fp8 compute, which cards flash-attn has kernels for) are
read from the same rows, so a render and a plan cannot disagree about a card. The model lives in
core because both sides read it; each row keeps its ``source``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field

from zr4.core.data_file import DataFileError, DataModel, load_data_file
from zr4.paths import data_dir


class CompatibilityDataError(DataFileError):
    """``compatibility.yaml`` is missing or malformed."""


class TorchBuild(DataModel):
    """A torch release: the Pythons PyPI has wheels for, its CUDA builds, each build's arch list."""

    torch: str
    python: tuple[str, ...]
    cuda: tuple[str, ...]
    pypi_cuda: str
    arches: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    cxx11_abi: bool
    source: str


class Companions(DataModel):
    """The torchvision and torchaudio releases built against one torch release."""

    torch: str
    torchvision: str
    torchaudio: str
    source: str


class CudaMinForArch(DataModel):
    """The oldest CUDA toolkit that compiles and runs code for an ``sm_XY`` arch."""

    arch: str
    cuda: str
    source: str


class ArchFeatures(DataModel):
    """What the hardware of one compute capability does, as ComfyUI decides it."""

    arch: str
    bf16: bool
    fp8_compute: bool
    cards: str


class SourceBuildArches(DataModel):
    cuda_min: str
    arches: tuple[str, ...]


class FlashAttnRelease(DataModel):
    """A flash-attn release: its wheels, the arches they carry, what its setup.py compiles."""

    version: str
    wheel_url: str
    wheel_cuda_major: tuple[str, ...]
    wheel_torch: tuple[str, ...]
    wheel_python: tuple[str, ...]
    # The arches the release wheels carry kernels for.
    arches: tuple[str, ...]
    source_build_arches: SourceBuildArches | None = None
    # FLASH_ATTN_CUDA_ARCHS values setup.py compiles -> the oldest nvcc that compiles each.
    compile_archs: dict[str, str]
    wheel_sha256: dict[str, str] = Field(default_factory=dict)
    source: str


class Xformers(DataModel):
    version: str
    torch: str
    source: str


class MmcvWheels(DataModel):
    torch: tuple[str, ...]
    cuda: tuple[str, ...]


class Mmcv(DataModel):
    """An mmcv release with official wheels (``wheels``) or known to compile (``source_build_torch``)."""

    version: str
    wheels: MmcvWheels | None = None
    source_build_torch: tuple[str, ...] = ()
    source: str


class MmcvConsumer(DataModel):
    """A package that asserts an mmcv range when imported."""

    package: str
    version: str
    mmcv_min: str
    mmcv_below: str
    source: str


class OnnxruntimeGpu(DataModel):
    """onnxruntime-gpu releases in [from, below) are built for one CUDA major."""

    from_: str = Field(alias="from")
    below: str
    cuda_major: str
    source: str


class ComfyuiTorch(DataModel):
    """ComfyUI releases after ``last_version_for_old_torch`` need torch >= ``old_torch_below``."""

    last_version_for_old_torch: str
    old_torch_below: str
    source: str


class CompatibilityMatrix(DataModel):
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
