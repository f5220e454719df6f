"""The model manifest (``data/models.yaml``) as plain, frozen data.

A manifest lists every file the workflow may need and a ``when`` rule saying for which
settings it is needed; :mod:`zr4.core.model_files.selection` turns settings into the list of
files for one boot.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zr4.core.documents import read_document
from zr4.core.model_files.errors import ManifestError
from zr4.paths import data_dir

_WHEN_KEYS = {"variant", "text_encoder", "pose_backend", "step_distill_lora"}


@dataclass(frozen=True)
class ManifestEntry:
    """One file (or, with ``pick``, one file chosen from a repository listing)."""

    id: str
    role: str
    folder: str
    when: dict[str, Any] = field(default_factory=dict)
    repo: str | None = None
    revision: str = "main"
    path: str | None = None
    url: str | None = None
    filename: str | None = None
    size: int | None = None
    size_estimate: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    pick: str | None = None
    avoid: tuple[str, ...] = ()
    size_estimates: dict[str, int] = field(default_factory=dict)

    @property
    def dest_name(self) -> str:
        """File name inside ``folder``."""
        if self.filename:
            return self.filename
        if self.path:
            return posixpath.basename(self.path)
        if self.url:
            return posixpath.basename(self.url.split("?", 1)[0])
        raise ManifestError(f"manifest entry {self.id!r} has no path, url or filename")

    @property
    def source(self) -> str:
        """Human-readable origin: ``repo@revision:path`` or the URL."""
        if self.url:
            return self.url
        return f"{self.repo}@{self.revision}:{self.path or '<picked by level>'}"


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    gguf_aliases: dict[str, str]
    gguf_default_level: str
    gguf_fallback: str | None
    source_path: Path | None = None

    def entry(self, entry_id: str) -> ManifestEntry:
        for candidate in self.entries:
            if candidate.id == entry_id:
                return candidate
        raise ManifestError(f"manifest {self.source_path} has no entry {entry_id!r}")


def default_manifest_path() -> Path:
    """The bundled manifest (``data/models.yaml`` in a checkout, ``zr4/_data/data`` in a wheel)."""
    return data_dir() / "models.yaml"


def _entry_from(raw: dict[str, Any], where: str) -> ManifestEntry:
    try:
        entry_id = str(raw["id"])
        when = dict(raw.get("when") or {})
        unknown = set(when) - _WHEN_KEYS
        if unknown:
            raise ManifestError(f"{where}: entry {entry_id!r} has unknown `when` keys {sorted(unknown)}")
        entry = ManifestEntry(
            id=entry_id,
            role=str(raw["role"]),
            folder=str(raw["folder"]),
            when=when,
            repo=raw.get("repo"),
            revision=str(raw.get("revision") or "main"),
            path=raw.get("path"),
            url=raw.get("url"),
            filename=raw.get("filename"),
            size=int(raw["size"]) if raw.get("size") is not None else None,
            size_estimate=int(raw["size_estimate"]) if raw.get("size_estimate") is not None else None,
            sha256=str(raw["sha256"]).lower() if raw.get("sha256") else None,
            sha256_prefix=str(raw["sha256_prefix"]).lower() if raw.get("sha256_prefix") else None,
            pick=raw.get("pick"),
            avoid=tuple(raw.get("avoid") or ()),
            size_estimates={str(k).upper(): int(v) for k, v in (raw.get("size_estimates") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{where}: malformed entry {raw!r}: {error}") from error
    if entry.url is None and (entry.repo is None or (entry.path is None and entry.pick is None)):
        raise ManifestError(f"{where}: entry {entry_id!r} needs `url`, or `repo` with `path` or `pick`")
    if entry.pick not in (None, "gguf_level"):
        raise ManifestError(f"{where}: entry {entry_id!r}: unknown pick {entry.pick!r}")
    return entry


def parse_manifest(document: dict[str, Any], source_path: Path | None = None) -> Manifest:
    where = str(source_path or "<manifest>")
    if not isinstance(document, dict) or document.get("version") != 1:
        raise ManifestError(f"{where}: not a zr4 model manifest (expected `version: 1`)")
    gguf = document.get("gguf") or {}
    entries = tuple(_entry_from(raw, where) for raw in document.get("files") or ())
    ids = [entry.id for entry in entries]
    duplicates = sorted({entry_id for entry_id in ids if ids.count(entry_id) > 1})
    if duplicates:
        raise ManifestError(f"{where}: duplicate entry ids {duplicates}")
    manifest = Manifest(
        entries=entries,
        gguf_aliases={str(k).lower(): str(v).upper() for k, v in (gguf.get("aliases") or {}).items()},
        gguf_default_level=str(gguf.get("default_level") or "Q4_K_M").upper(),
        gguf_fallback=gguf.get("fallback"),
        source_path=source_path,
    )
    if manifest.gguf_fallback is not None:
        manifest.entry(manifest.gguf_fallback)
    return manifest


def load_manifest(path: Path | str | None = None) -> Manifest:
    """Read and check a manifest file (default: the bundled one)."""
    manifest_path = Path(path) if path is not None else default_manifest_path()
    document = read_document(manifest_path, ManifestError, "yaml", f"model manifest {manifest_path}")
    return parse_manifest(document, manifest_path)
