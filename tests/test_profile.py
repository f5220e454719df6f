"""Profiles: bundled ones load, bad ones fail with the file and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from zr4.errors import ProfileError
from zr4.profile import bundled_profile_names, load_profile
from zr4.profile.schema import profile_json_schema, schema_path

REQUIRED_PROFILES = {"4080super", "4090", "3090", "a100-80g", "h100", "5090"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_profiles_cover_the_required_gpus() -> None:
    assert set(bundled_profile_names()) >= REQUIRED_PROFILES
    assert "base" not in bundled_profile_names()


@pytest.mark.parametrize("name", sorted(REQUIRED_PROFILES))
def test_bundled_profile_resolves_with_its_own_name(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.comfyui.commit == "f59f71cf34067d46713f6243312f7f0b360d061f"


def test_default_profile_is_the_torch_2_5_1_stack() -> None:
    profile = load_profile("4080super")
    assert (profile.gpu.vram_gib, profile.gpu.compute_capability) == (16, "8.9")
    assert (profile.stack.torch, profile.stack.torch_cuda, profile.stack.python) == ("2.5.1", "cu124", "3.11")
    assert (profile.stack.flash_attn, profile.stack.mmcv, profile.stack.mmpose) == (
        "2.7.4.post1",
        "2.1.0",
        "1.3.2",
    )
    assert (profile.model.variant, profile.model.gguf_level) == ("gguf", "Q4_K_M")
    assert profile.features.pose_backend == "mmpose"


def test_5090_uses_the_newer_stack() -> None:
    profile = load_profile("5090")
    assert profile.gpu.compute_capability == "12.0"
    assert profile.stack.torch == "2.9.1" and profile.stack.cuda.startswith("12.8")


def test_user_profile_extends_a_bundled_one(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 4080super\nmodel:\n  gguf_level: q5_k_m\n")
    profile = load_profile(str(path))
    assert profile.name == "mine"
    assert profile.model.gguf_level == "Q5_K_M"
    assert profile.gpu.vram_gib == 16  # inherited


def test_set_overrides_a_nested_field() -> None:
    profile = load_profile("4080super", ["model.gguf_level=Q6_K", "gpu.vram_gib=20"])
    assert profile.model.gguf_level == "Q6_K"
    assert profile.gpu.vram_gib == 20


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["gpu.vram_gib=-3"], "gpu.vram_gib: Input should be greater than 0"),
        (["gpu.vram_gb=16"], "gpu.vram_gb: unknown key"),
        (["model.variant=int4"], "model.variant: Input should be 'fp16', 'fp8' or 'gguf'"),
        (["model.gguf_level=Q9_K"], "model.gguf_level: Value error, 'Q9_K' is not a GGUF level"),
        (["workload.frames=80"], "workload.frames: Value error, frames must be 4n+1"),
        (["comfyui.commit=main"], "comfyui.commit: String should match pattern"),
        (["features.pose_backend=mmpose", "stack.mmcv=null"], "stack.mmcv"),
    ],
)
def test_bad_values_name_the_field_path(overrides: list[str], expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("4080super", overrides)
    assert expected in str(caught.value)
    assert "4080super.yaml" in str(caught.value)


def test_unknown_top_level_key_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.yaml", "extends: base\ngpus:\n  vram_gib: 16\n")
    with pytest.raises(ProfileError, match=r"typo\.yaml: gpus: unknown key"):
        load_profile(str(path))


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", "extends: base\nmodel:\n  variant: fp8\nmodel:\n  variant: gguf\n")
    with pytest.raises(ProfileError, match="duplicate key 'model'"):
        load_profile(str(path))


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(str(tmp_path / "a.yaml"))


def test_unknown_bundled_name_lists_the_choices() -> None:
    with pytest.raises(ProfileError, match="bundled profiles: 3090, 4080super"):
        load_profile("rtx9090")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(str(path))


def test_committed_schema_matches_the_models() -> None:
    assert schema_path().read_text(encoding="utf-8") == profile_json_schema(), "run `zr4 schema` and commit"
