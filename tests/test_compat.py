"""The compatibility matrix: every bundled profile passes; each rule catches what it is for."""

from __future__ import annotations

import pytest

from zr4.compat import (
    arch_runs_on_build,
    check_profile,
    cuda_flavor,
    ensure_compatible,
    flash_attn_wheel_url,
    load_matrix,
    mmcv_build_method,
    runtime_flavors,
)
from zr4.core.arch import flash_attn_build_archs
from zr4.errors import CompatibilityError
from zr4.profile import bundled_profile_names, load_profile
from zr4.render import render_files

CU124_IMAGES = [
    "stack.cuda=12.4.1",
    "stack.base_image_devel=nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04",
    "stack.base_image_runtime=nvidia/cuda:12.4.1-base-ubuntu22.04",
]
TORCH_251 = [
    "stack.torch=2.5.1",
    "stack.torch_cuda=cu124",
    "stack.torchvision=0.20.1",
    "stack.torchaudio=2.5.1",
    "stack.cxx11_abi=false",
]


def rules(profile_name: str, overrides: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for violation in check_profile(load_profile(profile_name, overrides)):
        found[violation.rule] = (found.get(violation.rule, "") + " | " + violation.message).strip(" |")
    return found


@pytest.mark.parametrize("name", bundled_profile_names())
def test_every_bundled_profile_is_inside_the_matrix(name: str) -> None:
    assert check_profile(load_profile(name)) == []


def test_5090_on_cu124_is_rejected_with_the_reason() -> None:
    broken = rules("5090", CU124_IMAGES + TORCH_251)
    assert "sm_120, which needs CUDA >= 12.8" in broken["cuda_min_for_arch"]
    assert "none of which runs on sm_120" in broken["torch_arch"]


def test_render_refuses_an_incompatible_profile() -> None:
    with pytest.raises(CompatibilityError, match=r"\[cuda_min_for_arch\]"):
        render_files(load_profile("5090", CU124_IMAGES + TORCH_251))


def test_python_outside_torch_wheels() -> None:
    assert "no wheels for Python 3.14" in rules("4080super", ["stack.python='3.14'"])["python_torch"]


def test_torch_251_has_cp313_wheels() -> None:
    # PyPI lists torch-2.5.1-cp313-cp313-manylinux1_x86_64.whl
    assert "python_torch" not in rules("4080super", ["stack.python='3.13'"])


def test_torch_cuda_build_must_match_images() -> None:
    broken = rules("4080super", ["stack.torch_cuda=cu121"])
    assert "is the cu124 build, not cu121" in broken["torch_cuda"]


def test_companion_versions() -> None:
    assert (
        "goes with torchvision 0.20.1, not 0.21.0"
        in rules("4080super", ["stack.torchvision=0.21.0"])["companions"]
    )


def test_flash_attn_rejects_turing() -> None:
    broken = rules("4080super", ["gpu.compute_capability='7.5'"])
    assert "not sm_75" in broken["flash_attn_arch"]


def test_flash_attn_wheel_exists_for_the_default_stack() -> None:
    url = flash_attn_wheel_url(load_profile("4080super"))
    assert url is not None and url.endswith(
        "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
    )


def test_flash_attn_without_wheel_needs_a_source_build() -> None:
    broken = rules("4080super", ["stack.python='3.12'", "stack.flash_attn=2.7.4.post1"])
    assert "flash_attn_wheel" not in broken  # 3.12 has a wheel
    no_wheel = rules(
        "5090", ["features.flash_attn=true", "stack.flash_attn=2.7.4.post1", "gpu.compute_capability='9.0'"]
    )
    assert "flash_attn_source: source" in no_wheel["flash_attn_wheel"]


def test_xformers_that_pins_another_torch() -> None:
    broken = rules("5090", ["features.xformers=true", "stack.xformers=0.0.28.post3"])
    assert "requires torch==2.5.1" in broken["xformers"]


def test_mmcv_22_breaks_mmdet() -> None:
    broken = rules("4080super", ["features.pose_backend=mmpose", "stack.mmcv=2.2.0"])
    assert "mmdet 3.3.0 requires 2.0.0rc4 <= mmcv < 2.2.0" in broken["mmcv_consumers"]


def test_mmcv_on_torch_25_is_a_source_build_and_on_torch_21_a_wheel() -> None:
    assert mmcv_build_method(load_profile("4080super")) == "source"
    assert (
        mmcv_build_method(load_profile("4080super", ["stack.torch=2.1.0", "stack.torch_cuda=cu121"]))
        == "wheel"
    )


def test_onnxruntime_cuda13_build_on_cuda12() -> None:
    message = rules("4080super", ["stack.onnxruntime_gpu=1.27.0"])["onnxruntime_gpu"]
    assert "built for CUDA 13" in message
    # 1.26.x is still a CUDA 12 build, 1.27.0 the first CUDA 13 one (the matrix rows)
    assert message.endswith("for CUDA 12 pin onnxruntime-gpu >= 1.19, < 1.27")


@pytest.mark.parametrize("cc", ["7.0", "7.5"])
def test_volta_and_turing_are_refused_for_bf16_not_as_unknown(cc: str) -> None:
    broken = rules("4080super", [f"gpu.compute_capability='{cc}'"])
    assert "cuda_min_for_arch" not in broken  # the matrix knows them
    assert "has no bf16 in hardware" in broken["arch_bf16"]
    assert "not sm_7" in broken["flash_attn_arch"]


def test_flash_attn_source_build_with_cuda_128_covers_blackwell() -> None:
    source = ["features.flash_attn=true", "stack.flash_attn=2.7.4.post1", "features.flash_attn_source=source"]
    assert "flash_attn_arch" not in rules("5090", source)
    wheel = rules("5090", ["features.flash_attn=true", "stack.flash_attn=2.7.4.post1"])
    assert "a source build with CUDA >= 12.8 adds sm_100, sm_120" in wheel["flash_attn_arch"]


def test_newer_comfyui_needs_newer_torch() -> None:
    assert "needs torch >= 2.7" in rules("4080super", ["comfyui.version=v0.8.0"])["comfyui_torch"]
    assert "comfyui_torch" not in rules("5090", ["comfyui.version=v0.8.0"])


def test_base_images_need_patch_version_and_right_flavour() -> None:
    broken = rules("4080super", ["stack.base_image_devel=nvidia/cuda:12.4-devel-ubuntu22.04"])
    assert "tag must start with 12.4.1-" in broken["base_image"]


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("nvidia/cuda:12.4.1-base-ubuntu22.04", True),
        ("nvidia/cuda:12.4.1-runtime-ubuntu22.04", True),
        ("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04", True),
        ("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04", False),
        ("nvidia/cuda:12.4.1-ubuntu22.04", False),
    ],
)
def test_the_runtime_base_is_a_cuda_flavor_without_compilers(image: str, allowed: bool) -> None:
    broken = rules("4080super", [f"stack.base_image_runtime={image}"])
    assert ("runtime_base" not in broken) is allowed, broken
    if not allowed:
        assert (
            "use nvidia/cuda:12.4.1-base-<os> (torch's nvidia-* wheels bring CUDA and cuDNN)"
            in (broken["runtime_base"])
        )


