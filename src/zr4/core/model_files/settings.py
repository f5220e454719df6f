"""Model settings: the environment variables over the baked profile over defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zr4.core import image_layout
from zr4.core.baked_profile import PROFILE_VARIABLE, baked_profile_path, read_baked_profile
from zr4.core.env import EnvError, env_bool, env_str
from zr4.core.model_files.errors import SettingsError

# docs.runpod.io/pods/storage/types: /workspace is the persistent volume, so models live there and survive
# a pod stop; ComfyUI finds them through --extra-model-paths-config (see paths.extra_model_paths_yaml).
DEFAULT_MODELS_DIR = Path(image_layout.MODELS_DIR)
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
VARIANTS = ("fp16", "fp8", "gguf")


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides which model files one boot needs and where they go."""

    enable_steadydancer: bool = True
    variant: str = "gguf"
    gguf_level: str = "Q4_K_M"
    text_encoder: str = "bf16"
    # The ComfyUI workflow always uses the ONNX pose nodes; "mmpose" adds SteadyDancer's native
    # pre-processing weights (profile pose_backend: mmpose, or ENABLE_DWPOSE=true).
    pose_backends: frozenset[str] = frozenset({"onnx"})
    step_distill_lora: bool = True
    models_dir: Path = DEFAULT_MODELS_DIR
    hf_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    dry_run: bool = False
    strict: bool = False
    # Where each choice came from ("env STEADYDANCER_VARIANT", "profile", "default"), for `plan`.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)


def _profile_value(profile: Mapping[str, Any], section: str, key: str) -> Any:
    block = profile.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def settings_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
    strict: bool = False,
    models_dir: Path | None = None,
) -> ModelSettings:
    """Build settings from the env-var contract (docs/reference/environment.md) over the baked profile.

    ``profile`` is the resolved profile as a dict; when None it is read from ``$ZR4_PROFILE`` or
    ``/opt/zr4/profile.json`` if that file exists (a developer machine has none: defaults apply).
    """
    env = os.environ if environ is None else environ
    if profile is None:
        # A profile named in ZR4_PROFILE must be there; the image's own may be absent (a checkout).
        explicit = env_str(PROFILE_VARIABLE, None, env) is not None
        profile = read_baked_profile(baked_profile_path(env), SettingsError, missing_ok=not explicit)
    origins: dict[str, str] = {}
    if profile is None:
        # Say so, as `zr4 tune` does: the defaults differ from a baked profile's (pose onnx, not mmpose).
        origins["profile"] = f"none at {image_layout.PROFILE_JSON} (ZR4_PROFILE unset)"
        profile = {}

    def choose(name: str, env_name: str | None, section: str, key: str, default: Any) -> Any:
        if env_name is not None and env_str(env_name, None, env) is not None:
            origins[name] = f"env {env_name}"
            return env_str(env_name, None, env)
        value = _profile_value(profile, section, key)
        if value is not None:
            origins[name] = "profile"
            return value
        origins[name] = "default"
        return default

    try:
        enable = env_bool("ENABLE_STEADYDANCER", True, env)
        dry_run = env_bool("DRY_RUN", False, env)
        dwpose_raw = env_str("ENABLE_DWPOSE", None, env)
        dwpose = env_bool("ENABLE_DWPOSE", False, env) if dwpose_raw is not None else None
    except EnvError as error:
        raise SettingsError(str(error)) from error

    variant = str(choose("variant", "STEADYDANCER_VARIANT", "model", "variant", "gguf")).strip().lower()
    if variant not in VARIANTS:
        raise SettingsError(f"STEADYDANCER_VARIANT={variant!r} is not one of {', '.join(VARIANTS)}")
    gguf_level = str(choose("gguf_level", "STEADYDANCER_GGUF_MODEL", "model", "gguf_level", "Q4_K_M"))
    text_encoder = str(choose("text_encoder", None, "model", "text_encoder", "bf16")).lower()
    if text_encoder not in ("bf16", "fp8"):
        raise SettingsError(f"profile model.text_encoder={text_encoder!r} is not bf16 or fp8")
    lora = bool(choose("step_distill_lora", None, "model", "step_distill_lora", True))
    backend = str(choose("pose_backend", None, "features", "pose_backend", "onnx")).lower()
    backends = {"onnx"}
    if backend == "mmpose":
        backends.add("mmpose")
    if dwpose is not None:
        origins["pose_backend"] = "env ENABLE_DWPOSE"
        if dwpose:
            backends.add("mmpose")
        else:
            backends.discard("mmpose")
    if models_dir is not None:
        origins["models_dir"] = "command line"
        root = models_dir
    else:
        raw_dir = env_str("MODELS_DIR", None, env)
        origins["models_dir"] = "env MODELS_DIR" if raw_dir else "default"
        root = Path(raw_dir) if raw_dir else DEFAULT_MODELS_DIR
    return ModelSettings(
        enable_steadydancer=enable,
        variant=variant,
        gguf_level=gguf_level,
        text_encoder=text_encoder,
        pose_backends=frozenset(backends),
        step_distill_lora=lora,
        models_dir=root,
        hf_token=env_str("HF_TOKEN", None, env),
        hf_endpoint=(env_str("HF_ENDPOINT", DEFAULT_HF_ENDPOINT, env) or DEFAULT_HF_ENDPOINT).rstrip("/"),
        dry_run=dry_run,
        strict=strict,
        origins=origins,
    )
