"""Dependency locks for the image: compose a stack's input, compile it with uv, check it against profiles.

A stack (``profile.stack.lock``, e.g. ``cu124-torch2.5.1``) has one lock per pose backend it can run
(``profile.lock_name``): ``data/locks/<stack>.txt`` for the ONNX backend, and, where the stack pins mmcv,
mmdet and mmpose, ``data/locks/<stack>-mmpose.txt`` for the native one. Each holds the exact versions and
hashes of everything ComfyUI and the custom nodes need, for the image's platform: the ONNX image never
runs mmengine, mmdet or mmpose, so its lock leaves them (and what they pull in) out. Its input is

* pins generated from the profile's ``stack:`` (torch family, xformers, onnxruntime-gpu; mmdet and
  mmpose for the mmpose lock only),
* ``data/locks/requirements/<stack>.in``: zr4's decisions (numpy < 2, tested versions), a comment each,
  and for the mmpose lock ``<stack>-mmpose.in`` after it (mmengine),
* ComfyUI's and each pinned custom node's ``requirements.txt``, vendored byte for byte under
  ``data/locks/requirements/`` with a ``#@`` header naming repository, commit and git blob id,
* ``data/locks/requirements/<lock>.overrides`` as ``--override`` (packages kept out, e.g. chumpy).

The files go to uv as separate ``-r`` inputs, so the lock's ``# via`` annotations name the file each
requirement came from. mmcv (compiled in the builder stage) and flash-attn (GitHub release wheel) are
never in a lock. zr4's own venv in the image gets a separate lock, ``data/locks/zr4-runtime.txt``, resolved
from ``data/locks/requirements/zr4-runtime.in`` (what the in-image commands import).

A lock changes only on purpose. uv is handed the committed lock as its output file, so it keeps every
pin that still satisfies the inputs ("When using an output file, uv will consider the versions pinned in
an existing output file. If a dependency is pinned it will not be upgraded on a subsequent compile run":
astral-sh/uv@26a9dd4b2125bc271b47855e1fa0c49af3365db5:docs/pip/compile.md, "Upgrading requirements"; it
keeps the pinned hashes too: crates/uv-resolver/src/resolution/output.rs, ``get_hashes``). Only
``--upgrade`` (start from no pins) or ``--upgrade-package`` takes what the index serves now; ``check``
re-resolves from no pins to report that drift. Each lock's header records a digest of its inputs, so a
lock made from other inputs than the committed files is found without any index.

Decisions (composing, parsing, comparing) are pure functions; running uv and writing files sit at the edges.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zr4 import __version__
from zr4.core.atomic import write_text_atomically
from zr4.errors import Zr4Error
from zr4.paths import data_dir
from zr4.profile.models import Profile, Stack

PoseBackend = Literal["onnx", "mmpose"]

# The image's platform: Ubuntu 22.04 (glibc 2.35) on x86_64 (the nvidia/cuda 12.4.1 images' OS).
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
PYPI_SIMPLE = "https://pypi.org/simple"
VENDORED_PREFIX = "#@ "
PINS_FILE = "profile-stack-pins.in"
RUNTIME_LOCK = "zr4-runtime"
# zr4's dependencies that no command run in the image imports (`zr4 validate` runs where the image
# is built): kept out of the image's venv. tests/test_lock.py checks that zr4.image never imports them.
BUILD_MACHINE_ONLY = frozenset({"e2b-dockerfile-utils"})
RUNTIME_PYTHON = "3.11"
# zr4's own venv shares nothing with ComfyUI's pins, so it takes current releases, not the stacks' 2025 cut-off:
# the last full UTC day before its lock was made. That resolves huggingface_hub 2.4.0 (the release bench/results/models.md
# measured, and what the development environment runs) and typer/click/rich as there. A fixed instant keeps
# `zr4 lock --check` reproducible; move it forward deliberately to take newer releases.
RUNTIME_EXCLUDE_NEWER = dt.date(2026, 11, 25)
UV_TIMEOUT_S = 600


class LockError(Zr4Error):
    """A lock cannot be composed, compiled or written; the message says what to fix."""


@dataclass(frozen=True)
class VendoredRequirements:
    """An upstream requirements file kept byte for byte, with the ``#@`` header that says where it came from."""

    file_name: str
    repo: str
    commit: str
    path: str
    git_blob: str
    body: bytes

    @property
    def source(self) -> str:
        return f"{self.repo} @ {self.commit} {self.path}"


