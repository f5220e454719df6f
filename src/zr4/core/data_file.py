"""One bundled YAML data file read into a frozen Pydantic model, or one line saying what is wrong.

``data/planner.yaml`` and ``data/compatibility.yaml`` are typed this way: a renamed or mistyped key
fails when the file is loaded, naming the file and the field, instead of surfacing as a ``KeyError``
in whichever check reads it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from zr4.errors import Zr4Error

Model = TypeVar("Model", bound=BaseModel)


class DataFileError(Zr4Error, ValueError):
    """A bundled data file is missing or malformed; the message names the file and the field."""


class DataModel(BaseModel):
    """Base of the data files' models: read-only once loaded, and no key the model does not know
    (a misspelt key would otherwise be ignored and its default used in silence)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def field_path(location: tuple[int | str, ...]) -> str:
    """Pydantic's error location as the YAML path a reader looks for: ``flash_attn[0].arches``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe(error: ValidationError, source: Path) -> str:
    """Every problem of ``error`` as ``file: field: message``, joined by ``; ``."""
    problems = []
    for problem in error.errors(include_url=False):
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "value_error":
            message = str((problem.get("ctx") or {}).get("error", message))
        problems.append(f"{source}: {field_path(tuple(problem['loc']))}: {message}")
    return "; ".join(problems)


def load_data_file(
    path: Path, model: type[Model], error: type[DataFileError] = DataFileError, context: object = None
) -> Model:
    """``path`` parsed as YAML and validated as ``model`` (``context`` reaches its validators)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as problem:
        raise error(f"cannot read {path}: {problem.strerror}") from None
    except yaml.YAMLError as problem:
        raise error(f"{path} is not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise error(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(document, context=context)
    except ValidationError as problem:
        raise error(describe(problem, path)) from None
