"""Where zr4's bundled data lives.

A wheel carries profiles/templates/data under ``zr4/_data``; an editable install or a plain
checkout reads them from the repository root. Both cases resolve here so no other module
guesses paths.
"""

from __future__ import annotations

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