@dataclass(frozen=True)
class InputFile:
    """One ``-r`` (or ``--override``) file handed to uv: its name in the work folder, text, and origin."""

    name: str
    text: str
    source: str


@dataclass(frozen=True)
class LockInput:
    """Everything one ``uv pip compile`` run needs; the same input always gives the same lock."""

    lock_name: str
    python: str
    exclude_newer: dt.date
    requirements: tuple[InputFile, ...]
    overrides: InputFile | None = None
    omitted: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompileResult:
    """uv's output (without its own header) and how it was produced."""

    body: str
    command: str
    uv_version: str
    seconds: float


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: frozenset[str] = field(default_factory=frozenset)


# ---------------------------------------------------------------------------------------------- pure


def git_blob_id(body: bytes) -> str:
    """The id git gives a file with these bytes (``git hash-object``), to prove a vendored copy is verbatim."""
    return hashlib.sha1(b"blob %d\x00" % len(body) + body, usedforsecurity=False).hexdigest()


def parse_vendored(file_name: str, data: bytes) -> VendoredRequirements:
    """Split a vendored file into its ``#@ key: value`` header and the upstream bytes, checking the blob id."""
    fields: dict[str, str] = {}
    offset = 0
    prefix = VENDORED_PREFIX.encode()
    while data.startswith(prefix, offset):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        line = data[offset + len(prefix) : end].decode("utf-8").strip()
        key, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[a-z-]+", key):
            fields[key] = value.strip()
        offset = end
    missing = [key for key in ("repo", "commit", "path", "git-blob") if key not in fields]
    if missing:
        raise LockError(
            f"{file_name}: vendored requirements header lacks {', '.join('#@ ' + k for k in missing)}"
        )
    body = data[offset:]
    actual = git_blob_id(body)
    if actual != fields["git-blob"]:
        raise LockError(
            f"{file_name}: content is not the upstream file (git blob {actual}, header says {fields['git-blob']}); "
            "vendored requirements are copied verbatim, put zr4's decisions in <stack>.in instead"
        )
    return VendoredRequirements(
        file_name, fields["repo"], fields["commit"], fields["path"], fields["git-blob"], body
    )


def normalize_requirements(text: str) -> str:
    """LF line endings and exactly one final newline, so the file can be read or joined safely.

    Upstream requirement files often lack the final newline (e.g. the pinned nodes' requirements.txt); joining two such files blindly
    turns ``opencv-python`` + ``ftfy`` into ``opencv-pythonftfy``.
    """
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(line.rstrip() + "\n" for line in lines)


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements text: comments, blank lines and inline comments removed."""
    result = []
    for raw in normalize_requirements(text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            result.append(line)
    return result


def join_requirements(parts: Iterable[InputFile]) -> str:
    """One requirements text from several, each under a ``# from <source>`` line (for reading, and for
    tools that take a single file); every part is normalized first, so none runs into the next."""
    return "".join(f"# from {part.source}\n{normalize_requirements(part.text)}" for part in parts)


# The native pose backend's packages: in the mmpose lock only (mmcv is compiled, never locked).
MMPOSE_PACKAGES = ("mmengine", "mmdet", "mmpose")


def stack_pins(stack: Stack, pose_backend: PoseBackend) -> dict[str, str | None]:
    """The exact pins a lock takes from the stack (PyPI names), in a stable order; None means "not in
    this lock": mmdet and mmpose belong to the mmpose lock only, whatever the stack pins."""
    mmpose = pose_backend == "mmpose"
    return {
        "torch": stack.torch,
        "torchvision": stack.torchvision,
        "torchaudio": stack.torchaudio,
        "xformers": stack.xformers,
        "onnxruntime-gpu": stack.onnxruntime_gpu,
        "mmdet": stack.mmdet if mmpose else None,
        "mmpose": stack.mmpose if mmpose else None,
    }


