"""Reading a YAML or JSON file as data, a failure being one line in the caller's own error class.

The model manifest, ComfyUI's flag tables, the node definitions and the baked profile are read
this way, so "cannot read X: reason" and "X is not valid YAML: where" read the same everywhere
and the caller's error family (``ManifestError``, ``FlagDataError`` ...) is what the CLI catches.
zr4's own state files, which a failure only makes it rebuild, go through :func:`read_json_object`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

Format = Literal["yaml", "json"]


class _Missing:
    """What :func:`read_document` returns for an absent file when told that may be."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def read_document(
    path: Path,
    error: type[Exception],
    format: Format,
    named: str | None = None,
    *,
    missing_ok: bool = False,
) -> Any:
    """The parsed content of ``path`` (UTF-8), or ``error`` with a one-line message.

    ``named`` is how the messages call the file (default: its path). With ``missing_ok`` a file
    that does not exist gives :data:`MISSING`. PyYAML is imported only for YAML: the boot reads its
    profile as JSON.
    """
    shown = named or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as caught:
        if missing_ok and isinstance(caught, FileNotFoundError):
            return MISSING
        raise error(f"cannot read {shown}: {caught.strerror or caught}") from None
    except UnicodeDecodeError as caught:
        raise error(f"{shown} is not valid {format.upper()}: {caught}") from None
    if format == "json":
        try:
            return json.loads(text)
        except ValueError as caught:
            raise error(f"{shown} is not valid JSON: {caught}") from None
    import yaml

    # libyaml's safe loader where the PyYAML wheel has it: the same documents as yaml.safe_load, several
    # times faster on the planner's and the manifest's files, which every boot reads.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as caught:
        raise error(f"{shown} is not valid YAML: {caught}") from None


def read_yaml_mapping(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The YAML mapping in ``path``; ``error`` says in one line why there is none."""
    document = read_document(path, error, "yaml")
    if not isinstance(document, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return document


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file zr4 keeps for itself (a download's sidecar, the models' journal, the
    sync heartbeat), or None when it is missing, unreadable, not JSON or not an object: such a
    file is rewritten, never reported."""
    try:
        data = read_document(path, ValueError, "json")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
