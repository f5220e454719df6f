"""Check 12: resolving the locks for linux x86_64 with uv, against a local package folder.

The index is a folder of real (tiny) wheels and an sdist served to uv with `--find-links`, so the
test needs no network and exercises the same uv code path as the package index.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from zr4.profile import load_profile
from zr4.render import render_files, write_context
from zr4.validate import BuildContext
from zr4.validate.check_resolve import check_resolve, platform_for, requirements_of, wheel_tag_problem
from zr4.validate.model import CheckResult

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: zr4-test\nRoot-Is-Purelib: true\nTag: {tag}\n",
        f"{name}/__init__.py": "",
    }
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(
            f"{dist_info}/RECORD", "".join(f"{m},,\n" for m in files) + f"{dist_info}/RECORD,,\n"
        )
    return path


def make_sdist(folder: Path, name: str, version: str) -> Path:
    path = folder / f"{name}-{version}.tar.gz"
    members = {  # Metadata 2.2 without dynamic fields: uv reads it without building (PEP 643)
        f"{name}-{version}/PKG-INFO": f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}/pyproject.toml": "[build-system]\nrequires = ['setuptools']\nbuild-backend = 'setuptools.build_meta'\n",
    }
    with tarfile.open(path, "w:gz") as archive:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    make_wheel(folder, "demo_wheel", "1.0")
    make_wheel(folder, "demo_rehashed", "2.0")
    make_wheel(folder, "demo_windows", "1.0", "cp311-cp311-win_amd64")
    make_sdist(folder, "demo_sdist", "1.0")
    make_sdist(folder, "demo_built", "3.0")
    return folder


@pytest.fixture
def ctx(tmp_path: Path, index: Path) -> Path:
    out = tmp_path / "docker"
    write_context(render_files(load_profile("4080super")), out)
    (out / "zr4-runtime.lock").unlink()
    wheel_hash = sha256(index / "demo_wheel-1.0-py3-none-any.whl")
    (out / "requirements.lock").write_text(
        "# test lock\n"
        f"demo-wheel==1.0 \\\n    --hash=sha256:{wheel_hash}\n    # via -r test.in\n"
        f"demo-rehashed==2.0 \\\n    --hash=sha256:{'0' * 64}\n"
        "demo-sdist==1.0\n"
        "demo-missing==1.0\n"
        "demo-windows==1.0\n"
    )
    (out / "Dockerfile").write_text(
        "FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04 AS builder\n"
        "RUN pip wheel --no-deps --wheel-dir /wheels demo-built==3.0\n"
        "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS runtime\n"
        "RUN pip install --no-deps https://example.org/demo_gpu-1.0-cp310-cp310-linux_x86_64.whl\n"
        "RUN pip install --no-deps demo-sdist==1.0\n"
    )
    return out


def messages(result: CheckResult) -> str:
    return "\n".join(str(f) for f in result.findings)


def test_wheels_sdists_missing_and_hashes_are_told_apart(ctx: Path, index: Path) -> None:
    result = check_resolve(
        BuildContext(ctx), timeout_s=60, index_args=["--no-index", "--find-links", str(index)]
    )
    report = messages(result)
    notes = "\n".join(result.notes)
    assert result.status == "fail"
    assert "target x86_64-manylinux_2_35, CPython 3.11" in notes
    assert "requirements.lock: 2 wheels, 1 sdists (demo-sdist==1.0), 2 missing" in notes
    assert (
        "requirements.lock: demo-missing==1.0 cannot be installed on x86_64-manylinux_2_35/cp311: " in report
    )
    assert "demo-missing was not found in the provided package locations" in report
    assert "demo-windows==1.0 cannot be installed on x86_64-manylinux_2_35/cp311" in report
    assert "has no wheels with a matching platform tag" in report
    assert "demo-rehashed==2.0: none of the lock's hashes is a wheel for x86_64-manylinux_2_35" in report
    assert (
        "demo-sdist==1.0 has no wheel for x86_64-manylinux_2_35/cp311: the lock install would compile it"
        in report
    )
    assert "demo-wheel==1.0" not in report
    # A source-only package that a stage compiles into a wheel is fine (mmcv's case).
    assert (
        "demo-built==3.0: source only, compiled in stage builder (nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04)"
        in notes
    )
    # ... but not in a stage FROM the runtime image, which has no compilers.
    assert (
        "Dockerfile:5: demo-sdist==1.0 has no wheel for x86_64-manylinux_2_35/cp311, so it compiles in stage runtime, "
        "whose base nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 has no compiler toolchain"
    ) in report
    # A wheel installed straight from a URL must match the image's Python.
    assert (
        "Dockerfile:4: demo_gpu-1.0-cp310-cp310-linux_x86_64.whl is built for cp310-cp310-linux_x86_64"
        in report
    )


def test_platform_follows_the_runtime_images_ubuntu() -> None:
    assert platform_for("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04") == "x86_64-manylinux_2_35"
    assert platform_for("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04") == "x86_64-manylinux_2_39"
    assert platform_for("python:3.11-slim") == "x86_64-manylinux_2_28"


def test_lock_parsing_keeps_hashes_per_requirement() -> None:
    entries = requirements_of(
        "A_b==1 \\\n    --hash=sha256:"
        + "a" * 64
        + " \\\n    --hash=sha256:"
        + "b" * 64
        + "\n# c\nc[x]==2 ; python_version >= '3'\n"
    )
    assert entries == [
        ("a-b", "A_b==1", {"a" * 64, "b" * 64}),
        ("c", "c[x]==2 ; python_version >= '3'", set()),
    ]


def test_url_wheel_tags() -> None:
    release = "https://github.com/Dao-AILab/flash-attention/releases/download/v2.7.4.post1/"
    assert (
        wheel_tag_problem(
            release + "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl", "3.11"
        )
        is None
    )
    assert wheel_tag_problem("https://x/pkg-1.0-py3-none-any.whl", "3.11") is None
    assert "not CPython 3.11" in (
        wheel_tag_problem("https://x/pkg-1.0-cp311-cp311-win_amd64.whl", "3.11") or ""
    )
