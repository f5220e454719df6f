"""Pure decisions of the model manager: settings, level spellings, GGUF picking, selection, preflight."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from zr4.core.model_files.manifest import parse_manifest
from zr4.core.model_files.selection import gguf_level_of, normalize_gguf_level, pick_gguf_file, select_entries
from zr4.image.models import (
    DiskSpaceError,
    ManifestError,
    ModelSettings,
    SettingsError,
    extra_model_paths_yaml,
    load_manifest,
    settings_from_env,
)
from zr4.image.models.preflight import check_disk

MANIFEST = load_manifest()
GGUF_LISTING = [
    "README.md",
    "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf",
    "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf",
    "Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf",
    "Wan21_I2V_SteadyDancer_fp16-Q8_0_fix_5d_tensor.gguf",
]


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("q4_k_m", "Q4_K_M"),
        ("Q4_K_M", "Q4_K_M"),
        ("q4", "Q4_K_M"),
        (" Q5_k_m ", "Q5_K_M"),
        ("q8", "Q8_0"),
        ("q2_k", "Q2_K"),
        ("q3", "Q3_K_M"),
        ("q6", "Q6_K"),
        ("auto", "Q4_K_M"),
        ("Q4_0", "Q4_0"),
    ],
)
def test_gguf_level_spellings(raw: str, level: str) -> None:
    assert normalize_gguf_level(raw, MANIFEST) == level


@pytest.mark.parametrize("raw", ["q4km", "fp8", "4", "Q9_K"])
def test_bad_gguf_level_says_what_to_use(raw: str) -> None:
    with pytest.raises(SettingsError, match="q4_k_m"):
        normalize_gguf_level(raw, MANIFEST)


def test_level_is_read_from_file_names_not_from_fp16_in_the_name() -> None:
    assert gguf_level_of("Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf") == "Q5_K_M"
    assert gguf_level_of("model-F16.gguf") == "F16"
    assert gguf_level_of("Wan21_I2V_SteadyDancer_fp16.safetensors") is None


def test_pick_prefers_the_fp16_quantisation_over_from_fp8() -> None:
    entry = MANIFEST.entry("steadydancer-gguf")
    assert (
        pick_gguf_file(GGUF_LISTING, "Q4_K_M", entry.avoid)
        == "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"
    )
    only_fp8 = [GGUF_LISTING[1]]
    assert pick_gguf_file(only_fp8, "Q4_K_M", entry.avoid) == GGUF_LISTING[1]
    assert pick_gguf_file(GGUF_LISTING, "Q3_K_M", entry.avoid) is None


def _ids(settings: ModelSettings) -> list[str]:
    return [entry.id for entry in select_entries(MANIFEST, settings)]


def test_default_selection_is_gguf_with_onnx_pose_and_lora() -> None:
    assert _ids(ModelSettings()) == [
        "steadydancer-gguf",
        "text-encoder-bf16",
        "clip-vision-h",
        "vae-bf16",
        "pose-yolov10m",
        "pose-vitpose-h-model",
        "pose-vitpose-h-data",
        "lightx2v-step-distill-lora",
    ]


def test_selection_follows_variant_encoder_pose_and_lora() -> None:
    settings = ModelSettings(
        variant="fp8",
        text_encoder="fp8",
        pose_backends=frozenset({"onnx", "mmpose"}),
        step_distill_lora=False,
    )
    ids = _ids(settings)
    assert ids[0] == "steadydancer-fp8"
    assert "text-encoder-fp8" in ids and "text-encoder-bf16" not in ids
    assert {"dwpose-ll-ucoco-384", "yolox-l", "pose-yolov10m"} <= set(ids)
    assert "lightx2v-step-distill-lora" not in ids
    assert _ids(ModelSettings(enable_steadydancer=False)) == []


def test_env_overrides_the_baked_profile(tmp_path: Path) -> None:
    profile = {
        "model": {"variant": "fp16", "gguf_level": "Q6_K", "text_encoder": "fp8", "step_distill_lora": False},
        "features": {"pose_backend": "mmpose"},
    }
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(json.dumps(profile))
    env = {
        "ZR4_PROFILE": str(profile_file),
        "STEADYDANCER_VARIANT": "gguf",
        "MODELS_DIR": str(tmp_path / "m"),
        "HF_TOKEN": "hf_x",
    }
    settings = settings_from_env(env)
    assert (settings.variant, settings.gguf_level, settings.text_encoder) == ("gguf", "Q6_K", "fp8")
    assert settings.pose_backends == {"onnx", "mmpose"} and settings.step_distill_lora is False
    assert settings.models_dir == tmp_path / "m" and settings.hf_token == "hf_x"
    assert (
        settings.origins["variant"] == "env STEADYDANCER_VARIANT"
        and settings.origins["gguf_level"] == "profile"
    )
    assert settings_from_env({**env, "ENABLE_DWPOSE": "false"}).pose_backends == {"onnx"}
    assert "hf_x" not in repr(settings)


def test_defaults_without_profile_and_variables() -> None:
    settings = settings_from_env(
        {"ZR4_PROFILE": "", "DRY_RUN": "true", "ENABLE_DWPOSE": "true", "STEADYDANCER_GGUF_MODEL": "q4_k_m"},
        profile={},
    )
    assert settings.variant == "gguf" and settings.dry_run and "mmpose" in settings.pose_backends
    with pytest.raises(SettingsError, match="STEADYDANCER_VARIANT"):
        settings_from_env({"STEADYDANCER_VARIANT": "int4"}, profile={})
    with pytest.raises(SettingsError, match="ENABLE_STEADYDANCER"):
        settings_from_env({"ENABLE_STEADYDANCER": "maybe"}, profile={})
    with pytest.raises(SettingsError, match=r"cannot read the baked profile /nonexistent/profile\.json"):
        settings_from_env({"ZR4_PROFILE": "/nonexistent/profile.json"})
    assert settings_from_env({"ZR4_PROFILE": ""}).variant == "gguf"


def test_bundled_manifest_entries_are_complete() -> None:
    for entry in MANIFEST.entries:
        assert entry.folder and (entry.url or entry.repo), entry.id
        if entry.pick is None:
            assert entry.dest_name and "/" not in entry.dest_name
    assert (
        MANIFEST.entry("steadydancer-fp8").size == 16_410_198_058
    )  # Kijai/WanVideo_comfy_fp8_scaled file listing
    assert MANIFEST.entry("dwpose-ll-ucoco-384").size == 406_878_486  # yzd-v/DWPose file listing
    assert MANIFEST.gguf_fallback == "steadydancer-fp8"


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    document = yaml.safe_load(Path(MANIFEST.source_path or "").read_text())
    document["files"].append(dict(document["files"][0]))
    with pytest.raises(ManifestError, match="duplicate"):
        parse_manifest(document)
    document["files"].pop()
    document["files"][0] = {**document["files"][0], "when": {"colour": "red"}}
    with pytest.raises(ManifestError, match="unknown `when`"):
        parse_manifest(document)


def test_disk_preflight_is_a_pure_decision(tmp_path: Path) -> None:
    check_disk(needed_bytes=10, free=10 + 2**30, where=tmp_path, margin_bytes=2**30)
    with pytest.raises(DiskSpaceError, match=str(tmp_path)) as caught:
        check_disk(needed_bytes=5 * 10**9, free=3 * 10**9, where=tmp_path, margin_bytes=10**9)
    assert "5.0 GB still to download" in str(caught.value) and "3.0 GB free" in str(caught.value)


def test_extra_model_paths_for_comfyui(tmp_path: Path) -> None:
    text = extra_model_paths_yaml(tmp_path)
    parsed = yaml.safe_load(text)
    assert parsed["zr4"]["base_path"] == str(tmp_path)
    assert (
        parsed["zr4"]["diffusion_models"] == "diffusion_models" and parsed["zr4"]["detection"] == "detection"
    )


def test_settings_are_frozen() -> None:
    settings = ModelSettings()
    assert replace(settings, variant="fp8").variant == "fp8"
