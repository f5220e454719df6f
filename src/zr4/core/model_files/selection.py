"""Pure decisions: which manifest entries a boot needs, GGUF level spelling and file picking."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from zr4.core.model_files.errors import SettingsError
from zr4.core.model_files.manifest import Manifest, ManifestEntry
from zr4.core.model_files.settings import ModelSettings

# GGUF quantisation tokens as llama.cpp/gguf name them (Q4_K_M, Q5_0, Q8_0, F16, BF16 ...),
# delimited by anything that is not a letter or digit (so "fp16" in "SteadyDancer_fp16" is not F16).
_LEVEL_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(Q[2-8]_K(?:_[SML])?|Q[4-8]_[01]|IQ[1-4]_[A-Z]+|BF16|F16|F32)(?![A-Za-z0-9])", re.I
)


@dataclass(frozen=True)
class FileTarget:
    """One concrete file to have on disk: where it goes, where it comes from, what it must hash to."""

    entry_id: str
    role: str
    folder: str
    filename: str
    repo: str | None
    revision: str
    path: str | None
    url: str | None
    size: int | None
    sha256: str | None
    sha256_prefix: str | None = None
    size_estimate: int | None = None

    @property
    def rel(self) -> str:
        """Path below the models root, e.g. ``diffusion_models/x.gguf``."""
        return f"{self.folder}/{self.filename}"

    @property
    def source(self) -> str:
        return self.url or f"{self.repo}@{self.revision}:{self.path}"

    @property
    def expected_size(self) -> int | None:
        return self.size if self.size is not None else None


# The order in which a SteadyDancer job first opens each kind of file, so a boot fetches them in
# that order: ComfyUI v0.7.0 ran zr4's workflow as VAE loader (node 7), text encoder (9), model
# loader (2) and LoRA (5), the driving video, then CLIP vision (8)
# (bench/results/sampler/v2-q4km-16g.stats.jsonl, one line per executed node, on an H100); that run
# bypassed the pose nodes, whose loader (14) sits between the video and CLIP vision in the graph
# (zr4.core.workflow.build: the pose detection feeds the resized poses the CLIP encode of the first
# pose frame reads). A job still waits for every file, as ComfyUI checks every loader's file name
# when the prompt is queued; the order decides what is usable first.
FIRST_USE_ORDER = ("vae", "text_encoder", "steadydancer", "lora", "pose_detector", "pose", "clip_vision")


def first_use_rank(role: str) -> int:
    """Where a file of ``role`` comes in :data:`FIRST_USE_ORDER` (unknown roles last)."""
    return FIRST_USE_ORDER.index(role) if role in FIRST_USE_ORDER else len(FIRST_USE_ORDER)


def normalize_gguf_level(raw: str, manifest: Manifest) -> str:
    """``q4_k_m``/``Q4_K_M``/``q4`` -> ``Q4_K_M``; ``auto`` -> the manifest's default level."""
    value = raw.strip()
    if not value:
        raise SettingsError("STEADYDANCER_GGUF_MODEL is empty: use a level like q4_k_m")
    if value.lower() == "auto":
        return manifest.gguf_default_level
    if value.lower() in manifest.gguf_aliases:
        return manifest.gguf_aliases[value.lower()]
    upper = value.upper()
    if not _LEVEL_TOKEN.fullmatch(upper):
        known = ", ".join(sorted(manifest.gguf_aliases))
        raise SettingsError(
            f"STEADYDANCER_GGUF_MODEL={raw!r} is not a GGUF level: use e.g. q4_k_m, Q5_K_M, q8_0 or a short form ({known})"
        )
    return upper


def gguf_level_of(filename: str) -> str | None:
    """The quantisation level named in a GGUF file name, upper-cased, or None."""
    match = _LEVEL_TOKEN.search(posixpath.basename(filename))
    return match.group(1).upper() if match else None


def pick_gguf_file(listing: Iterable[str], level: str, avoid: Iterable[str] = ()) -> str | None:
    """The repository path of the ``.gguf`` file for ``level``; files naming an ``avoid`` word last."""
    avoid_words = [word.lower() for word in avoid]
    candidates = [path for path in listing if path.lower().endswith(".gguf") and gguf_level_of(path) == level]
    if not candidates:
        return None
    candidates.sort(key=lambda path: (any(word in path.lower() for word in avoid_words), len(path), path))
    return candidates[0]


def gguf_levels_in(listing: Iterable[str]) -> list[str]:
    """Levels the listing offers, for error messages."""
    return sorted(
        {level for path in listing if path.lower().endswith(".gguf") and (level := gguf_level_of(path))}
    )


def entry_applies(entry: ManifestEntry, settings: ModelSettings) -> bool:
    for key, wanted in entry.when.items():
        if key == "variant" and settings.variant != wanted:
            return False
        if key == "text_encoder" and settings.text_encoder != wanted:
            return False
        if key == "pose_backend" and wanted not in settings.pose_backends:
            return False
        if key == "step_distill_lora" and settings.step_distill_lora != bool(wanted):
            return False
    return True


def select_entries(manifest: Manifest, settings: ModelSettings) -> list[ManifestEntry]:
    """The manifest entries this boot needs, in manifest order (nothing if SteadyDancer is off)."""
    if not settings.enable_steadydancer:
        return []
    return [entry for entry in manifest.entries if entry_applies(entry, settings)]


def target_for(entry: ManifestEntry, *, path: str | None = None, level: str | None = None) -> FileTarget:
    """A FileTarget for a fixed entry, or for a ``pick`` entry once its file is chosen."""
    repo_path = path or entry.path
    filename = entry.filename or (posixpath.basename(repo_path) if repo_path else entry.dest_name)
    estimate = entry.size_estimate
    if level is not None:
        estimate = entry.size_estimates.get(level, estimate)
    return FileTarget(
        entry_id=entry.id,
        role=entry.role,
        folder=entry.folder,
        filename=filename,
        repo=entry.repo,
        revision=entry.revision,
        path=repo_path,
        url=entry.url,
        size=entry.size,
        sha256=entry.sha256,
        sha256_prefix=entry.sha256_prefix,
        size_estimate=estimate,
    )