def test_the_bundled_profiles_take_the_base_flavor_the_matrix_names() -> None:
    """Torch's nvidia-* wheels bring CUDA and cuDNN: a runtime or cudnn-runtime base holds them twice."""
    needed = load_matrix().cuda_runtime_base.needed
    assert needed == "base" and runtime_flavors()[0] == "base"
    for name in bundled_profile_names():
        assert cuda_flavor(load_profile(name).stack.base_image_runtime) == needed, name
    assert cuda_flavor("nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04") == "cudnn-runtime"
    assert cuda_flavor("localhost:5000/nvidia/cuda:12.4.1-base-ubuntu24.04@sha256:" + "0" * 64) == "base"


@pytest.mark.parametrize(
    ("gpu_sm", "arches", "runs"),
    [(89, ["sm_80", "sm_86"], True), (120, ["sm_90"], False), (75, ["sm_80"], False), (90, ["sm_90"], True)],
)
def test_binary_compatibility_within_a_major(gpu_sm: int, arches: list[str], runs: bool) -> None:
    assert arch_runs_on_build(gpu_sm, arches) is runs


def test_a_profile_outside_the_matrix_gets_one_line_per_broken_rule() -> None:
    with pytest.raises(CompatibilityError) as caught:
        ensure_compatible(load_profile("4080super", ["gpu.compute_capability=12.0"]))
    lines = str(caught.value).splitlines()
    assert lines[0] == "profile 4080super is outside the compatibility matrix:"
    assert [line.split("]")[0] for line in lines[1:]] == [
        "  - [cuda_min_for_arch",
        "  - [torch_arch",
        "  - [flash_attn_arch",
    ]


@pytest.mark.parametrize(
    ("arches", "expected"),
    [(["8.9"], "80"), (["8.6", "9.0"], "80;90"), (["12.0"], "120"), (["10.0", "12.0+PTX"], "100;120")],
)
def test_flash_attn_build_archs_are_setup_py_families(arches: list[str], expected: str) -> None:
    # flash-attn's setup.py only looks for "80", "90", "100" and "120" in FLASH_ATTN_CUDA_ARCHS:
    # "89" would compile no kernels at all.
    assert flash_attn_build_archs(arches) == expected
