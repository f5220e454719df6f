"""data/build.yaml: the Dockerfile's CPython, build tools and apt packages, typed, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from zr4.errors import CompatibilityError
from zr4.profile import load_profile
from zr4.render.build_data import BuildDataError, load_build_data
from zr4.render.context import build_context_vars, managed_python


def test_the_templates_get_the_files_pins() -> None:
    data = load_build_data()
    context = build_context_vars(load_profile("4080super"))
    assert context["runtime_apt"] == data.runtime_apt and "tini" in data.runtime_apt
    assert context["build_tool_pins"] == data.build_tool_pins
    assert context["managed_python"] == data.managed_python["0.13.9"]["3.11"] == "3.11.18"


def test_an_unpinned_python_is_refused_naming_what_is_pinned() -> None:
    profile = load_profile("4080super", ["stack.uv=0.0.1"])
    with pytest.raises(CompatibilityError) as caught:
        managed_python(profile)
    assert str(caught.value) == (
        "no pinned CPython patch release for uv 0.0.1 and Python 3.11; known: uv 0.13.9 Python 3.10, "
        "uv 0.13.9 Python 3.11, uv 0.13.9 Python 3.12, uv 0.13.9 Python 3.13"
    )


def test_a_malformed_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "build.yaml"
    path.write_text(
        "managed_python: {'0.13.9': {'3.11': '3.11.18'}}\nbuild_tool_pins: []\nruntime_apt: tini\n",
        encoding="utf-8",
    )
    with pytest.raises(BuildDataError) as caught:
        load_build_data(path)
    assert str(caught.value) == f"{path}: runtime_apt: expected a list, got 'tini'"
    path.write_text("managed_python: {0.13.9: {3.11: 3.11.18}}\n", encoding="utf-8")
    with pytest.raises(BuildDataError) as caught:
        load_build_data(path)
    assert (
        str(caught.value)
        == f"{path}: managed_python.0.13.9.3.11: the key must be a string (quote it), got 3.11"
    )
