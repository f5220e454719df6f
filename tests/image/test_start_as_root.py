"""The container's start as RunPod runs it: as root, on a root-owned volume that uid 1000 cannot write.

Everything on the path is real: the rendered ``start.sh``, ``setpriv``, ``zr4.image.volume_prep``,
``zr4.image.start`` (auth token, ``extra_model_paths.yaml``, workflow) and the stand-in ComfyUI
(tests/support/fake_comfyui.py as ``main.py``). A private mount namespace (``unshare --mount``) gives
the run its own ``/etc/passwd`` and ``/etc/group`` with the image's user at uid/gid 1000, exactly as
the image has it, without touching the machine's. Needs root, ``unshare`` with mount namespaces
(CAP_SYS_ADMIN) and ``setpriv``; skips naming what is missing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zr4.profile import load_profile
from zr4.render.engine import render_files

SUPPORT = Path(__file__).resolve().parents[1] / "support"
USER, UID = "comfy", 1000


def _need_root_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the image starts as root and drops to uid 1000")
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (util-linux)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"needs mount namespaces (CAP_SYS_ADMIN): {probe.stderr.decode().strip()}")


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A scratch folder uid 1000 can traverse (pytest's tmp_path is 0700 root)."""
    _need_root_namespace()
    path = Path(tempfile.mkdtemp(prefix="zr4-start-as-root-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


# As uid 1000, start itself runs Python again (ComfyUI, the auth proxy): that child must be able to exec it
# and import everything the start path imports (start, its lazily imported launcher, their dependencies).
_PROBE = (
    "import subprocess, sys; subprocess.run([sys.executable, '-c', "
    "'import yaml, pydantic, zr4.image.start, zr4.core.comfy_launch, zr4.image.volume_prep'], check=True)"
)


@dataclass(frozen=True)
class _Uid1000Python:
    """An interpreter uid 1000 can run, and the bind mounts (source, target) that make its packages reachable."""

    python: str
    binds: tuple[tuple[str, str], ...] = ()

    def in_namespace(self, command: str) -> str:
        """``command`` prefixed with this interpreter's bind mounts, for ``bash -c`` in a private mount namespace."""
        mounts = [f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in self.binds]
        return " && ".join([*mounts, command])


def _runs_as_uid_1000(candidate: _Uid1000Python) -> bool:
    drop = f"setpriv --reuid={UID} --regid={UID} --clear-groups {shlex.quote(candidate.python)} -c {shlex.quote(_PROBE)}"
    argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", candidate.in_namespace(drop)]
    return subprocess.run(argv, capture_output=True).returncode == 0


def _reachable_by_uid_1000(path: str) -> bool:
    probe = [
        "setpriv",
        f"--reuid={UID}",
        f"--regid={UID}",
        "--clear-groups",
        "test",
        "-r",
        path,
        "-a",
        "-x",
        path,
    ]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _package_folders() -> list[str]:
    """sys.path less this Python's standard library (the system Python brings its own): site-packages
    (also a non-venv Python's, which lies under its prefix), the source tree, pytest's additions."""
    packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    stdlib = tuple(sysconfig.get_path(name) for name in ("stdlib", "platstdlib"))

    def is_stdlib(path: str) -> bool:
        inside = any(path == lib or path.startswith(lib + os.sep) for lib in stdlib)
        return (inside and path not in packages) or path.endswith(".zip")

    return [path for path in sys.path if path and Path(path).is_dir() and not is_stdlib(path)]


def _python_for_uid_1000(root: Path) -> _Uid1000Python:
    """This interpreter, or (when it or its packages live where uid 1000 cannot go, e.g. pyenv under a 0700
    /root) a venv of the system's Python of the same minor that sees the same package folders: each one uid
    1000 cannot reach is bind-mounted (in the run's private mount namespace) onto an empty folder it can."""
    own = _Uid1000Python(sys.executable)
    if _runs_as_uid_1000(own):
        return own
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = next(
        (p for p in (f"/usr/bin/{minor}", f"/usr/local/bin/{minor}") if os.access(p, os.X_OK)), None
    )
    if system is None:
        pytest.skip(f"needs a {minor} that uid {UID} can run (this one is not reachable by it)")
    venv = root / "venv-uid-1000"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_dirs: list[str] = []
    binds: list[tuple[str, str]] = []
    for index, path in enumerate(_package_folders()):
        if _reachable_by_uid_1000(path):
            site_dirs.append(path)
            continue
        target = root / f"packages-{index}"
        target.mkdir()
        binds.append((path, str(target)))
        site_dirs.append(str(target))
    # addsitedir, not a bare path: the folders' own .pth files (an editable install's among them) count too.
    lines = [f"import site; site.addsitedir({path!r})" for path in site_dirs]
    (venv / "lib" / minor / "site-packages" / "zr4-test.pth").write_text("\n".join(lines) + "\n")
    candidate = _Uid1000Python(str(venv / "bin" / "python"), tuple(binds))
    if not _runs_as_uid_1000(candidate):
        pytest.skip(f"needs zr4 and its dependencies readable by uid {UID}")
    return candidate


def _identity_files(root: Path, home: Path) -> tuple[Path, Path]:
    """The machine's passwd/group with uid/gid 1000 replaced by the image's user (ubuntu 24.04 has one)."""
    passwd = [
        line for line in Path("/etc/passwd").read_text().splitlines() if line.split(":")[2:3] != [str(UID)]
    ]
    group = [
        line for line in Path("/etc/group").read_text().splitlines() if line.split(":")[2:3] != [str(UID)]
    ]
    passwd.append(f"{USER}:x:{UID}:{UID}::{home}:/bin/bash")
    group.append(f"{USER}:x:{UID}:")
    (root / "passwd").write_text("\n".join(passwd) + "\n")
    (root / "group").write_text("\n".join(group) + "\n")
    return root / "passwd", root / "group"


def _owner(path: Path) -> tuple[int, int]:
    status = path.lstat()
    return status.st_uid, status.st_gid


def test_root_start_prepares_only_zr4_folders_and_runs_comfyui_as_uid_1000(root_dir: Path) -> None:
    # The volume as RunPod mounts it: root-owned, 0755, with a file of the user's that is not zr4's.
    volume = root_dir / "workspace"
    (volume / "mine").mkdir(parents=True)
    volume.chmod(0o755)
    (volume / "mine" / "notes.txt").write_text("not zr4's")
    # What an older image (that ran as root) left behind: models, and the auth token in a root-owned
    # .zr4/; zr4's folders must become the user's, the token must stay the same.
    (volume / "models" / "vae").mkdir(parents=True)
    (volume / "models" / "vae" / "old.safetensors").write_bytes(b"x" * 16)
    (volume / ".zr4" / "auth").mkdir(parents=True)
    (volume / ".zr4" / "auth" / "token").write_text("zr4-token-from-an-older-image-0123456789\n")
    (volume / ".zr4" / "auth" / "token").chmod(0o600)
    assert _owner(volume) == (0, 0)

    # The image: ComfyUI owned by the user (COPY --chown), the user's home, start.sh as rendered.
    comfyui = root_dir / "opt" / "ComfyUI"
    (comfyui / "models").mkdir(parents=True)
    (comfyui / "custom_nodes").mkdir()
    shutil.copy(SUPPORT / "fake_comfyui.py", comfyui / "main.py")
    home = root_dir / "home" / USER
    home.mkdir(parents=True)
    state = root_dir / "comfyui-state"
    state.mkdir()
    for path in (comfyui, *comfyui.rglob("*"), home, state):
        os.lchown(path, UID, UID)
    profile = load_profile("4080super", ["features.pose_backend=onnx", "model.variant=gguf"])
    files = {item.path: item.content for item in render_files(profile)}
    start_sh = root_dir / "start.sh"
    start_sh.write_bytes(files["start.sh"])
    start_sh.chmod(0o755)
    (root_dir / "profile.json").write_text(profile.model_dump_json(), encoding="utf-8")
    passwd, group = _identity_files(root_dir, home)
    python = _python_for_uid_1000(root_dir)

    # Not writable by uid 1000 before the start: the problem the root start solves.
    probe = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "touch", str(volume / "probe")],
        capture_output=True,
    )
    assert probe.returncode != 0 and not (volume / "probe").exists()

    env = {
        "PATH": os.environ["PATH"],
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        "PYTHONUNBUFFERED": "1",
        "ZR4_USER": USER,
        "ZR4_PYTHON": python.python,
        "COMFYUI_DIR": str(comfyui),
        "COMFYUI_PYTHON": python.python,
        "ZR4_PROFILE": str(root_dir / "profile.json"),
        "MODELS_DIR": str(volume / "models"),
        "OUTPUT_DIR": str(volume / "outputs"),
        "R2_SYNC_STATE_DIR": str(volume / ".zr4" / "sync"),
        "ZR4_AUTH_DIR": str(volume / ".zr4" / "auth"),
        "ZR4_BOOT_STATUS": str(state / "boot-status.json"),
        "SKIP_MODEL_DOWNLOAD": "true",
        "ENABLE_R2_SYNC": "false",
        "ENABLE_DWPOSE": "false",
        "FAKE_COMFYUI_STATE": str(state),
        "FAKE_COMFYUI_EXIT_AFTER": "1",
        "FAKE_COMFYUI_EXIT_CODE": "0",
    }
    script = python.in_namespace('mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && exec "$3"')
    run = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
            "_",
            passwd,
            group,
            start_sh,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    # The volume itself and the user's own files are untouched.
    assert _owner(volume) == (0, 0) and stat.S_IMODE(volume.stat().st_mode) == 0o755
    assert _owner(volume / "mine") == (0, 0) and _owner(volume / "mine" / "notes.txt") == (0, 0)
    # zr4's folders (models with the old root-owned files, outputs, sync state, auth) are the user's.
    for folder in (
        "models",
        "models/vae",
        "models/vae/old.safetensors",
        "outputs",
        ".zr4/sync",
        ".zr4/auth",
    ):
        assert _owner(volume / folder) == (UID, UID), (folder, output)
    assert _owner(volume / ".zr4") == (0, 0)  # it existed before: not zr4's to take
    assert f"owned by {UID}:{UID}" in output
    # Everything after the drop ran as uid 1000: ComfyUI's own files, its output, the generated token.
    assert _owner(state / "argv.json") == (UID, UID), output
    assert _owner(volume / "outputs" / "ComfyUI_00001_.png") == (UID, UID), output
    token = volume / ".zr4" / "auth" / "token"
    assert _owner(token) == (UID, UID) and stat.S_IMODE(token.stat().st_mode) == 0o600, output
    assert token.read_text() == "zr4-token-from-an-older-image-0123456789\n"  # read, not replaced
    assert _owner(comfyui / "extra_model_paths.yaml") == (UID, UID), output
    assert not (volume / "probe").exists()
