"""What a card's compute capability allows: bf16, fp8 compute, flash-attn 2 kernels.

Facts over a compute capability string (``"8.9"``), read from data/compatibility.yaml
(``arch_features`` and ``flash_attn``, each row with its source) through
:mod:`zr4.core.compat_data`: the compatibility check of a profile (``zr4.compat``) and the VRAM
planner on the card it finds read the same rows, so both refuse the same cards for the same reason.

- bf16 and fp8 compute: ComfyUI's ``should_use_bf16`` and ``supports_fp8_compute`` are thresholds
  (major 8, and 8.9); the ``arch_features`` rows list the arches with their features. A card between
  two rows (an sm_87) has the features of the row below it, and one older than every row none.
  The diffusion model runs at base_precision fp16 (src/zr4/core/workflow/build.py), but the text
  encoder and the VAE loaders run at precision bf16, so a card without bf16 in hardware (Volta
  sm_70, Turing sm_75) is refused rather than planned.
- flash-attn: the release wheels carry the ``arches`` of its row; a source build compiles the
  ``FLASH_ATTN_CUDA_ARCHS`` values setup.py knows (``compile_archs``, each with the oldest nvcc that
  emits it). CUDA code runs on its own major with an equal or higher minor, so sm_80 code serves
  8.6 and 8.9 cards.
"""

from __future__ import annotations

from collections.abc import Iterable

from zr4.core.compat_data import (
    ArchFeatures,
    CompatibilityDataError,
    CompatibilityMatrix,
    FlashAttnRelease,
    load_matrix,
)


def capability(value: str) -> tuple[int, int]:
    """``"8.9"`` -> ``(8, 9)``; ``"12.0+PTX"`` -> ``(12, 0)``; a CUDA version ``"12.8.1"`` -> ``(12, 8)``."""
    major, _, rest = value.split("+")[0].strip().partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def sm_name(value: str) -> str:
    major, minor = capability(value)
    return f"sm_{major}{minor}"


def _arch_tuple(arch: str) -> tuple[int, int]:
    """``"sm_86"`` -> ``(8, 6)``; ``"sm_120"`` -> ``(12, 0)``."""
    number = int(arch.removeprefix("sm_"))
    return divmod(number, 10)


def _features(value: str) -> ArchFeatures | None:
    """The ``arch_features`` row of the newest arch at or below the card's compute capability."""
    card = capability(value)
    rows = [row for row in load_matrix().arch_features if _arch_tuple(row.arch) <= card]
    return max(rows, key=lambda row: _arch_tuple(row.arch), default=None)


def has_bf16(value: str) -> bool:
    """bf16 arithmetic in hardware (and in ComfyUI's choice of compute dtype)."""
    row = _features(value)
    return row is not None and row.bf16


def has_fp8_compute(value: str) -> bool:
    """fp8 matrix multiply in hardware (ComfyUI's ``supports_fp8_compute``)."""
    row = _features(value)
    return row is not None and row.fp8_compute


def _release(version: str | None, matrix: CompatibilityMatrix | None) -> FlashAttnRelease | None:
    """The matrix's row for flash-attn ``version``; None names the matrix's one release."""
    matrix = matrix or load_matrix()
    if version is not None:
        return matrix.flash_attn_release(version)
    if len(matrix.flash_attn) != 1:
        raise CompatibilityDataError(
            f"compatibility.yaml lists {len(matrix.flash_attn)} flash-attn releases: name the version"
        )
    return matrix.flash_attn[0]


def flash_attn_build_archs(
    arches: Iterable[str],
    cuda: str | None = None,
    version: str | None = None,
    matrix: CompatibilityMatrix | None = None,
) -> str:
    """``FLASH_ATTN_CUDA_ARCHS`` for cards of these compute capabilities: each card's major as
    setup.py names it (8.6 and 8.9 -> ``80``: sm_80 code runs on the whole major; "89" would compile
    nothing), kept when flash-attn ``version``'s setup.py compiles it with nvcc ``cuda`` (None: any).
    Empty when none is left."""
    release = _release(version, matrix)
    known = release.compile_archs if release is not None else {}
    nvcc = capability(cuda) if cuda is not None else None
    wanted: list[str] = []
    for value in arches:
        name = f"{capability(value)[0]}0"
        if name in known and (nvcc is None or nvcc >= capability(known[name])) and name not in wanted:
            wanted.append(name)
    return ";".join(wanted)


def flash_attn_kernel_majors(
    source_build_cuda: str | None,
    build_arches: Iterable[str] = (),
    version: str | None = None,
    matrix: CompatibilityMatrix | None = None,
) -> set[int]:
    """Compute capability majors flash-attn has kernels for: the release wheel (``source_build_cuda``
    None), or a source build with that CUDA for ``FLASH_ATTN_CUDA_ARCHS`` of ``build_arches``."""
    if source_build_cuda is None:
        release = _release(version, matrix)
        return {_arch_tuple(arch)[0] for arch in (release.arches if release is not None else ())}
    built = flash_attn_build_archs(build_arches, source_build_cuda, version, matrix)
    return {int(name) // 10 for name in built.split(";") if name}


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
