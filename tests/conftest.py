"""Suite-wide pytest setup: GPU tests skip cleanly on machines without an NVIDIA GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _has_nvidia_gpu():
        skip_gpu = pytest.mark.skip(reason="no NVIDIA GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default profile rendered once per test module (read-only: copy it with ``ctx``)."""
    from support.validate_context import render

    return render(tmp_path_factory.mktemp("rendered"))


@pytest.fixture
def ctx(rendered: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the rendered default context."""
    return Path(shutil.copytree(rendered, tmp_path / "docker"))
