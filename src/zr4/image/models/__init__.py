"""The model manager: which files a boot needs, fetched resumably, verified, and checked warm.

The start sequence calls::

    from zr4.image.models import ensure_models, settings_from_env
    result = ensure_models(settings_from_env())   # raises a ModelsError (a Zr4Error) on failure
    result.models_root, result.variant, result.diffusion_model

Importable without Jinja2 or Typer; huggingface_hub is imported only when the network is needed.
"""

from __future__ import annotations

from zr4.core.model_files.errors import (
    DiskSpaceError,
    GgufLevelError,
    HubAuthError,
    HubNotFoundError,
    IntegrityError,
    ManifestError,
    ModelsError,
    NetworkError,
    SettingsError,
)
from zr4.core.model_files.manifest import Manifest, ManifestEntry, default_manifest_path, load_manifest
from zr4.core.model_files.settings import ModelSettings, settings_from_env
from zr4.image.models.download import DownloadOptions
from zr4.image.models.ensure import (
    EnsureResult,
    ModelPlan,
    PlannedFile,
    describe_plan,
    ensure_models,
    plan_models,
)
from zr4.image.models.layout import comfyui_models_root, extra_model_paths_yaml, model_folders
from zr4.image.models.progress import Progress

__all__ = [
    "DiskSpaceError",
    "DownloadOptions",
    "EnsureResult",
    "GgufLevelError",
    "HubAuthError",
    "HubNotFoundError",
    "IntegrityError",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "ModelPlan",
    "ModelSettings",
    "ModelsError",
    "NetworkError",
    "PlannedFile",
    "Progress",
    "SettingsError",
    "comfyui_models_root",
    "default_manifest_path",
    "describe_plan",
    "ensure_models",
    "extra_model_paths_yaml",
    "load_manifest",
    "model_folders",
    "plan_models",
    "settings_from_env",
]
