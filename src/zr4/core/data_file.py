"""One bundled YAML data file read into frozen dataclasses, or one line saying what is wrong.

``data/planner.yaml``, ``data/compatibility.yaml`` and ``data/build.yaml`` are typed this way: a
renamed, misspelt or mistyped key fails when the file is loaded, naming the file and the field,
instead of surfacing as a ``KeyError`` in whichever check reads it first.

Plain dataclasses rather than Pydantic: the planner and the card facts run on every boot
(``zr4 start`` step 1, ``python -m zr4.core.tune``), which stays free of Pydantic's import (about
0.1 s) and works in a runtime without it. The checks are the few a data file needs: the types a
field declares (``str``, ``int``, ``float``, ``bool``, ``X | None``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``dict[str, X]``, a nested dataclass), required fields, and no unknown keys.

A model may define ``prepare(cls, data, context)`` (a classmethod: the mapping as written, before
its fields are read; ``context`` is what the loader was given) and ``__post_init__`` checks; a
``ValueError`` from either is reported at that model's place in the file. A field whose key in the
file is not a Python name (``from``) says so with ``field(metadata={"key": "from"})``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, Union

from zr4.core.documents import read_yaml_mapping
from zr4.errors import Zr4Error

Model = TypeVar("Model")


class DataFileError(Zr4Error, ValueError):
    """A bundled data file is missing or malformed; the message names the file and the field."""


class _Problem(Exception):
    def __init__(self, location: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


def field_path(location: tuple[int | str, ...]) -> str:
    """A place in the file as a reader looks for it: ``flash_attn[0].arches``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _scalar(kind: type, value: Any, location: tuple[int | str, ...]) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise _Problem(location, f"expected {_NAMES[kind]}, got {_shown(value)}")


def _convert(kind: Any, value: Any, location: tuple[int | str, ...], context: object) -> Any:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass(kind, value, location, context)
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        options = [option for option in arguments if option is not type(None)]
        if value is None and len(options) < len(arguments):
            return None
        if len(options) != 1:
            raise TypeError(f"data models support X | None unions only, not {kind}")
        return _convert(options[0], value, location, context)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Problem(location, f"expected a list, got {_shown(value)}")
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(
                _convert(arguments[0], item, (*location, i), context) for i, item in enumerate(value)
            )
        if len(value) != len(arguments):
            raise _Problem(location, f"expected a list of {len(arguments)}, got {_shown(value)}")
        return tuple(
            _convert(item_kind, item, (*location, i), context)
            for i, (item_kind, item) in enumerate(zip(arguments, value, strict=True))
        )
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Problem(location, f"expected a mapping, got {_shown(value)}")
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Problem(
                    (*location, str(key)), f"the key must be a string (quote it), got {_shown(key)}"
                )
            converted[key] = _convert(arguments[1], item, (*location, key), context)
        return converted
    if kind is Any:
        return value
    if kind in _NAMES:
        return _scalar(kind, value, location)
    raise TypeError(f"data models do not support fields of type {kind}")


@cache
def _hints(model: type) -> dict[str, Any]:
    return typing.get_type_hints(model)


def _dataclass(model: type, value: Any, location: tuple[int | str, ...], context: object) -> Any:
    if not isinstance(value, dict):
        raise _Problem(location, f"expected a mapping, got {_shown(value)}")
    prepare = getattr(model, "prepare", None)
    if prepare is not None:
        try:
            value = prepare(dict(value), context)
        except ValueError as error:
            raise _Problem(location, str(error)) from None
    hints = _hints(model)
    fields = {spec.metadata.get("key", spec.name): spec for spec in dataclasses.fields(model) if spec.init}
    for key in value:
        if key not in fields:
            raise _Problem((*location, str(key)), "unknown key")
    arguments = {}
    for key, spec in fields.items():
        if key in value:
            arguments[spec.name] = _convert(hints[spec.name], value[key], (*location, key), context)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise _Problem((*location, key), "required, but missing")
    try:
        return model(**arguments)
    except ValueError as error:
        raise _Problem(location, str(error)) from None


def parse_data(
    document: object, model: type[Model], source: Path, error: type[DataFileError], context: object = None
) -> Model:
    """``document`` (YAML already parsed) as ``model``; ``error`` names ``source`` and the field."""
    try:
        result: Model = _convert(model, document, (), context)
    except _Problem as problem:
        raise error(f"{source}: {field_path(problem.location)}: {problem.message}") from None
    return result


def load_data_file(
    path: Path, model: type[Model], error: type[DataFileError] = DataFileError, context: object = None
) -> Model:
    """``path`` parsed as YAML and read as ``model`` (``context`` reaches its ``prepare`` hooks)."""
    return parse_data(read_yaml_mapping(path, error), model, path, error, context)
