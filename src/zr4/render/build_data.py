"""``data/build.yaml`` as typed, frozen data: what the Dockerfile installs besides the locks.

The pins live in the data file with their sources, beside the compatibility matrix and the locks;
the renderer reads them here and hands them to the templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from zr4.core.data_file import DataFileError, load_data_file
from zr4.errors import CompatibilityError
from zr4.paths import data_dir


class BuildDataError(DataFileError):
    """``build.yaml`` is missing or malformed."""


@dataclass(frozen=True)
class BuildData:
    # uv version -> Python minor -> the CPython patch release that uv installs.
    managed_python: dict[str, dict[str, str]]
    build_tool_pins: tuple[str, ...]
    runtime_apt: tuple[str, ...]
    builder_apt: tuple[str, ...]

    def managed_python_for(self, uv: str, python: str) -> str:
        """The pinned CPython patch version for uv ``uv`` and Python minor ``python``."""
        version = self.managed_python.get(uv, {}).get(python)
        if version is None:
            known = sorted(
                (uv_version, minor) for uv_version, minors in self.managed_python.items() for minor in minors
            )
            raise CompatibilityError(
                f"no pinned CPython patch release for uv {uv} and Python {python}; "
                "known: " + ", ".join(f"uv {uv_version} Python {minor}" for uv_version, minor in known)
            )
        return version


def build_file() -> Path:
    return data_dir() / "build.yaml"


@cache
def load_build_data(path: Path | None = None) -> BuildData:
    """The bundled build pins (read once per process)."""
    return load_data_file(path or build_file(), BuildData, BuildDataError)
