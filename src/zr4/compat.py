"""Compatibility rules: small functions over ``data/compatibility.yaml``.

The knowledge lives in the data file (with a source per row), typed by ``zr4.core.compat_data``;
this module only reads it.
Each check returns ``Violation``s naming the rule, the values involved and what would satisfy it,
so a profile outside the matrix fails with a message a user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zr4.core.arch import flash_attn_build_archs, missing_bf16_reason
from zr4.core.compat_data import CompatibilityMatrix, FlashAttnRelease, TorchBuild, load_matrix
from zr4.errors import CompatibilityError
from zr4.profile.models import Profile


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` is the matrix section, ``message`` says what would satisfy it."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric components: ``2.7.4.post1`` -> (2, 7, 4); ``v0.7.0`` -> (0, 7, 0)."""
    parts: list[int] = []
    for piece in version.lstrip("v").split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def minor_of(version: str) -> str:
    """``2.5.1`` -> ``2.5``."""
    return ".".join(str(part) for part in version_tuple(version)[:2])


def _sm(profile: Profile) -> str:
    return f"sm_{profile.gpu.sm}"


def arch_runs_on_build(gpu_sm: int, build_arches: Sequence[str]) -> bool:
    """CUDA binaries run on the same major architecture with an equal or higher minor (sm_86 code runs on sm_89)."""
    major, minor = divmod(gpu_sm, 10)
    for arch in build_arches:
        arch_sm = int(arch.removeprefix("sm_"))
        arch_major, arch_minor = divmod(arch_sm, 10)
        if arch_major == major and arch_minor <= minor:
            return True
    return False


