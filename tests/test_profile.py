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
    # Pose through the workflow's ONNX nodes: nothing in the image runs mmpose, so no mmcv is compiled.
    assert profile.features.pose_backend == "onnx"


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
        (["model.gguf_level=Q9_K"], "model.gguf_level: 'Q9_K' is not a GGUF level"),
        (["workload.frames=80"], "workload.frames: frames must be 4n+1"),
        (["comfyui.commit=main"], "comfyui.commit: use a full git commit hash: 40 characters 0-9 and a-f"),
        (["features.pose_backend=mmpose", "stack.mmcv=null"], "stack.mmcv"),
    ],
)
def test_bad_values_name_the_field_path(overrides: list[str], expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("4080super", overrides)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "override", ["gpu.vram_gib=-3", "model.gguf_level=Q9_K", "comfyui.commit=main", "workload=3"]
)
def test_a_bad_set_value_blames_the_set_not_the_file(override: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("4080super", [override])
    assert str(caught.value).startswith(f"--set {override}: ")
    assert "4080super.yaml" not in str(caught.value)


def test_a_rule_across_fields_names_the_file_and_the_sets() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("4080super", ["features.pose_backend=mmpose", "stack.mmcv=null"])
    assert "4080super.yaml with --set features.pose_backend=mmpose --set stack.mmcv=null: " in str(
        caught.value
    )


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 4080super\nworkload:\n  frames: 80\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path), ["model.gguf_level=Q6_K"])
    assert str(caught.value).startswith(f"{path} with --set model.gguf_level=Q6_K: workload.frames: ")


@pytest.mark.parametrize("level", ["q5", "Q5", "q5_k_m", "Q5_K_M", " q5_K_m "])
def test_a_level_is_read_the_same_in_a_profile_set_and_the_environment(level: str) -> None:
    from zr4.core.planner import load_facts
    from zr4.core.tune import normalise_gguf_level

    assert load_profile("4080super", [f"model.gguf_level={level}"]).model.gguf_level == "Q5_K_M"
    assert normalise_gguf_level(level, load_facts().gguf_levels) == "Q5_K_M"


def test_short_level_spellings_match_the_model_manifest() -> None:
    from zr4.core.gguf_level import SHORT_FORMS
    from zr4.core.model_files.manifest import load_manifest

    assert {k.upper(): v for k, v in load_manifest().gguf_aliases.items()} == SHORT_FORMS


def test_extends_a_bundled_profile_named_by_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 5090\nname: mine\n")  # YAML reads 5090 as an int
    profile = load_profile(str(path))
    assert (profile.name, profile.gpu.compute_capability) == ("mine", "12.0")


def test_unquoted_versions_keep_the_text_as_written(tmp_path: Path) -> None:
    # YAML reads 3.10 as the float 3.1; a profile means the version "3.10"
    text = "extends: 4080super\nstack:\n  python: 3.10\ngpu:\n  vram_gib: 16.5\n"
    path = write(tmp_path, "mine.yaml", text)
    profile = load_profile(str(path))
    assert (profile.stack.python, profile.gpu.vram_gib) == ("3.10", 16.5)
    assert load_profile("4080super", ["stack.python=3.10"]).stack.python == "3.10"
    assert load_profile("4080super", ["gpu.compute_capability=12.0"]).gpu.compute_capability == "12.0"


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


def test_an_unknown_parent_names_the_file_that_extends_it(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 4080duper\nname: mine\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert str(caught.value).startswith(f"{path}: extends: no bundled profile named '4080duper'; ")


def test_a_folder_given_as_the_profile_is_called_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(str(tmp_path))
    assert str(caught.value) == f"profile {tmp_path} is a folder: name a profile's .yaml file in it"
    (tmp_path / "my-profiles").mkdir()
    monkeypatch.chdir(tmp_path)  # `--profile my-profiles`: a bare name that is a folder here
    with pytest.raises(ProfileError) as caught:
        load_profile("my-profiles")
    assert str(caught.value) == "profile my-profiles is a folder: name a profile's .yaml file in it"


def test_a_validator_message_shows_the_value_once(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 4080super\nworkload:\n  frames: 80\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    message = str(caught.value)
    assert message.endswith(
        "workload.frames: frames must be 4n+1 (Wan's VAE packs 4 frames per latent), got 80"
    )
    assert "Value error" not in message


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ('description: "tab\\there"\n', "description: use one line of text without control characters"),
        ("image:\n  name: Bad Name!\n", "image.name: use a Docker image name such as ghcr.io/me/zr4"),
    ],
)
def test_a_pattern_mismatch_says_in_words_what_is_allowed(tmp_path: Path, yaml_text: str, words: str) -> None:
    path = write(tmp_path, "mine.yaml", "extends: 4080super\n" + yaml_text)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    message = str(caught.value).removeprefix(f"{path}: ")
    assert message.startswith(words)
    assert "should match pattern" not in message and "^" not in message


def test_every_pattern_of_the_schema_has_words() -> None:
    """No regular expression reaches the user: each one the profile uses is described in words."""
    import json

    from zr4.profile.models import PATTERN_WORDS

    def patterns(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return found + [p for value in node.values() for p in patterns(value)]
        if isinstance(node, list):
            return [p for value in node for p in patterns(value)]
        return []

    used = set(patterns(json.loads(profile_json_schema())))
    assert len(used) > 10
    assert used - set(PATTERN_WORDS) == set()


def test_unknown_bundled_name_lists_the_choices() -> None:
    with pytest.raises(ProfileError, match="bundled profiles: 3090, 4080super"):
        load_profile("rtx9090")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(str(path))


def test_committed_schema_matches_the_models() -> None:
    assert schema_path().read_text(encoding="utf-8") == profile_json_schema(), "run `zr4 schema` and commit"
