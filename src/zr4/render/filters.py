"""Jinja filters that make a value safe for the line it is rendered into.

Profile fields are already pattern-checked, but the filters are the last line of defence: a value
with a newline can never start a new Dockerfile instruction or shell command, because the filter
refuses it instead of escaping it.
"""

from __future__ import annotations

import json
import shlex
from typing import Any


class UnsafeValueError(ValueError):
    """A value cannot be rendered safely into its target syntax."""


def _single_line(value: Any, where: str) -> str:
    text = str(value)
    if any(char in text for char in "\n\r\x00"):
        raise UnsafeValueError(
            f"{where}: value {text[:40]!r} contains a newline or NUL and cannot be rendered"
        )
    return text


def docker_env_value(value: Any) -> str:
    """A double-quoted value for ``ENV``/``LABEL``/``ARG``: backslash, quote and ``$`` escaped."""
    text = _single_line(value, "Dockerfile value")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def shell_quote(value: Any) -> str:
    """A POSIX shell word that expands to exactly ``value``."""
    return shlex.quote(_single_line(value, "shell word"))


def yaml_string(value: Any) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(_single_line(value, "YAML value"))


def json_value(value: Any) -> str:
    """Any JSON-serialisable value, deterministically."""
    return json.dumps(value, sort_keys=True)


FILTERS = {
    "docker_env": docker_env_value,
    "sh": shell_quote,
    "yaml_str": yaml_string,
    "json": json_value,
}
