"""What a card's compute capability allows: bf16, fp8 compute, flash-attn 2 kernels.

Pure facts over a compute capability string (``"8.9"``), shared by the compatibility check of a
profile and the VRAM planner on the card it finds, so both refuse the same cards for the same reason
(data/compatibility.yaml ``arch_features`` and ``flash_attn`` hold the same facts as rows; a test
keeps them equal). Sources:

- bf16: ComfyUI v0.7.0 computes in bf16 only from compute capability 8.0 (Ampere)
  (comfyanonymous/ComfyUI@f59f71cf34067d46713f6243312f7f0b360d061f:comfy/model_management.py,
  ``should_use_bf16``: ``props.major >= 8``). The diffusion model runs at base_precision fp16
  (src/zr4/core/workflow/build.py), but the text encoder and the VAE loaders run at precision bf16, so a
  card without bf16 in hardware (Volta sm_70, Turing sm_75) is refused rather than planned.
- fp8 compute: 8.9 (Ada) and 9.0+ (``supports_fp8_compute`` in the same file); older cards store
  fp8 weights and compute in fp16/bf16.
- flash-attn 2.7.4.post1 (Dao-AILab/flash-attention@5231d95fe13733fb534c01895f7ea88c6a6c7793:setup.py):
  ``FLASH_ATTN_CUDA_ARCHS`` defaults to ``80;90;100;120``; it emits ``-gencode`` for ``80`` always,
  ``90`` with nvcc >= 11.8, ``100`` and ``120`` only with nvcc >= 12.8, and no other value.
  The release wheels are built with CUDA 12.4.1 (.github/workflows/publish.yml at that tag), so
  they carry sm_80 and sm_90 code only. CUDA code runs on its own major with an equal or higher
  minor, so sm_80 code serves 8.6 and 8.9 cards.
"""

from __future__ import annotations

from collections.abc import Iterable

# The FLASH_ATTN_CUDA_ARCHS values flash-attn's setup.py knows, by compute capability major, with
# the oldest nvcc that compiles each.
_FLASH_ATTN_FAMILIES = {8: ("80", (11, 7)), 9: ("90", (11, 8)), 10: ("100", (12, 8)), 12: ("120", (12, 8))}
# What the release wheels (CUDA 12.4.1) contain.
FLASH_ATTN_WHEEL_CUDA = "12.4"


def capability(value: str) -> tuple[int, int]:
    """``"8.9"`` -> ``(8, 9)``; ``"12.0+PTX"`` -> ``(12, 0)``; a CUDA version ``"12.8.1"`` -> ``(12, 8)``."""
    major, _, rest = value.split("+")[0].strip().partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def sm_name(value: str) -> str:
    major, minor = capability(value)
    return f"sm_{major}{minor}"


def has_bf16(value: str) -> bool:
    """bf16 arithmetic in hardware (and in ComfyUI's choice of compute dtype)."""
    return capability(value) >= (8, 0)


def has_fp8_compute(value: str) -> bool:
    """fp8 matrix multiply in hardware (ComfyUI's ``supports_fp8_compute``)."""
    return capability(value) >= (8, 9)


def flash_attn_build_archs(arches: Iterable[str]) -> str:
    """``FLASH_ATTN_CUDA_ARCHS`` for cards of these compute capabilities: setup.py knows only 80,
    90, 100 and 120 (an sm_86 or sm_89 card runs the sm_80 code; "89" would compile nothing)."""
    families = []
    for value in arches:
        major, minor = capability(value)
        family = _FLASH_ATTN_FAMILIES.get(major, (f"{major}{minor}", (0, 0)))[0]
        families.append(family)
    return ";".join(dict.fromkeys(families))


def flash_attn_kernel_majors(source_build_cuda: str | None, build_arches: Iterable[str] = ()) -> set[int]:
    """Compute capability majors flash-attn has kernels for: the release wheel (``source_build_cuda``
    None), or a source build with that CUDA for ``FLASH_ATTN_CUDA_ARCHS`` of ``build_arches``."""
    nvcc = capability(source_build_cuda or FLASH_ATTN_WHEEL_CUDA)
    wanted = (
        set(flash_attn_build_archs(build_arches).split(";"))
        if source_build_cuda is not None
        else {family for family, _ in _FLASH_ATTN_FAMILIES.values()}  # the release build's default list
    )
    return {
        major
        for major, (family, oldest_nvcc) in _FLASH_ATTN_FAMILIES.items()
        if family in wanted and nvcc >= oldest_nvcc
    }


def flash_attn_runs_on(value: str, kernel_majors: Iterable[int]) -> bool:
    """Whether a card of this compute capability finds flash-attn kernels (same major, minor >= 0)."""
    return capability(value)[0] in set(kernel_majors)


def missing_bf16_reason(value: str, card: str) -> str:
    """Why zr4 does not run SteadyDancer on a card without bf16 (Volta sm_70, Turing sm_75)."""
    return (
        f"{card} is {sm_name(value)}, which has no bf16 in hardware (ComfyUI computes in bf16 only from compute "
        "capability 8.0), while the workflow loads the text encoder and the VAE at precision bf16; "
        "use an Ampere or newer card (sm_80+)"
    )
