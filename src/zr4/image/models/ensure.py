"""Plan and fetch the models of one boot: warm check, metadata, preflight, parallel downloads.

``plan_models`` only reads (disk, journal, Hub metadata); ``ensure_models`` makes the plan true.
A boot whose files are all recorded as verified and unchanged touches neither the network nor
the file contents: it is a handful of ``stat`` calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from zr4.core.model_files.errors import GgufLevelError, ModelsError, NetworkError
from zr4.core.model_files.manifest import Manifest, ManifestEntry, load_manifest
from zr4.core.model_files.selection import (
    FileTarget,
    first_use_rank,
    gguf_levels_in,
    normalize_gguf_level,
    pick_gguf_file,
    select_entries,
    target_for,
)
from zr4.core.model_files.settings import ModelSettings
from zr4.core.sizes import human_bytes
from zr4.image.models.download import (
    DownloadOptions,
    Source,
    download,
    hash_file,
    resumable_bytes,
    storage_error,
)
from zr4.image.models.hub import HubClient, RemoteFile
from zr4.image.models.journal import Journal, state_dir
from zr4.image.models.locking import FileLock
from zr4.image.models.preflight import DEFAULT_MARGIN_BYTES, check_disk, free_bytes
from zr4.image.models.progress import Progress

VERIFIED = "verified"
PRESENT = "present"  # on disk but not (yet) recorded as verified: hashed before it is trusted
PARTIAL = "partial"
MISSING = "missing"

ClientFactory = Callable[[ModelSettings], HubClient]


@dataclass
class PlannedFile:
    target: FileTarget
    status: str
    have_bytes: int = 0
    commit: str | None = None
    url: str | None = None

    @property
    def size(self) -> int | None:
        return self.target.size

    @property
    def to_fetch(self) -> int | None:
        """Bytes still to download (None when the size is not known yet)."""
        if self.status == VERIFIED:
            return 0
        if self.target.size is None:
            return None
        if self.status == PRESENT:
            return 0
        return max(self.target.size - self.have_bytes, 0)


@dataclass
class ModelPlan:
    settings: ModelSettings
    models_root: Path
    variant: str
    gguf_level: str | None
    files: list[PlannedFile]
    warnings: list[str] = field(default_factory=list)
    free_bytes: int = 0
    offline_reason: str | None = None
    margin_bytes: int = DEFAULT_MARGIN_BYTES

    @property
    def bytes_to_fetch(self) -> int:
        """Known bytes still to download (files of unknown size count their estimate)."""
        total = 0
        for planned in self.files:
            if planned.to_fetch is not None:
                total += planned.to_fetch
            elif planned.status != VERIFIED:
                total += max((planned.target.size_estimate or 0) - planned.have_bytes, 0)
        return total

    @property
    def total_bytes(self) -> int:
        return sum(p.target.size or p.target.size_estimate or 0 for p in self.files)

    @property
    def complete(self) -> bool:
        return all(planned.status == VERIFIED for planned in self.files)

    @property
    def diffusion_model(self) -> str | None:
        """File name (inside ``diffusion_models/``) the workflow must load."""
        for planned in self.files:
            if planned.target.role == "steadydancer":
                return planned.target.filename
        return None


@dataclass
class EnsureResult:
    plan: ModelPlan
    fetched: list[str] = field(default_factory=list)
    fetched_bytes: int = 0
    adopted: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def models_root(self) -> Path:
        return self.plan.models_root

    @property
    def variant(self) -> str:
        return self.plan.variant

    @property
    def diffusion_model(self) -> str | None:
        return self.plan.diffusion_model

    @property
    def warnings(self) -> list[str]:
        return self.plan.warnings


def _default_client(settings: ModelSettings) -> HubClient:
    return HubClient(settings.hf_endpoint, settings.hf_token)


def _fallback_warning(level: str, entry: ManifestEntry, levels: list[str], fallback: ManifestEntry) -> str:
    have = ", ".join(levels) if levels else "no .gguf files"
    return (
        f"GGUF level {level} is not in {entry.repo}@{entry.revision} (it has: {have}); FALLING BACK to "
        f"{fallback.id} ({fallback.source}). Set STEADYDANCER_GGUF_MODEL to one of the levels it has, "
        "or use --strict to make this an error."
    )


class _Planner:
    def __init__(
        self,
        settings: ModelSettings,
        manifest: Manifest,
        client_factory: ClientFactory,
        tolerate_offline: bool = False,
    ) -> None:
        self.settings = settings
        self.tolerate_offline = tolerate_offline
        self.manifest = manifest
        self.root = settings.models_dir
        self.journal = Journal(self.root)
        self._client_factory = client_factory
        self._client: HubClient | None = None
        self.warnings: list[str] = []
        self.offline_reason: str | None = None
        self.choices_to_record: dict[str, str] = {}

    def client(self) -> HubClient:
        if self._client is None:
            client = self._client_factory(self.settings)
            client.check_reachable()
            self._client = client
        return self._client

    def _verified_offline(self, target: FileTarget) -> bool:
        return self.journal.is_verified(self.root, target.rel, target.source, target.sha256) is not None

    def resolve_gguf(self, entry: ManifestEntry) -> tuple[list[FileTarget], str, str | None]:
        level = normalize_gguf_level(self.settings.gguf_level, self.manifest)
        key = f"{entry.repo}@{entry.revision}#{level}"
        remembered = self.journal.choices.get(key)
        if remembered:
            target = target_for(entry, path=remembered, level=level)
            if self._verified_offline(target):
                return [target], "gguf", level
        assert entry.repo is not None
        try:
            listing = self.client().list_files(entry.repo, entry.revision)
        except NetworkError as error:
            if not self.tolerate_offline:
                raise NetworkError(f"{error} (needed to list the GGUF repository {entry.repo})") from error
            self.offline_reason = str(error)
            placeholder = target_for(
                entry, path=f"<{level} file picked from the repository listing>", level=level
            )
            return [placeholder], "gguf", level
        chosen = pick_gguf_file(listing, level, entry.avoid)
        if chosen is not None:
            self.choices_to_record[key] = chosen
            return [target_for(entry, path=chosen, level=level)], "gguf", level
        levels = gguf_levels_in(listing)
        if self.settings.strict or self.manifest.gguf_fallback is None:
            raise GgufLevelError(
                f"GGUF level {level} is not in {entry.repo}@{entry.revision} (it has: {', '.join(levels) or 'none'}); "
                "--strict forbids the fp8 fallback: set STEADYDANCER_GGUF_MODEL to an available level"
            )
        fallback = self.manifest.entry(self.manifest.gguf_fallback)
        self.warnings.append(_fallback_warning(level, entry, levels, fallback))
        return [target_for(fallback)], "fp8", None

    def targets(self) -> tuple[list[FileTarget], str, str | None]:
        targets: list[FileTarget] = []
        variant = self.settings.variant
        level: str | None = None
        for entry in select_entries(self.manifest, self.settings):
            if entry.pick == "gguf_level":
                picked, variant, level = self.resolve_gguf(entry)
                targets.extend(picked)
            else:
                targets.append(target_for(entry))
        seen: dict[str, FileTarget] = {}
        for target in targets:
            seen.setdefault(target.rel, target)
        return list(seen.values()), variant, level

    def metadata(self, targets: list[FileTarget]) -> list[PlannedFile]:
        planned: list[PlannedFile] = []
        need_hub: dict[tuple[str, str], list[int]] = {}
        for target in targets:
            record = self.journal.is_verified(self.root, target.rel, target.source, target.sha256)
            if record is not None:
                planned.append(
                    PlannedFile(
                        replace(target, size=record.size, sha256=record.sha256),
                        VERIFIED,
                        record.size,
                        record.commit,
                    )
                )
                continue
            planned.append(PlannedFile(target, MISSING))
            if target.repo is not None and not target.filename.startswith("<"):
                need_hub.setdefault((target.repo, target.revision), []).append(len(planned) - 1)
        for (repo, revision), indexes in need_hub.items():
            try:
                client = self.client()
                commit = client.commit_of(repo, revision)
                infos = client.paths_info(repo, commit, [planned[i].target.path or "" for i in indexes])
            except NetworkError as error:
                self.offline_reason = str(error)
                continue
            for i in indexes:
                target = planned[i].target
                info: RemoteFile | None = infos.get(target.path or "")
                if info is None:
                    from zr4.core.model_files.errors import HubNotFoundError

                    raise HubNotFoundError(
                        f"{target.path!r} not found in repository {repo!r} at revision {revision!r} "
                        f"(commit {commit}); the manifest entry {target.entry_id!r} needs updating"
                    )
                if target.size is not None and target.size != info.size:
                    raise ModelsError(
                        f"{target.source}: the Hub says {info.size} bytes, the manifest says {target.size}; "
                        "the upstream file changed: update data/models.yaml (size, sha256, revision)"
                    )
                if target.sha256 is not None and info.sha256 is not None and target.sha256 != info.sha256:
                    raise ModelsError(
                        f"{target.source}: the Hub's sha256 {info.sha256} differs from the manifest's {target.sha256}"
                    )
                planned[i].target = replace(target, size=info.size, sha256=target.sha256 or info.sha256)
                planned[i].commit = commit
                planned[i].url = self.client().file_url(repo, commit, target.path or "")
        for item in planned:
            if item.status == VERIFIED:
                continue
            dest = self.root / item.target.rel
            if dest.exists():
                item.status, item.have_bytes = PRESENT, dest.stat().st_size
                if item.target.size is not None and item.have_bytes != item.target.size:
                    item.status, item.have_bytes = MISSING, 0
            if item.status == MISSING:
                item.have_bytes = resumable_bytes(dest, source_for(item, {}))
                if item.have_bytes:
                    item.status = PARTIAL
        return planned


def source_for(item: PlannedFile, headers: dict[str, str]) -> Source:
    target = item.target
    return Source(
        url=item.url or target.url or "",
        headers=headers if target.repo is not None else {},
        size=target.size,
        sha256=target.sha256,
        sha256_prefix=target.sha256_prefix,
        identity=target.source,
        repo=target.repo,
        revision=target.revision,
        path=target.path,
    )


def plan_models(
    settings: ModelSettings,
    *,
    manifest: Manifest | None = None,
    client_factory: ClientFactory = _default_client,
) -> ModelPlan:
    """What one boot needs and what is missing; reads only (disk, journal, Hub metadata)."""
    planner = _Planner(settings, manifest or load_manifest(), client_factory, tolerate_offline=True)
    return _plan_with(planner)


def _plan_with(planner: _Planner) -> ModelPlan:
    settings = planner.settings
    targets, variant, level = planner.targets()
    files = planner.metadata(targets)
    return ModelPlan(
        settings=settings,
        models_root=planner.root,
        variant=variant,
        gguf_level=level,
        files=files,
        warnings=planner.warnings,
        free_bytes=free_bytes(planner.root),
        offline_reason=planner.offline_reason,
    )


def _lock_path(root: Path, rel: str) -> Path:
    return state_dir(root) / "locks" / (rel.replace("/", "__") + ".lock")


def ensure_models(
    settings: ModelSettings,
    *,
    manifest: Manifest | None = None,
    jobs: int = 3,
    options: DownloadOptions | None = None,
    progress: Progress | None = None,
    client_factory: ClientFactory = _default_client,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
    log: Callable[[str], None] | None = None,
    on_plan: Callable[[ModelPlan], None] | None = None,
) -> EnsureResult:
    """Make every model of this boot present and verified; the start sequence calls this.

    ``on_plan`` is told the plan (the files, their sizes, what is there) before anything is
    fetched: `zr4 start` writes the workflow from it while the download goes on. Files are fetched
    in the order a job first uses them (:data:`~zr4.core.model_files.selection.FIRST_USE_ORDER`).
    Raises a ``ModelsError`` subclass naming the file/repository on failure; files fetched
    before the failure stay (verified ones recorded, partial ones resumable).
    """
    started = time.monotonic()
    planner = _Planner(
        settings, manifest or load_manifest(), client_factory, tolerate_offline=settings.dry_run
    )
    plan = _plan_with(planner)
    say = log or (progress.message if progress is not None else (lambda _m: None))
    for warning in plan.warnings:
        say(f"WARNING: {warning}")
    result = EnsureResult(plan)
    if plan.complete or settings.dry_run:
        if on_plan is not None:
            on_plan(plan)
        result.elapsed_s = time.monotonic() - started
        return result
    pending = sorted(
        (p for p in plan.files if p.status != VERIFIED), key=lambda p: first_use_rank(p.target.role)
    )
    if plan.offline_reason is not None:
        names = ", ".join(p.target.rel for p in pending)
        raise NetworkError(f"{plan.offline_reason}. Missing: {names}")
    if on_plan is not None:
        on_plan(plan)
    check_disk(plan.bytes_to_fetch, plan.free_bytes, plan.models_root, margin_bytes)

    client = planner.client() if any(p.target.repo for p in pending) else None
    headers = client.headers() if client is not None else {}
    lock = threading.Lock()
    if progress is not None:
        progress.begin(
            plan.total_bytes,
            sum(p.target.size or 0 for p in plan.files if p.status == VERIFIED)
            + sum(p.have_bytes for p in pending),
        )

    def ensure_one(item: PlannedFile) -> None:
        try:
            fetch_one(item)
        except OSError as error:  # a read-only volume, a full disk: one line naming the path
            where = Path(error.filename) if error.filename else planner.root / item.target.rel
            raise storage_error(error, where, "write") from error

    def fetch_one(item: PlannedFile) -> None:
        target = item.target
        dest = planner.root / target.rel
        journal = Journal(planner.root)
        with FileLock(
            _lock_path(planner.root, target.rel),
            on_wait=lambda: say(f"waiting for {target.rel}: another process is fetching it"),
        ):
            journal.reload()
            if journal.is_verified(planner.root, target.rel, target.source, target.sha256):
                return
            if dest.exists() and (target.size is None or dest.stat().st_size == target.size):
                digest = hash_file(dest)
                prefix_ok = target.sha256_prefix is None or digest.startswith(target.sha256_prefix)
                if prefix_ok and (target.sha256 is None or digest == target.sha256):
                    journal.record(planner.root, target.rel, digest, target.source, item.commit)
                    with lock:
                        result.adopted.append(target.rel)
                    return
                say(f"{target.rel}: on disk but its sha256 does not match; downloading it again")
            if progress is not None:
                progress.file_started(
                    target.rel, target.size, resumable_bytes(dest, source_for(item, headers))
                )
            try:
                done = download(
                    source_for(item, headers),
                    dest,
                    options=options,
                    on_bytes=(lambda n: progress.advance(target.rel, n))
                    if progress is not None
                    else (lambda _n: None),
                    on_reset=(lambda n: progress.thrown_away(target.rel, n))
                    if progress is not None
                    else (lambda _n: None),
                    log=say,
                )
            finally:
                if progress is not None:
                    progress.file_finished(target.rel)
            journal.record(planner.root, target.rel, done.sha256, target.source, item.commit)
            with lock:
                result.fetched.append(target.rel)
                result.fetched_bytes += done.fetched_bytes

    errors: list[tuple[str, BaseException]] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="zr4-dl") as pool:
            futures = {pool.submit(ensure_one, item): item for item in pending}
            for future, item in futures.items():
                error = future.exception()
                if error is not None:
                    errors.append((item.target.rel, error))
    finally:
        if progress is not None:
            progress.close()
    if not errors:
        for key, value in planner.choices_to_record.items():
            planner.journal.remember_choice(key, value)
    result.elapsed_s = time.monotonic() - started
    if errors:
        _rel, first = errors[0]
        if not isinstance(first, ModelsError):
            raise first
        if len(errors) == 1:
            raise type(first)(str(first)) from first
        others = ", ".join(r for r, _ in errors[1:])
        raise type(first)(f"{first} (also failed: {others}; verified files are kept)") from first
    for planned in plan.files:
        planned.status = VERIFIED
    return result


def describe_plan(plan: ModelPlan) -> list[str]:
    """The plan as printable lines (used by ``zr4 models plan`` and the dry run)."""
    settings = plan.settings
    if not settings.enable_steadydancer:
        return ["[SteadyDancer] disabled (ENABLE_STEADYDANCER=false): no models needed"]
    origins = settings.origins
    level = f" {plan.gguf_level}" if plan.gguf_level else ""
    chosen_from = f"variant from {origins.get('variant', 'default')}"
    if plan.gguf_level:
        chosen_from += f", level from {origins.get('gguf_level', 'default')}"
    if plan.variant != settings.variant:
        chosen_from = f"FALLBACK: {settings.variant} {settings.gguf_level} is not available"
    lines = [
        f"[SteadyDancer] variant {plan.variant}{level} "
        f"({chosen_from}), text encoder {settings.text_encoder}, "
        f"pose {'+'.join(sorted(settings.pose_backends))}, step-distill LoRA {'on' if settings.step_distill_lora else 'off'}",
        f"[SteadyDancer] models folder {plan.models_root} ({origins.get('models_dir', 'default')})",
    ]
    if "profile" in origins:
        lines.append(
            f"[SteadyDancer] no resolved profile: {origins['profile']}; built-in defaults apply where no "
            "variable is set"
        )
    for planned in plan.files:
        target = planned.target
        size = target.size if target.size is not None else target.size_estimate
        size_text = (
            human_bytes(size) if target.size is not None else f"~{human_bytes(size)}" if size else "size ?"
        )
        action = {
            VERIFIED: "ok",
            PRESENT: "verify",
            PARTIAL: f"resume@{human_bytes(planned.have_bytes)}",
            MISSING: "fetch",
        }[planned.status]
        lines.append(f"  {action:<18} {size_text:>10}  {target.rel:<70} {target.source}")
    for warning in plan.warnings:
        lines.append(f"WARNING: {warning}")
    if plan.offline_reason:
        lines.append(f"note: sizes marked ~ are estimates: {plan.offline_reason}")
    unknown = [p for p in plan.files if p.status != VERIFIED and p.target.size is None]
    approx = "~" if unknown else ""
    # A file shown as "size ?" has neither a size nor an estimate: the sums cannot include it.
    sizeless = sum(1 for p in plan.files if p.target.size is None and not p.target.size_estimate)
    left_out = f"; the {sizeless} shown as size ? are not counted" if sizeless else ""
    lines.append(
        f"to download: {approx}{human_bytes(plan.bytes_to_fetch)} of {approx}{human_bytes(plan.total_bytes)} "
        f"({sum(1 for p in plan.files if p.status != VERIFIED)} of {len(plan.files)} files{left_out}); "
        f"free in {plan.models_root}: {human_bytes(plan.free_bytes)}"
    )
    needed = plan.bytes_to_fetch + plan.margin_bytes if plan.bytes_to_fetch else 0
    if needed > plan.free_bytes:
        lines.append(f"WARNING: not enough disk space: {human_bytes(needed)} needed (incl. margin)")
    return lines


__all__ = [
    "EnsureResult",
    "ModelPlan",
    "PlannedFile",
    "describe_plan",
    "ensure_models",
    "plan_models",
    "source_for",
]