def check_python_torch(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    stack = profile.stack
    row = matrix.torch_build(stack.torch)
    if row is None:
        known = ", ".join(r.torch for r in matrix.torch_builds)
        return [
            Violation(
                "torch_builds",
                f"torch {stack.torch} is not in the matrix (known: {known}); add a row with its source",
            )
        ]
    if stack.python not in row.python:
        return [
            Violation(
                "python_torch",
                f"torch {stack.torch} has no wheels for Python {stack.python}; use Python {' / '.join(row.python)}",
            )
        ]
    return []


def check_torch_cuda(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    stack = profile.stack
    row = matrix.torch_build(stack.torch)
    if row is None:
        return []
    problems = []
    if stack.torch_cuda not in row.cuda:
        problems.append(
            Violation(
                "torch_cuda",
                f"torch {stack.torch} is not built for {stack.torch_cuda}; builds: {', '.join(row.cuda)}",
            )
        )
    if stack.torch_cuda != row.pypi_cuda:
        problems.append(
            Violation(
                "torch_cuda",
                f"the lock installs torch {stack.torch} from PyPI, which is the {row.pypi_cuda} build, "
                f"not {stack.torch_cuda}; set stack.torch_cuda: {row.pypi_cuda}",
            )
        )
    image_cuda = "cu" + "".join(stack.cuda.split(".")[:2])
    if image_cuda != stack.torch_cuda:
        problems.append(
            Violation(
                "torch_cuda",
                f"base images are CUDA {stack.cuda} ({image_cuda}) but torch is the {stack.torch_cuda} build: extensions "
                f"compiled in the builder must match torch's CUDA; use CUDA {stack.torch_cuda[2:4]}.{stack.torch_cuda[4:]}.x images",
            )
        )
    if stack.cxx11_abi != row.cxx11_abi:
        problems.append(
            Violation(
                "torch_cuda",
                f"torch {stack.torch} wheels use cxx11_abi={row.cxx11_abi}; set stack.cxx11_abi accordingly",
            )
        )
    for tag in (stack.base_image_devel, stack.base_image_runtime):
        if f":{stack.cuda}-" not in tag:
            problems.append(
                Violation(
                    "base_image",
                    f"{tag} is not a CUDA {stack.cuda} image; its tag must start with {stack.cuda}-",
                )
            )
    if "-devel-" not in stack.base_image_devel:
        problems.append(
            Violation(
                "base_image",
                f"stack.base_image_devel {stack.base_image_devel} is not a devel image (no nvcc)",
            )
        )
    return problems


# nvidia/cuda tags: <x.y.z>-<flavor>-<os>, e.g. 12.4.1-cudnn-runtime-ubuntu22.04 (flavor cudnn-runtime);
# an older cuDNN-numbered flavor (cudnn8-runtime) counts as its plain name.
_CUDA_TAG = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+-(?P<flavor>[a-z0-9-]+?)-(?P<os>[a-z]+[0-9][0-9.]*)$")


def cuda_flavor(image: str) -> str | None:
    """The flavor of an nvidia/cuda image reference (``base``, ``runtime``, ``cudnn-runtime``, ``devel``,
    ``cudnn-devel``), or None when the tag has no flavor where NVIDIA's tags put it."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    match = _CUDA_TAG.match(name.partition(":")[2])
    return re.sub(r"^cudnn[0-9]+-", "cudnn-", match.group("flavor")) if match else None


def runtime_flavors(matrix: CompatibilityMatrix | None = None) -> list[str]:
    """The nvidia/cuda flavors a final stage may take (no compilers), smallest first."""
    return [row.flavor for row in (matrix or load_matrix()).cuda_runtime_base.flavors]


def check_runtime_base(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    """The final stage's base must be a flavor that runs what was built (no compilers): base, runtime
    or cudnn-runtime. The bundled profiles take ``needed`` (base): torch's wheels bring CUDA and cuDNN."""
    section = matrix.cuda_runtime_base
    flavors = runtime_flavors(matrix)
    image = profile.stack.base_image_runtime
    flavor = cuda_flavor(image)
    if flavor in flavors:
        return []
    found = f"a {flavor} image" if flavor else "no nvidia/cuda <x.y.z>-<flavor>-<os> tag"
    return [
        Violation(
            "runtime_base",
            f"stack.base_image_runtime {image} is {found}; the final stage takes one of the flavors "
            f"{', '.join(flavors)}: use nvidia/cuda:{profile.stack.cuda}-{section.needed}-<os> "
            "(torch's nvidia-* wheels bring CUDA and cuDNN)",
        )
    ]


def check_companions(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    stack = profile.stack
    row = next((r for r in matrix.companions if r.torch == stack.torch), None)
    if row is None:
        return [
            Violation(
                "companions",
                f"no torchvision/torchaudio row for torch {stack.torch}; add one with its source",
            )
        ]
    problems = []
    for package in ("torchvision", "torchaudio"):
        pinned = getattr(stack, package)
        wanted = getattr(row, package)
        if pinned != wanted:
            problems.append(
                Violation("companions", f"torch {stack.torch} goes with {package} {wanted}, not {pinned}")
            )
    return problems


def check_gpu_arch(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    stack = profile.stack
    sm = _sm(profile)
    problems = []
    minimum = next((row.cuda for row in matrix.cuda_min_for_arch if row.arch == sm), None)
    if minimum is None:
        problems.append(
            Violation(
                "cuda_min_for_arch",
                f"compute capability {profile.gpu.compute_capability} ({sm}) is not in the matrix",
            )
        )
    elif version_tuple(stack.cuda) < version_tuple(minimum):
        problems.append(
            Violation(
                "cuda_min_for_arch",
                f"{profile.gpu.name} is {sm}, which needs CUDA >= {minimum}; the stack has CUDA {stack.cuda}. "
                "Use a CUDA >= "
                + str(minimum)
                + " stack (for sm_120: torch >= 2.7 with cu128, as in the 5090 profile)",
            )
        )
    build: TorchBuild | None = matrix.torch_build(stack.torch)
    arches = build.arches.get(stack.torch_cuda) if build is not None else None
    if arches and not arch_runs_on_build(profile.gpu.sm, arches):
        problems.append(
            Violation(
                "torch_arch",
                f"torch {stack.torch}+{stack.torch_cuda} ships kernels for {', '.join(arches)}, none of which runs on {sm} "
                f"({profile.gpu.name}); use a torch build that lists {sm} (torch >= 2.7 with cu128 for sm_120)",
            )
        )
    return problems


def check_arch_features(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    """A card without bf16 (Volta, Turing) cannot run the workflow's bf16 text encoder and VAE."""
    sm = _sm(profile)
    row = next((r for r in matrix.arch_features if r.arch == sm), None)
    if row is None or row.bf16:
        return []
    return [Violation("arch_bf16", missing_bf16_reason(profile.gpu.compute_capability, profile.gpu.name))]


def flash_attn_kernel_arches(profile: Profile, row: FlashAttnRelease) -> list[str]:
    """The release wheel's arches, plus what a source build with a new enough CUDA compiles."""
    arches = list(row.arches)
    extra = row.source_build_arches
    if (
        profile.features.flash_attn_source == "source"
        and extra is not None
        and version_tuple(profile.stack.cuda) >= version_tuple(extra.cuda_min)
    ):
        arches += [arch for arch in extra.arches if arch not in arches]
    return arches


def flash_attn_wheel_url(profile: Profile, matrix: CompatibilityMatrix | None = None) -> str | None:
    """The release wheel for this stack, or None when flash-attn must be compiled."""
    matrix = matrix or load_matrix()
    stack = profile.stack
    row = matrix.flash_attn_release(stack.flash_attn)
    if row is None:
        return None
    cuda_major = stack.cuda.split(".")[0]
    torch_minor = minor_of(stack.torch)
    if (
        cuda_major not in row.wheel_cuda_major
        or torch_minor not in row.wheel_torch
        or stack.python not in row.wheel_python
    ):
        return None
    py = stack.python.replace(".", "")
    return row.wheel_url.format(
        version=stack.flash_attn,
        cuda_major=cuda_major,
        torch_minor=torch_minor,
        abi="TRUE" if stack.cxx11_abi else "FALSE",
        py=py,
    )


def flash_attn_wheel_sha256(profile: Profile, matrix: CompatibilityMatrix | None = None) -> str | None:
    """The pinned sha256 of the profile's flash-attn release wheel, or None when the matrix has none."""
    matrix = matrix or load_matrix()
    url = flash_attn_wheel_url(profile, matrix)
    row = matrix.flash_attn_release(profile.stack.flash_attn)
    if url is None or row is None:
        return None
    return row.wheel_sha256.get(url.rsplit("/", 1)[-1]) or None


def flash_attn_compile_archs(
    version: str | None, matrix: CompatibilityMatrix | None = None
) -> dict[str, str]:
    """``FLASH_ATTN_CUDA_ARCHS`` values flash-attn ``version``'s setup.py compiles -> the CUDA each needs."""
    matrix = matrix or load_matrix()
    row = matrix.flash_attn_release(version)
    return dict(row.compile_archs) if row is not None else {}


def flash_attn_cuda_archs(profile: Profile, matrix: CompatibilityMatrix | None = None) -> str:
    """``FLASH_ATTN_CUDA_ARCHS`` for the profile's arch list: each arch's major as flash-attn names it
    (8.6/8.9 -> ``80``: sm_80 code runs on the whole major), kept when the pinned flash-attn compiles it
    with the stack's CUDA. Empty when none is left (``check_flash_attn`` reports that)."""
    if profile.stack.flash_attn is None:
        return ""
    return flash_attn_build_archs(
        profile.gpu.cuda_arch_list.split(";"), profile.stack.cuda, profile.stack.flash_attn, matrix
    )


def check_flash_attn(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    if not profile.features.flash_attn:
        return []
    stack = profile.stack
    row = matrix.flash_attn_release(stack.flash_attn)
    if row is None:
        return [
            Violation(
                "flash_attn",
                f"flash-attn {stack.flash_attn} is not in the matrix; known: "
                + ", ".join(r.version for r in matrix.flash_attn),
            )
        ]
    problems = []
    sm = _sm(profile)
    arches = flash_attn_kernel_arches(profile, row)
    if sm not in arches:
        extra = row.source_build_arches
        hint = (
            f" (a source build with CUDA >= {extra.cuda_min} adds {', '.join(extra.arches)})"
            if extra and sm in extra.arches
            else ""
        )
        problems.append(
            Violation(
                "flash_attn_arch",
                f"flash-attn {stack.flash_attn} has kernels for {', '.join(arches)} only, not {sm} "
                f"({profile.gpu.name}){hint}; set features.flash_attn: false and features.attention: sdpa",
            )
        )
    if profile.features.flash_attn_source == "wheel" and flash_attn_wheel_url(profile, matrix) is None:
        problems.append(
            Violation(
                "flash_attn_wheel",
                f"no flash-attn {stack.flash_attn} release wheel for CUDA {stack.cuda.split('.')[0]}, torch {minor_of(stack.torch)}, "
                f"Python {stack.python} (wheels: torch {', '.join(row.wheel_torch)}; Python {', '.join(row.wheel_python)}); "
                "set features.flash_attn_source: source to compile it in the builder stage",
            )
        )
    building = profile.features.flash_attn_source == "source" or flash_attn_wheel_url(profile, matrix) is None
    if not building and flash_attn_wheel_sha256(profile, matrix) is None:
        wheel = str(flash_attn_wheel_url(profile, matrix)).rsplit("/", 1)[-1]
        problems.append(
            Violation(
                "flash_attn_wheel_hash",
                f"no sha256 pinned for the flash-attn release wheel {wheel} (data/compatibility.yaml, "
                "flash_attn wheel_sha256), so its download could not be checked; add the release asset's "
                "sha256 there, or set features.flash_attn_source: source to compile it",
            )
        )
    if building and not flash_attn_cuda_archs(profile, matrix):
        known = flash_attn_compile_archs(stack.flash_attn, matrix)
        problems.append(
            Violation(
                "flash_attn_archs",
                f"gpu.cuda_arch_list {profile.gpu.cuda_arch_list} names no arch flash-attn {stack.flash_attn} "
                f"compiles with CUDA {stack.cuda} (its setup.py knows "
                + ", ".join(f"{arch} from CUDA {cuda}" for arch, cuda in known.items())
                + "); add one, or use the release wheel (features.flash_attn_source: wheel)",
            )
        )
    return problems


def check_xformers(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    if not profile.features.xformers:
        return []
    stack = profile.stack
    row = next((r for r in matrix.xformers if r.version == stack.xformers), None)
    if row is None:
        return [
            Violation(
                "xformers",
                f"xformers {stack.xformers} is not in the matrix; known: "
                + ", ".join(r.version for r in matrix.xformers),
            )
        ]
    if row.torch != stack.torch:
        return [
            Violation(
                "xformers",
                f"xformers {stack.xformers} requires torch=={row.torch} and would replace torch {stack.torch}; "
                "pick an xformers built for this torch or set features.xformers: false",
            )
        ]
    return []


def mmcv_build_method(profile: Profile, matrix: CompatibilityMatrix | None = None) -> str | None:
    """``wheel`` when OpenMMLab publishes one for this torch/CUDA, ``source`` when it must be compiled."""
    matrix = matrix or load_matrix()
    stack = profile.stack
    if stack.mmcv is None:
        return None
    for row in matrix.mmcv:
        wheels = row.wheels
        if (
            row.version == stack.mmcv
            and wheels
            and minor_of(stack.torch) in wheels.torch
            and stack.torch_cuda in wheels.cuda
        ):
            return "wheel"
    return "source"


def check_mmcv(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    if profile.features.pose_backend != "mmpose":
        return []
    stack = profile.stack
    assert stack.mmcv is not None  # the Profile validator guarantees the mm* pins for the mmpose backend
    problems = []
    if mmcv_build_method(profile, matrix) == "source":
        buildable = [
            row
            for row in matrix.mmcv
            if row.version == stack.mmcv and minor_of(stack.torch) in row.source_build_torch
        ]
        if not buildable:
            problems.append(
                Violation(
                    "mmcv",
                    f"mmcv {stack.mmcv} has no official wheel for torch {stack.torch}+{stack.torch_cuda} and is not known to "
                    f"compile against torch {minor_of(stack.torch)}; use torch 2.5.x (known to build) or pose_backend: onnx",
                )
            )
    for consumer in matrix.mmcv_consumers:
        pinned = getattr(stack, consumer.package)
        if pinned != consumer.version:
            continue
        low, below = consumer.mmcv_min, consumer.mmcv_below
        if not (version_tuple(low) <= version_tuple(stack.mmcv) < version_tuple(below)):
            problems.append(
                Violation(
                    "mmcv_consumers",
                    f"{consumer.package} {pinned} requires {low} <= mmcv < {below} at import; stack.mmcv is {stack.mmcv}",
                )
            )
    return problems


def check_onnxruntime(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    stack = profile.stack
    version = version_tuple(stack.onnxruntime_gpu)
    cuda_major = stack.cuda.split(".")[0]
    for row in matrix.onnxruntime_gpu:
        if version_tuple(row.from_) <= version < version_tuple(row.below):
            if row.cuda_major != cuda_major:
                return [
                    Violation(
                        "onnxruntime_gpu",
                        f"onnxruntime-gpu {stack.onnxruntime_gpu} is built for CUDA {row.cuda_major}, the image has CUDA "
                        f"{cuda_major}; {_onnxruntime_range(matrix, cuda_major)}",
                    )
                ]
            return []
    return [Violation("onnxruntime_gpu", f"onnxruntime-gpu {stack.onnxruntime_gpu} is not in the matrix")]


def _onnxruntime_range(matrix: CompatibilityMatrix, cuda_major: str) -> str:
    rows = [row for row in matrix.onnxruntime_gpu if row.cuda_major == cuda_major]
    if not rows:
        return f"no onnxruntime-gpu release in the matrix is built for CUDA {cuda_major}"
    row = rows[-1]
    return f"for CUDA {cuda_major} pin onnxruntime-gpu >= {row.from_}, < {row.below}"


def check_comfyui(profile: Profile, matrix: CompatibilityMatrix) -> list[Violation]:
    problems = []
    for row in matrix.comfyui:
        last = row.last_version_for_old_torch
        below = row.old_torch_below
        newer_comfy = version_tuple(profile.comfyui.version) > version_tuple(last)
        old_torch = version_tuple(profile.stack.torch) < version_tuple(below)
        if newer_comfy and old_torch:
            problems.append(
                Violation(
                    "comfyui_torch",
                    f"ComfyUI {profile.comfyui.version} needs torch >= {below} (comfy-kitchen); torch is {profile.stack.torch}. "
                    f"Pin ComfyUI {last} or move to torch >= {below}",
                )
            )
    return problems


CHECKS: tuple[Callable[[Profile, CompatibilityMatrix], list[Violation]], ...] = (
    check_python_torch,
    check_torch_cuda,
    check_companions,
    check_gpu_arch,
    check_arch_features,
    check_flash_attn,
    check_xformers,
    check_mmcv,
    check_onnxruntime,
    check_comfyui,
    check_runtime_base,
)


def check_profile(profile: Profile, matrix: CompatibilityMatrix | None = None) -> list[Violation]:
    """Every rule the profile breaks (empty when it is inside the matrix)."""
    matrix = matrix or load_matrix()
    return [violation for check in CHECKS for violation in check(profile, matrix)]


def ensure_compatible(profile: Profile) -> None:
    """Raise one ``CompatibilityError`` listing every broken rule."""
    violations = check_profile(profile)
    if violations:
        details = "".join(f"\n  - {v}" for v in violations)
        raise CompatibilityError(f"profile {profile.name} is outside the compatibility matrix:{details}")
