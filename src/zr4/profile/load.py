"""Reading profiles: YAML with ``extends:`` inheritance and ``--set a.b=value`` overrides.

Errors are ``ProfileError`` naming the file and the dotted field path, because the person who
reads them is editing a YAML file, not reading a Pydantic traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from zr4.errors import ProfileError
from zr4.paths import profiles_dir
from zr4.profile.models import PATTERN_WORDS, Profile

_MAX_EXTENDS_DEPTH = 8
_MAX_PROFILE_BYTES = 256 * 1024


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _construct_number_as_written(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> str:
    """A float keeps the text it was written as: `python: 3.10` means "3.10" (YAML's float is 3.1).

    Every version and compute capability in a profile is text, and the one number with a fraction
    (`gpu.vram_gib`) is read from text by the model, so no value needs YAML's float.
    """
    return str(loader.construct_scalar(node))


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _construct_number_as_written)


def bundled_profile_names() -> list[str]:
    """Names of the profiles shipped with zr4 (``base`` is a parent, not a target)."""
    return sorted(path.stem for path in profiles_dir().glob("*.yaml") if path.stem != "base")


def resolve_profile_path(ref: str, relative_to: Path | None = None) -> Path:
    """A bundled profile name, or a path (absolute, or relative to the file that extends it)."""
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    if looks_like_path:
        candidate = Path(ref).expanduser()
        if not candidate.is_absolute() and relative_to is not None:
            sibling = relative_to.parent / candidate
            candidate = sibling if sibling.exists() else candidate
        if candidate.is_dir():
            raise ProfileError(f"profile {ref} is a folder: name a profile's .yaml file in it")
        if not candidate.is_file():
            raise ProfileError(f"profile file {ref} does not exist")
        return candidate
    bundled = profiles_dir() / f"{ref}.yaml"
    if not bundled.is_file():
        if Path(ref).expanduser().is_dir():
            raise ProfileError(f"profile {ref} is a folder: name a profile's .yaml file in it")
        names = ", ".join(bundled_profile_names())
        raise ProfileError(
            f"no bundled profile named {ref!r}; bundled profiles: {names} (or pass a .yaml path)"
        )
    return bundled


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """One YAML document that must be a mapping."""
    size = path.stat().st_size
    if size > _MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: {size} bytes is too large for a profile (limit {_MAX_PROFILE_BYTES})")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from error
    except UnicodeDecodeError as error:
        raise ProfileError(f"{path}: not UTF-8 text") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ProfileError(f"{path}: a profile must be a mapping of keys, got {type(document).__name__}")
    return document


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_with_parents(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p.name) for p in (*chain, resolved))
        raise ProfileError(f"{path}: extends forms a cycle: {cycle}")
    if len(chain) >= _MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{path}: extends is nested deeper than {_MAX_EXTENDS_DEPTH} levels")
    document = read_yaml_mapping(path)
    parent_ref = document.pop("extends", None)
    if parent_ref is None:
        return document
    if isinstance(parent_ref, int | float) and not isinstance(parent_ref, bool):
        parent_ref = str(parent_ref)  # `extends: 5090` unquoted: YAML reads a number, the user meant the name
    if not isinstance(parent_ref, str) or not parent_ref.strip():
        raise ProfileError(f"{path}: extends: must be a profile name or a path")
    try:
        parent_path = resolve_profile_path(parent_ref.strip(), relative_to=path)
    except ProfileError as error:
        raise ProfileError(f"{path}: extends: {error}") from None
    parent = _load_with_parents(parent_path, (*chain, resolved))
    parent.pop("name", None)  # a profile's name is its own, never inherited
    return deep_merge(parent, document)


def apply_override(document: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``a.b=value``: the value is read as one YAML scalar or flow collection, like in a profile."""
    if "=" not in assignment:
        raise ProfileError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
    dotted, raw_value = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(key.strip() for key in keys):
        raise ProfileError(f"--set {assignment!r}: empty key in {dotted!r}")
    try:
        value = yaml.load(raw_value, Loader=_UniqueKeyLoader) if raw_value.strip() else ""
    except yaml.YAMLError as error:
        raise ProfileError(f"--set {dotted}: value is not valid YAML: {error}".replace("\n", " ")) from error
    patch: Any = value
    for key in reversed(keys):
        patch = {key: patch}
    return deep_merge(document, patch)


def _blamed_override(path: str, overrides: Sequence[str]) -> str | None:
    """The last ``--set`` that wrote ``path`` (or a field inside it, or the section holding it)."""
    for assignment in reversed(overrides):
        key = assignment.split("=", 1)[0].strip()
        if path == key or path.startswith(f"{key}.") or key.startswith(f"{path}."):
            return assignment
    return None


def format_validation_error(source: str, error: ValidationError, overrides: Sequence[str] = ()) -> str:
    """``file: gpu.vram_gib: Input should be greater than 0 (got -3)`` for each problem.

    A problem in a field a ``--set`` wrote names that ``--set``, not the file it was applied to.
    """
    lines = []
    if overrides:
        source += " with " + " ".join(f"--set {assignment}" for assignment in overrides)
    for problem in error.errors(include_url=False):
        path = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        blamed = _blamed_override(path, overrides)
        message = problem["msg"]
        context = problem.get("ctx") or {}
        if problem["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see profile.schema.json)"
        elif problem["type"] == "value_error":
            # A validator's own message, which shows the value where it helps; pydantic's
            # "Value error, " prefix says nothing to the reader.
            message = str(context.get("error", message))
        elif (
            "input" in problem
            and problem["type"] not in ("missing",)
            and not isinstance(problem["input"], dict)
        ):
            if problem["type"] == "string_pattern_mismatch" and context.get("pattern") in PATTERN_WORDS:
                message = f"use {PATTERN_WORDS[context['pattern']]}"
            shown = repr(problem["input"])
            message = f"{message} (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        lines.append(f"--set {blamed}: {path}: {message}" if blamed else f"{source}: {path}: {message}")
    return "; ".join(lines)


def load_profile(ref: str, overrides: Sequence[str] = ()) -> Profile:
    """The fully resolved, validated profile for a bundled name or a YAML path."""
    path = resolve_profile_path(ref)
    document = _load_with_parents(path, ())
    for assignment in overrides:
        document = apply_override(document, assignment)
    document.setdefault("name", path.stem)
    try:
        return Profile.model_validate(document)
    except ValidationError as error:
        raise ProfileError(format_validation_error(str(path), error, overrides)) from None
