"""The resolved profile baked into the image: where it is and how it is read, in one place.

``$ZR4_PROFILE``, else ``/opt/zr4/profile.json`` (``image_layout.PROFILE_JSON``). The boot reads it
as plain JSON, without Pydantic (the start's checks, `zr4 tune`, the model settings, the sync's
profile name): Pydantic's import alone would cost a warm boot 0.1-0.2 s. `zr4 doctor` validates the
same data with the profile's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

from zr4.core import image_layout
from zr4.core.documents import MISSING, read_document
from zr4.core.env import env_str

PROFILE_VARIABLE = "ZR4_PROFILE"


def baked_profile_path(environ: Mapping[str, str]) -> Path:
    """``$ZR4_PROFILE`` when set and not empty, else the image's ``profile.json``."""
    return Path(env_str(PROFILE_VARIABLE, None, environ) or image_layout.PROFILE_JSON)


@overload
def read_baked_profile(
    path: Path, error: type[Exception], named: str | None = None, *, missing_ok: Literal[False] = False
) -> dict[str, Any]: ...


@overload
def read_baked_profile(
    path: Path, error: type[Exception], named: str | None = None, *, missing_ok: bool
) -> dict[str, Any] | None: ...


def read_baked_profile(
    path: Path, error: type[Exception], named: str | None = None, *, missing_ok: bool = False
) -> dict[str, Any] | None:
    """The profile at ``path`` as a JSON object, or ``error`` naming it (``named``, default "the
    baked profile PATH"). ``missing_ok``: None when there is no file (a developer machine has none)."""
    shown = named or f"the baked profile {path}"
    data = read_document(path, error, "json", shown, missing_ok=missing_ok)
    if data is MISSING:
        return None
    if not isinstance(data, dict):
        raise error(f"{shown} is not a JSON object")
    return data
