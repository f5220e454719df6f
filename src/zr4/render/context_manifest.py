"""``.zr4-context``: the list of files zr4 wrote into a build context, written with the context itself.

Why: a build context lives in a folder the user also uses (compose reads ``docker/.env`` from it, a
user keeps notes beside it). ``zr4 render`` must replace and remove only its own files there, so it
needs to know, on the next render, which files those are. The list is plain text, sorted, with no
timestamp: the same profile renders the same bytes, so ``render --check`` compares it like any file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MANIFEST_NAME = ".zr4-context"
FORMAT_LINE = "zr4-context 1"

_EXPLANATION = (
    "# The files zr4 wrote into this build context. `zr4 render` replaces and removes only these;\n"
    "# anything else in this folder (.env, your notes) is yours and stays untouched.\n"
    "# `artifact`: a build artifact (zr4's wheel and its hash), rendered every time, not committed.\n"
)


class ManifestError(ValueError):
    """The text is not a context manifest zr4 wrote (the message says which line and why)."""


@dataclass(frozen=True)
class ContextManifest:
    """What a context manifest says: the profile rendered, and each path zr4 wrote (artifact or not)."""

    profile: str
    files: tuple[str, ...]
    artifacts: tuple[str, ...]

    @property
    def paths(self) -> frozenset[str]:
        """Every path zr4 wrote, the manifest itself included (zr4 replaces it on the next render)."""
        return frozenset((*self.files, *self.artifacts, MANIFEST_NAME))


def format_manifest(header: str, profile: str, entries: Iterable[tuple[str, bool]]) -> bytes:
    """The manifest for ``entries`` (path, is-artifact), sorted by path; ``header`` is the generated line."""
    lines = [header, _EXPLANATION.rstrip("\n"), FORMAT_LINE, f"profile {profile}"]
    for path, artifact in sorted(entries):
        lines.append(f"{'artifact' if artifact else 'file'} {path}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def safe_relative_path(path: str) -> bool:
    """A plain path inside the context: relative, no ``..``/``.``/empty parts, no backslash or NUL."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def parse_manifest(text: str) -> ContextManifest:
    """Read a manifest; anything else (a hand-made file, a path leaving the folder) is a ManifestError."""
    profile: str | None = None
    files: list[str] = []
    artifacts: list[str] = []
    seen_format = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not seen_format:
            if line != FORMAT_LINE:
                raise ManifestError(f"line {number}: expected `{FORMAT_LINE}`")
            seen_format = True
            continue
        kind, _, value = line.partition(" ")
        if kind == "profile" and value and profile is None:
            profile = value
        elif kind in ("file", "artifact") and safe_relative_path(value) and value != MANIFEST_NAME:
            (artifacts if kind == "artifact" else files).append(value)
        else:
            raise ManifestError(f"line {number}: `{line}` is not a profile, file or artifact entry")
    if not seen_format or profile is None:
        raise ManifestError(f"no `{FORMAT_LINE}` and `profile` lines")
    return ContextManifest(profile, tuple(files), tuple(artifacts))