def stack_pin_lines(stack: Stack, pose_backend: PoseBackend = "onnx") -> list[str]:
    """``name==version`` for each pin of :func:`stack_pins` that is set."""
    return [f"{name}=={version}" for name, version in stack_pins(stack, pose_backend).items() if version]


def pose_variants(profile: Profile) -> list[Profile]:
    """The profile, then the same profile with each other pose backend its stack can run: every lock of
    the stack, so ``zr4 lock`` keeps the mmpose lock current although no bundled profile installs it."""
    variants = [profile]
    stack = profile.stack
    for backend in ("onnx", "mmpose"):
        if backend == profile.features.pose_backend:
            continue
        if backend == "mmpose" and not (stack.mmcv and stack.mmdet and stack.mmpose):
            continue
        data = profile.model_dump()
        data["features"]["pose_backend"] = backend
        variants.append(Profile.model_validate(data))
    return variants


def omitted_from_lock(profile: Profile) -> tuple[str, ...]:
    """What the image installs outside the lock (with --no-deps on top of it), for the lock's header."""
    stack = profile.stack
    omitted = []
    if stack.mmcv and profile.features.pose_backend == "mmpose":
        omitted.append(f"mmcv {stack.mmcv} (compiled in the builder stage)")
    if stack.flash_attn:
        omitted.append(f"flash-attn {stack.flash_attn} (GitHub release wheel or source build)")
    return tuple(omitted)


def pins_input(profile: Profile) -> InputFile:
    stack = profile.stack
    backend = profile.features.pose_backend
    text = (
        f"# Generated by zr4 from the `stack:` of profile {profile.name} (stack {stack.lock}, "
        f"pose backend {backend}).\n" + "".join(f"{line}\n" for line in stack_pin_lines(stack, backend))
    )
    # The source names the lock, not the profile: every profile on a lock composes the same input.
    return InputFile(PINS_FILE, text, f"stack pins of the profiles on {profile.lock_name}")


def compose_lock_input(
    profile: Profile,
    stack_text: str,
    comfyui: VendoredRequirements,
    nodes: Sequence[VendoredRequirements],
    overrides_text: str | None = None,
    pose_text: str | None = None,
) -> LockInput:
    """The uv input for a profile's lock from its pins, zr4's ``<stack>.in`` (and, for a pose backend
    with its own lock, ``<lock>.in``: ``pose_text``) and the vendored files.

    Checks that each vendored file is for the commit the profile pins, in the profile's node order.
    """
    if comfyui.commit != profile.comfyui.commit or comfyui.repo.lower() != profile.comfyui.repo.lower():
        raise LockError(
            f"{comfyui.file_name} is {comfyui.repo} at {comfyui.commit}, but the profile pins "
            f"{profile.comfyui.repo} at {profile.comfyui.commit}; vendor the file at the pinned commit"
        )
    by_name = {node.file_name.removesuffix(".txt"): node for node in nodes}
    files = [
        pins_input(profile),
        InputFile(
            f"{profile.stack.lock}.in",
            normalize_requirements(stack_text),
            f"zr4 decisions for {profile.stack.lock}",
        ),
    ]
    if profile.lock_name != profile.stack.lock:
        if pose_text is None:
            raise LockError(
                f"{profile.lock_name}.in is missing: the {profile.features.pose_backend} pose backend's lock "
                "needs its zr4 decisions file (see docs/reference/locks.md)"
            )
        files.append(
            InputFile(
                f"{profile.lock_name}.in",
                normalize_requirements(pose_text),
                f"zr4 decisions for the {profile.features.pose_backend} pose backend on {profile.stack.lock}",
            )
        )
    files.append(InputFile(comfyui.file_name, _vendored_text(comfyui), comfyui.source))
    for node in profile.comfyui.custom_nodes:
        vendored = by_name.get(node.name)
        if vendored is None:
            raise LockError(
                f"no vendored requirements for custom node {node.name}: add data/locks/requirements/{node.name}.txt "
                f"(its requirements.txt at {node.commit}, with a #@ header)"
            )
        if vendored.commit != node.commit or vendored.repo.lower() != node.repo.lower():
            raise LockError(
                f"{vendored.file_name} is {vendored.repo} at {vendored.commit}, but the profile pins "
                f"{node.repo} at {node.commit}; vendor the file at the pinned commit"
            )
        files.append(InputFile(vendored.file_name, _vendored_text(vendored), vendored.source))
    overrides = (
        InputFile(
            f"{profile.stack.lock}.overrides",
            normalize_requirements(overrides_text),
            f"zr4 overrides for {profile.stack.lock}",
        )
        if overrides_text is not None
        else None
    )
    return LockInput(
        lock_name=profile.lock_name,
        python=profile.stack.python,
        exclude_newer=profile.stack.exclude_newer,
        requirements=tuple(files),
        overrides=overrides,
        omitted=omitted_from_lock(profile),
    )


