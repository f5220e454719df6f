"""Suite-wide pytest setup: GPU tests skip cleanly on machines without an NVIDIA GPU, and no test
may write to the image's folders on the host (``/workspace``, zr4's folders in ``/opt``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zr4.core import image_layout


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


# --- nothing outside temporary folders ------------------------------------------------------------

# The runtime's defaults point at the image's folders; a test that forgets one of COMFYUI_DIR,
# OUTPUT_DIR, MODELS_DIR, ZR4_AUTH_DIR ... writes there on the host (CI runs as root, so it can).
WORKSPACE = Path(image_layout.WORKSPACE_DIR)
OPT = Path(image_layout.COMFYUI_DIR).parent
OPT_IMAGE_FOLDERS = tuple(
    Path(folder)
    for folder in (
        image_layout.COMFYUI_DIR,
        image_layout.VENV_DIR,
        image_layout.ZR4_DIR,
        image_layout.PYTHON_DIR,
    )
)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (itself included) -> (size, mtime) for files, (-1, 0) for the rest."""
    entries: dict[str, tuple[int, int]] = {}
    if not os.path.lexists(root):
        return entries
    for folder, dirs, files in os.walk(root, followlinks=False):
        entries[folder] = (-1, 0)
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            try:
                status = os.lstat(path)
            except FileNotFoundError:
                continue
            is_file = name in files and not os.path.islink(path)
            entries[path] = (status.st_size, status.st_mtime_ns) if is_file else (-1, 0)
    if not entries:  # root is a file or a link
        entries[str(root)] = (-1, 0)
    return entries


# The boot's status file defaults to the image's path in the temp folder, shared by every process
# of the machine: a test that runs `zr4 start` sets ZR4_BOOT_STATUS to a folder of its own.
BOOT_STATUS = Path(image_layout.BOOT_STATUS_FILE).parent


@dataclass(frozen=True)
class HostFolders:
    """What the suite must leave alone: all of ``/workspace`` and the boot status's default folder;
    in ``/opt`` only what is new counts (it holds other software), looked for at its top and inside
    the image's own folders."""

    workspace: dict[str, tuple[int, int]]
    opt: frozenset[str]

    @classmethod
    def now(cls) -> HostFolders:
        opt = {str(OPT / name) for name in (os.listdir(OPT) if OPT.is_dir() else ())}
        for folder in OPT_IMAGE_FOLDERS:
            opt.update(_tree(folder))
        return cls({**_tree(WORKSPACE), **_tree(BOOT_STATUS)}, frozenset(opt))

    def changes_since(self, before: HostFolders) -> list[str]:
        old, new = before.workspace, self.workspace
        changes = [f"created {path}" for path in sorted(new.keys() - old.keys())]
        changes += [f"removed {path}" for path in sorted(old.keys() - new.keys())]
        changes += [f"changed {path}" for path in sorted(old.keys() & new.keys()) if old[path] != new[path]]
        changes += [f"created {path}" for path in sorted(self.opt - before.opt)]
        return changes


@pytest.fixture(scope="session")
def host_folders() -> Iterator[list[HostFolders]]:
    """The host's image folders as the session found them (updated once a change is reported)."""
    baseline = [HostFolders.now()]
    yield baseline
    changes = HostFolders.now().changes_since(baseline[0])
    if changes:  # after the last test's own check: something the session left running wrote there
        pytest.fail("the test session wrote outside temporary folders:\n  " + "\n  ".join(changes))


@pytest.fixture(autouse=True)
def writes_only_to_temporary_folders(host_folders: list[HostFolders]) -> Iterator[None]:
    """Fail the test (at its teardown) that created or changed anything under /workspace or /opt."""
    yield
    after = HostFolders.now()
    changes = after.changes_since(host_folders[0])
    if changes:
        host_folders[0] = after  # blame the next change on the test that makes it
        pytest.fail(
            "this test wrote outside temporary folders (clean these up by hand):\n  " + "\n  ".join(changes),
            pytrace=False,
        )
