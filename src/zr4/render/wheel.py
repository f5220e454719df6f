"""zr4's own wheel, built into every rendered build context so the context builds on its own.

The image installs zr4 into its venv from this wheel, checked against the sha256 rendered next to it,
so a plain ``docker build <out>`` (no named contexts, any ``--out`` folder) works, as do RunPod's and CI's
builders. The wheel is built here rather than by a build backend so that:

* it is reproducible: entries sorted, every timestamp 1980-01-01, fixed modes, no compression (deflate
  output may differ between zlib builds), so the same zr4 always gives the same bytes and hash;
* it builds the same from a checkout (``src/zr4`` + ``profiles/ templates/ data/``) and from an
  installed wheel (``zr4/_data/...``): both lay out as the hatchling wheel does (``zr4/_data/<name>``);
* it needs nothing that the image's lean venv or a user's machine lacks (no hatchling, no network).

Its ``Requires-Dist`` is the runtime requirement list (``data/locks/requirements/zr4-runtime.in``): this
wheel is zr4 as the image runs it, next to the venv resolved from that list.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from zr4 import __version__
from zr4.paths import data_dir, hadolint_config, package_dir, profiles_dir, templates_dir

WHEEL_NAME = f"zr4-{__version__}-py3-none-any.whl"
SHA256_NAME = f"{WHEEL_NAME}.sha256"
_DIST_INFO = f"zr4-{__version__}.dist-info"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__", "_data"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _files_under(root: Path, prefix: str, skip_dirs: set[str]) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in skip_dirs or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(_SKIPPED_SUFFIXES):
            yield f"{prefix}/{relative.as_posix()}", path


def package_files() -> list[tuple[str, Path]]:
    """(name in the wheel, file) for zr4's code and bundled data, sorted by name."""
    files = list(_files_under(package_dir(), "zr4", _SKIPPED_DIRS))
    for name, folder in (("profiles", profiles_dir()), ("templates", templates_dir()), ("data", data_dir())):
        files.extend(_files_under(folder, f"zr4/_data/{name}", {"__pycache__"}))
    config = hadolint_config()
    if config is not None:
        files.append(("zr4/_data/hadolint.yaml", config))
    return sorted(files)


def _metadata(requirements: list[str]) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        "Name: zr4",
        f"Version: {__version__}",
        "Summary: Turn a validated GPU profile into a working ComfyUI + SteadyDancer image for RunPod",
        "License: MIT",
        "Requires-Python: >=3.11",
        *(f"Requires-Dist: {requirement}" for requirement in requirements),
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _record_hash(content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = (0o100000 | mode) << 16
    info.create_system = 3  # Unix, so the mode above is read
    info.compress_type = zipfile.ZIP_STORED
    return info


def build_wheel(requirements: list[str]) -> bytes:
    """The wheel's bytes: the same zr4 tree and requirements always give the same bytes."""
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in package_files()]
    entries += [
        (f"{_DIST_INFO}/METADATA", _metadata(requirements)),
        (
            f"{_DIST_INFO}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: zr4.render.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{_DIST_INFO}/entry_points.txt", b"[console_scripts]\nzr4 = zr4.cli.main:run\n"),
    ]
    record = "".join(f"{name},{_record_hash(content)},{len(content)}\n" for name, content in entries)
    record += f"{_DIST_INFO}/RECORD,,\n"
    entries.append((f"{_DIST_INFO}/RECORD", record.encode("utf-8")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(_entry(name, 0o644), content)
    return buffer.getvalue()


def sha256_line(wheel: bytes) -> bytes:
    """``sha256sum`` format, so the Dockerfile checks the wheel with ``sha256sum -c``."""
    return f"{hashlib.sha256(wheel).hexdigest()}  {WHEEL_NAME}\n".encode("ascii")