def _vendored_text(vendored: VendoredRequirements) -> str:
    header = f"# {vendored.source} (vendored by zr4, git blob {vendored.git_blob})\n"
    return header + normalize_requirements(vendored.body.decode("utf-8"))


RUNTIME_REQUIREMENTS = "zr4-runtime.in"


def runtime_lock_input(requirements_text: str) -> LockInput:
    """The input of zr4's own runtime venv: ``data/locks/requirements/zr4-runtime.in``, the packages the
    in-image commands import. The image installs zr4 itself from a wheel in the build context, so no
    build backend enters this venv."""
    if not requirement_lines(requirements_text):
        raise LockError(f"{RUNTIME_REQUIREMENTS} lists no requirement")
    return LockInput(
        lock_name=RUNTIME_LOCK,
        python=RUNTIME_PYTHON,
        exclude_newer=RUNTIME_EXCLUDE_NEWER,
        requirements=(
            InputFile(RUNTIME_REQUIREMENTS, requirements_text, "what zr4's in-image commands import"),
        ),
    )


def runtime_requirements_text() -> str:
    """The runtime venv's requirement list, bundled with zr4 (a wheel install has it too)."""
    path = requirements_dir() / RUNTIME_REQUIREMENTS
    if not path.is_file():
        raise LockError(f"{path} is missing")
    return path.read_text(encoding="utf-8")


def exclude_newer_timestamp(day: dt.date) -> str:
    """uv's --exclude-newer for "released on or before ``day``": the next midnight, UTC.

    A bare date is read by uv in the machine's time zone; an explicit instant gives the same lock everywhere.
    """
    return f"{(day + dt.timedelta(days=1)).isoformat()}T00:00:00Z"


def output_name(lock_input: LockInput) -> str:
    """The lock's name in uv's work folder: uv's ``--output-file``, whose existing pins it keeps."""
    return f"{lock_input.lock_name}.txt"


def uv_compile_args(lock_input: LockInput, index_url: str = PYPI_SIMPLE) -> list[str]:
    """The ``uv pip compile`` arguments (after the uv binary), relative to a folder holding the input files.

    The lock's header records these; the run-only flags (``--refresh``, ``--upgrade-package``) are not
    among them, so one set of inputs always gives one header.
    """
    args = ["pip", "compile", *(item.name for item in lock_input.requirements)]
    if lock_input.overrides is not None:
        args += ["--override", lock_input.overrides.name]
    args += [
        "--generate-hashes",
        "--python-platform",
        PYTHON_PLATFORM,
        "--python-version",
        lock_input.python,
        "--exclude-newer",
        exclude_newer_timestamp(lock_input.exclude_newer),
        "--index-url",
        index_url,
        "--no-header",
        "--annotation-style",
        "split",
        "--output-file",
        output_name(lock_input),
    ]
    return args


def uv_command(lock_input: LockInput, index_url: str = PYPI_SIMPLE) -> str:
    """The command the lock's header records (relative names only: no temporary folder enters it)."""
    return shlex.join(["uv", *uv_compile_args(lock_input, index_url)])


