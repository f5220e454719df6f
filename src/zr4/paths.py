"""Where zr4's bundled data lives.

A wheel carries profiles/templates/data under ``zr4/_data``; an editable install or a plain
checkout reads them from the repository root. Both cases resolve here so no other module
guesses paths.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_WHEEL_DATA = _PACKAGE_DIR / "_data"
_CHECKOUT_ROOT = _PACKAGE_DIR.parent.parent


def _data_dir(name: str) -> Path:
    packaged = _WHEEL_DATA / name
    if packaged.is_dir():
        return packaged
    return _CHECKOUT_ROOT / name


def package_dir() -> Path:
    """The ``zr4`` package folder (its code; a wheel install also holds ``_data`` there)."""
    return _PACKAGE_DIR


def profiles_dir() -> Path:
    """Folder of the bundled ``*.yaml`` profiles."""
    return _data_dir("profiles")


def templates_dir() -> Path:
    """Folder of the Jinja2 templates that make a build context."""
    return _data_dir("templates")


def data_dir() -> Path:
    """Folder of data files: compatibility matrix, model manifest, locks, ComfyUI flag sets."""
    return _data_dir("data")


def hadolint_config() -> Path | None:
    """zr4's hadolint configuration (``.hadolint.yaml`` of the checkout, bundled in a wheel)."""
    for candidate in (_WHEEL_DATA / "hadolint.yaml", _CHECKOUT_ROOT / ".hadolint.yaml"):
        if candidate.is_file():
            return candidate
    return None


def source_root() -> Path | None:
    """The checkout zr4 runs from (has pyproject.toml), or None for a wheel install.

    ``zr4 lock`` resolves the stack locks only from a checkout.
    """
    if (_CHECKOUT_ROOT / "pyproject.toml").is_file() and (_CHECKOUT_ROOT / "src" / "zr4").is_dir():
        return _CHECKOUT_ROOT
    return None


def checkout_containing(start: Path) -> Path | None:
    """The zr4 checkout ``start`` lies in (a folder with zr4's pyproject.toml and ``src/zr4``), or None.

    ``pip install .`` (not editable) runs zr4 from site-packages, yet its user still works in the
    checkout: commands that default to the checkout's folders look for it from the working directory.
    """
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if not (pyproject.is_file() and (folder / "src" / "zr4").is_dir()):
            continue
        try:
            name = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if name == "zr4":
            return folder
    return None