def inputs_digest(lock_input: LockInput, command: str) -> str:
    """sha256 of what decides a lock: the uv command and each input file's name, origin and requirement
    lines (comments and blank lines do not change a resolution, so they do not change the digest)."""
    parts = [command]
    for item in (*lock_input.requirements, *([lock_input.overrides] if lock_input.overrides else [])):
        parts += [f"file {item.name}", f"source {item.source}", *requirement_lines(item.text)]
    parts += [f"omitted {entry}" for entry in lock_input.omitted]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


_DIGEST_LINE = re.compile(r"^# Inputs sha256:([0-9a-f]{64})\b", re.M)


def recorded_digest(lock_text: str) -> str | None:
    """The inputs digest a lock's header records (None for a lock made before zr4 recorded one)."""
    match = _DIGEST_LINE.search(lock_text[: len(lock_text) - len(lock_body(lock_text))])
    return match.group(1) if match else None


def inputs_changed(lock_text: str, lock_input: LockInput, index_url: str = PYPI_SIMPLE) -> bool:
    """Whether the lock was made from other inputs (or another uv command) than ``lock_input``."""
    return recorded_digest(lock_text) != inputs_digest(lock_input, uv_command(lock_input, index_url))


def render_lock(lock_input: LockInput, result: CompileResult, made_by: str, today: dt.date) -> str:
    """The committed lock: zr4's header (what, how, from which files) and uv's output."""
    lines = [
        f"# Lock {lock_input.lock_name}: generated by `{made_by}` (zr4 {__version__}) on {today.isoformat()}. "
        "Do not edit; rerun that command.",
        f"# {result.uv_version}, run in a folder holding the input files below and this lock as the output file:",
        f"#   {result.command}",
        "# uv keeps the pins of the existing output file; `zr4 lock --upgrade` starts from none.",
        f"# --exclude-newer {exclude_newer_timestamp(lock_input.exclude_newer)}: nothing uploaded after "
        f"{lock_input.exclude_newer.isoformat()} (UTC) enters this lock.",
        f"# Inputs sha256:{inputs_digest(lock_input, result.command)} (`zr4 lock --check` compares it).",
        "# Inputs (the `# via -r` notes below name them):",
    ]
    lines += [f"#   {item.name}: {item.source}" for item in lock_input.requirements]
    if lock_input.overrides is not None:
        lines.append(f"#   --override {lock_input.overrides.name}: {lock_input.overrides.source}")
    if lock_input.omitted:
        lines.append(
            f"# Not in this lock, installed with --no-deps on top of it: {'; '.join(lock_input.omitted)}."
        )
    return "\n".join(lines) + "\n" + result.body


def lock_body(lock_text: str) -> str:
    """The lock without zr4's header: everything from the first line that is not a ``#`` comment."""
    lines = lock_text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            return "".join(lines[index:])
    return ""


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def parse_lock(lock_text: str) -> dict[str, LockedPackage]:
    """``name==version`` entries of a lock (names PEP 503 normalized) with their hashes."""
    packages: dict[str, LockedPackage] = {}
    current: str | None = None
    hashes: dict[str, set[str]] = {}
    versions: dict[str, tuple[str, str]] = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line)
        if match:
            current = canonical_name(match.group(1))
            versions[current] = (match.group(1), match.group(2))
            hashes[current] = set(_HASH.findall(line))
        elif current is not None and line[:1].isspace():
            hashes[current].update(_HASH.findall(line))
        else:
            current = None
    for name, (raw_name, version) in versions.items():
        packages[name] = LockedPackage(raw_name, version, frozenset(hashes[name]))
    return packages


def _lock_blocks(lock_text: str) -> dict[str, tuple[str, set[str]]]:
    """Each entry of a lock: normalized name -> (its lines, the names its ``# via`` notes list)."""
    blocks: dict[str, tuple[list[str], set[str]]] = {}
    current: str | None = None
    for line in lock_body(lock_text).splitlines(keepends=True):
        match = _PIN.match(line)
        if match:
            current = canonical_name(match.group(1))
            blocks[current] = ([line], set())
            continue
        if current is None or not line[:1].isspace():
            current = None
            continue
        blocks[current][0].append(line)
        note = line.strip().lstrip("#").strip()
        note = note.removeprefix("via").strip()
        if note and not note.startswith(("-r ", "--")):
            blocks[current][1].add(canonical_name(note))
    return {name: ("".join(lines), via) for name, (lines, via) in blocks.items()}


def lock_subset(lock_text: str, roots: Iterable[str]) -> str:
    """The entries of ``roots`` and of everything they pull in (read from the ``# via`` notes), in lock order.

    A compile stage installs only this, so bumping an unrelated pin of the lock does not recompile mmcv.
    """
    blocks = _lock_blocks(lock_text)
    wanted = {canonical_name(root) for root in roots}
    missing = sorted(wanted - blocks.keys())
    if missing:
        raise LockError(f"the lock has no entry for {', '.join(missing)}")
    grew = True
    while grew:
        grew = False
        for name, (_, via) in blocks.items():
            if name not in wanted and via & wanted:
                wanted.add(name)
                grew = True
    return "".join(text for name, (text, _) in blocks.items() if name in wanted)


def _public_version(version: str) -> tuple[str, str]:
    public, _, local = version.partition("+")
    return public, local


def lock_matches_profile(lock_text: str, profile: Profile) -> list[str]:
    """Pins of the profile's stack that the lock contradicts (empty when they agree).

    Checks torch, torchvision, torchaudio, xformers, onnxruntime-gpu, mmdet and mmpose (a pin the stack
    leaves unset must be absent from the lock), that an ONNX lock holds none of mmengine, mmdet and
    mmpose, the CUDA build torch pulls in, and that mmcv and flash-attn, which the image installs
    outside the lock, are not in it.
    """
    stack = profile.stack
    backend = profile.features.pose_backend
    packages = parse_lock(lock_text)
    problems: list[str] = []
    for name, pinned in stack_pins(stack, backend).items():
        locked = packages.get(name)
        if pinned is None:
            if locked is None:
                continue
            if name in MMPOSE_PACKAGES and getattr(stack, name):
                problems.append(
                    f"{name}: the pose backend is {backend}, which never runs it, the lock has {locked.version}"
                )
            else:
                problems.append(f"{name}: the profile's stack pins none, the lock has {locked.version}")
            continue
        if locked is None:
            problems.append(f"{name}: the profile pins {pinned}, the lock has no {name}")
            continue
        public, local = _public_version(locked.version)
        if public != pinned:
            problems.append(f"{name}: the profile pins {pinned}, the lock has {locked.version}")
        elif local.startswith("cu") and local != stack.torch_cuda:
            problems.append(
                f"{name}: the profile wants the {stack.torch_cuda} build, the lock has {locked.version}"
            )
    # PyPI's torch wheels carry no +cuXXX tag: the CUDA runtime wheel they require tells the build.
    runtime = packages.get("nvidia-cuda-runtime-cu12")
    wanted = re.fullmatch(r"cu(\d+)(\d)", stack.torch_cuda)
    if runtime is not None and wanted is not None:
        cuda_major_minor = f"{wanted.group(1)}.{wanted.group(2)}"
        if not (runtime.version == cuda_major_minor or runtime.version.startswith(cuda_major_minor + ".")):
            problems.append(
                f"torch CUDA build: the profile wants {stack.torch_cuda}, the lock's torch pulls "
                f"nvidia-cuda-runtime-cu12 {runtime.version}"
            )
    if backend != "mmpose" and "mmengine" in packages:
        problems.append(
            f"mmengine: the pose backend is {backend}, which never runs it, "
            f"the lock has {packages['mmengine'].version}"
        )
    for name, how in (
        ("mmcv", "compiled in the builder stage"),
        ("flash-attn", "installed from its release wheel"),
    ):
        if name in packages:
            problems.append(f"{name} {packages[name].version} is in the lock, but it is {how}; remove it")
    return problems


def diff_locks(committed_text: str, fresh_text: str) -> list[str]:
    """Differences in packages, versions and hashes between two locks (annotations and headers ignored)."""
    old, new = parse_lock(committed_text), parse_lock(fresh_text)
    changes = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is None and after is not None:
            changes.append(f"+ {after.name}=={after.version} (new)")
        elif after is None and before is not None:
            changes.append(f"- {before.name}=={before.version} (no longer resolved)")
        elif before is not None and after is not None:
            if before.version != after.version:
                changes.append(f"~ {after.name}: {before.version} -> {after.version}")
            elif before.hashes != after.hashes:
                changes.append(f"~ {after.name}=={after.version}: hashes differ")
    return changes


# ---------------------------------------------------------------------------------------------- edges


def requirements_dir() -> Path:
    """Folder of the vendored requirement files and each stack's ``.in`` / ``.overrides``."""
    return data_dir() / "locks" / "requirements"


def lock_path(lock_name: str) -> Path:
    return data_dir() / "locks" / f"{lock_name}.txt"


def read_vendored(path: Path) -> VendoredRequirements:
    if not path.is_file():
        raise LockError(f"{path} is missing")
    return parse_vendored(path.name, path.read_bytes())


def load_lock_input(profile: Profile, folder: Path | None = None) -> LockInput:
    """Read the stack's files and the vendored requirements for ``profile`` and compose the uv input."""
    folder = folder or requirements_dir()
    stack_file = folder / f"{profile.stack.lock}.in"
    if not stack_file.is_file():
        raise LockError(
            f"{stack_file} is missing: each stack needs its zr4 decisions file (see docs/reference/locks.md)"
        )
    pose_file = folder / f"{profile.lock_name}.in"
    pose_text = (
        pose_file.read_text(encoding="utf-8")
        if profile.lock_name != profile.stack.lock and pose_file.is_file()
        else None
    )
    overrides_file = folder / f"{profile.stack.lock}.overrides"
    comfyui = read_vendored(folder / f"comfyui-{profile.comfyui.version}.txt")
    nodes = [read_vendored(folder / f"{node.name}.txt") for node in profile.comfyui.custom_nodes]
    return compose_lock_input(
        profile,
        stack_file.read_text(encoding="utf-8"),
        comfyui,
        nodes,
        overrides_file.read_text(encoding="utf-8") if overrides_file.is_file() else None,
        pose_text,
    )


def load_runtime_lock_input() -> LockInput:
    return runtime_lock_input(runtime_requirements_text())


def find_uv() -> str:
    """The uv binary: the ``uv`` Python package's (a test extra of zr4), else the one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise LockError("uv is not installed; `pip install uv` (or `pip install -e '.[test]'`)")
    return found


# uv's settings that do not change what a resolution gives, kept from the caller's environment.
_UV_ENVIRONMENT_KEPT = frozenset({"UV_CACHE_DIR"})


def compile_lock(
    lock_input: LockInput,
    *,
    index_url: str = PYPI_SIMPLE,
    existing_lock: str | None = None,
    upgrade_packages: Sequence[str] = (),
    refresh: bool = False,
    uv: str | None = None,
    timeout_s: float = UV_TIMEOUT_S,
) -> CompileResult:
    """Run ``uv pip compile`` on the input in a temporary folder against ``index_url``.

    ``existing_lock`` becomes uv's output file before the run, so uv keeps its pins (and hashes) where
    they still satisfy the inputs; without it uv resolves from scratch. ``upgrade_packages`` frees those
    pins (uv's ``--upgrade-package``); ``refresh`` makes uv ask the index again instead of its cache.
    Neither enters the recorded command.
    """
    uv = uv or find_uv()
    args = uv_compile_args(lock_input, index_url)
    run_only = ["--refresh"] if refresh else []
    for name in upgrade_packages:
        run_only += ["--upgrade-package", name]
    with tempfile.TemporaryDirectory(prefix="zr4-lock-") as work:
        folder = Path(work)
        for item in (*lock_input.requirements, *([lock_input.overrides] if lock_input.overrides else [])):
            (folder / item.name).write_text(normalize_requirements(item.text), encoding="utf-8")
        output = folder / output_name(lock_input)
        if existing_lock is not None:
            output.write_text(lock_body(existing_lock), encoding="utf-8")
        # The caller's UV_* settings (an index, a cutoff, a resolution strategy) would change the lock.
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("UV_") or key in _UV_ENVIRONMENT_KEPT
        }
        environment["UV_NO_CONFIG"] = "1"
        version = subprocess.run(
            [uv, "--version"], capture_output=True, text=True, check=False, timeout=60, env=environment
        ).stdout.strip()
        started = time.monotonic()
        try:
            done = subprocess.run(
                [uv, *args, *run_only],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=environment,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise LockError(
                f"uv pip compile for {lock_input.lock_name} took over {timeout_s:.0f} s"
            ) from error
        seconds = time.monotonic() - started
        body = output.read_text(encoding="utf-8") if done.returncode == 0 and output.is_file() else ""
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-12:])
        raise LockError(f"uv pip compile failed for {lock_input.lock_name}: {tail}")
    return CompileResult(body=body, command=shlex.join(["uv", *args]), uv_version=version, seconds=seconds)


def write_atomically(path: Path, text: str) -> None:
    """Write a lock so a reader never sees half of it; a committed file gets the usual mode."""
    write_text_atomically(path, text, mode=None)


@dataclass(frozen=True)
class LockOutcome:
    """What ``zr4 lock`` did for one lock file (or what ``--check`` found)."""

    path: Path
    packages: int
    seconds: float
    problems: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()
    unchanged: bool = False
    inputs_changed: bool = False
    changes: tuple[str, ...] = ()


def generate(
    lock_input: LockInput,
    made_by: str,
    profile: Profile | None = None,
    today: dt.date | None = None,
    *,
    index_url: str = PYPI_SIMPLE,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
) -> LockOutcome:
    """Compile ``lock_input`` and write its lock atomically; with a profile, refuse a lock that contradicts it.

    The committed lock's pins are kept unless ``upgrade`` (all) or ``upgrade_packages`` (those) frees
    them, so a re-run with unchanged inputs leaves the file as it is even after the index moved.
    ``changes`` lists what differs from the previous lock.
    """
    path = lock_path(lock_input.lock_name)
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    result = compile_lock(
        lock_input,
        index_url=index_url,
        existing_lock=None if upgrade else existing,
        upgrade_packages=upgrade_packages,
        refresh=upgrade,
    )
    text = render_lock(lock_input, result, made_by, today or dt.datetime.now(dt.UTC).date())
    problems = tuple(lock_matches_profile(text, profile)) if profile is not None else ()
    if problems:
        raise LockError(
            f"the resolved lock {lock_input.lock_name} contradicts the profile: {'; '.join(problems)}"
        )
    packages = len(parse_lock(text))
    if existing is not None and same_lock(existing, text):
        return LockOutcome(path, packages, result.seconds, unchanged=True)
    write_atomically(path, text)
    changes = tuple(diff_locks(existing, text)) if existing is not None else ()
    return LockOutcome(path, packages, result.seconds, changes=changes)


# The header's first line (who made the lock, on which day) and the uv release that wrote it: a re-run
# that resolves the same lock from the same inputs leaves the committed file, and every render of it
# (docker/, tests/golden/), as it is.
_UV_RELEASE = re.compile(r"^# uv [^,\n]*, ", re.M)


def same_lock(committed: str, fresh: str) -> bool:
    """Equal but for who made it, on which day, and with which uv release."""

    def significant(text: str) -> str:
        return _UV_RELEASE.sub("# uv, ", text.split("\n", 1)[-1], count=1)

    return significant(committed) == significant(fresh)


def check(
    lock_input: LockInput, profile: Profile | None = None, *, index_url: str = PYPI_SIMPLE
) -> LockOutcome:
    """Compare the committed lock with its inputs (no index needed), the profile's pins, and a resolution
    from scratch against ``index_url`` (what ``zr4 lock --upgrade`` would write: the index's drift)."""
    path = lock_path(lock_input.lock_name)
    if not path.is_file():
        raise LockError(f"{path} is missing; run `zr4 lock` to create it")
    committed = path.read_text(encoding="utf-8")
    result = compile_lock(lock_input, index_url=index_url, refresh=True)
    problems = tuple(lock_matches_profile(committed, profile)) if profile is not None else ()
    return LockOutcome(
        path,
        len(parse_lock(committed)),
        result.seconds,
        problems,
        tuple(diff_locks(committed, result.body)),
        inputs_changed=inputs_changed(committed, lock_input, index_url),
    )
