"""Build the rendered Dockerfile for real with buildah, replacing only what this machine cannot reach.

Why: a Dockerfile that lints and renders can still fail at its first RUN; the image is only proven
by building every stage to the final one and booting it. Machines without GitHub, Docker Hub or
ghcr.io (CI included) cannot pull the base images nor fetch the pinned sources, so this script
builds local stand-ins under the exact names the Dockerfile uses and feeds the Dockerfile's own
hermetic switches (build ARGs whose defaults are the real sources; a user's build never sets them):

* ``nvidia/cuda:*-devel-*`` / ``*-runtime-*``: Debian (``--suite``, default trixie) made with
  debootstrap from Debian's archive. Ubuntu's archive is unreachable here, so the stand-ins are
  Debian, not Ubuntu. The devel stand-in adds Debian's ``nvidia-cuda-toolkit`` (non-free), which is
  CUDA 12.4.1 (nvcc 12.4.131) in trixie, the release of the real devel image; PyPI's
  ``nvidia-cuda-nvcc-cu12==12.4.131`` wheel ships only ptxas, not nvcc.
* ``ghcr.io/astral-sh/uv:<v>``: ``FROM scratch`` with ``/uv`` and ``/uvx`` from PyPI's ``uv`` wheel.
* ``PYTHON_SOURCE=local``: CPython compiled from the upstream source tarball of Debian's
  ``python3.<minor>`` source package, installed at the managed-Python path with its non-glibc
  libraries bundled (rpath ``$ORIGIN``), i.e. relocatable like python-build-standalone.
* ``COMFYUI_SOURCE=local``: the pinned ComfyUI and custom nodes laid out by ``bench/sources.py``.
* ``FLASH_ATTN_SOURCE=local``: a STAND-IN wheel with the release file name whose ``flash_attn``
  package only imports (there is no GPU here and the release wheel is on GitHub).
* ``MMCV_SOURCE=local`` (``--mmcv-wheel``): a wheel an earlier run of this script compiled.

PyPI is reached from inside the build with this machine's CA bundle (its TLS is intercepted),
passed as the Dockerfile's optional build secrets (``build-ca``, ``uv-config``, ``pip-config``), so
it is never part of a layer.

Everything goes to a private buildah store under ``--cache`` (never the machine's shared one).

Usage:
    python bench/build_image.py --sources .cache/sources [--target runtime] [--boot]
        [--mmcv-wheel PATH] [--record bench/results/build.md]
    python bench/build_image.py --light --target zr4-venv --smoke   # CI: no CUDA toolkit
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STANDIN_BASE = "localhost/zr4-standin/debian"


@dataclass
class Timings:
    """Wall-clock seconds of each step, in order, for the record."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    def run(self, name: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        print(f"== {name}", flush=True)
        result = func(*args, **kwargs)
        self.steps.append((name, time.monotonic() - start))
        print(f"== {name}: {self.steps[-1][1]:.0f} s", flush=True)
        return result


class Buildah:
    """buildah against a private store, so nothing here touches other users' images."""

    def __init__(self, cache: Path) -> None:
        self.root = cache / "storage"
        self.runroot = cache / "run"
        self.base = [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
        ]

    def __call__(self, *args: str, capture: bool = False, check: bool = True) -> str:
        cmd = [*self.base, *args]
        if capture:
            done = subprocess.run(cmd, check=check, text=True, stdout=subprocess.PIPE)
            return done.stdout.strip()
        subprocess.run(cmd, check=check)
        return ""

    def exists(self, image: str) -> bool:
        done = subprocess.run(
            [*self.base, "inspect", "--type", "image", image],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return done.returncode == 0


def run(cmd: list[str], **kwargs) -> None:  # type: ignore[no-untyped-def]
    print("+ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


# ---------------------------------------------------------------- what the Dockerfile asks for


@dataclass(frozen=True)
class Wanted:
    """The external things a rendered Dockerfile names, read from its text."""

    uv_image: str
    uv_version: str
    devel_image: str
    runtime_image: str
    python: str
    python_dir: str
    flash_attn_url: str | None


def read_dockerfile(path: Path) -> Wanted:
    """Parse the base images, the managed Python pin and the flash-attn URL out of the Dockerfile."""
    text = path.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    uv = next(f for f in froms if f.startswith("ghcr.io/astral-sh/uv:"))
    devel = next(f for f in froms if f.startswith("nvidia/cuda:") and "-devel-" in f)
    runtime = next(f for f in froms if f.startswith("nvidia/cuda:") and "-runtime-" in f)
    python = re.search(r"uv python install (\S+)", text)
    python_dir = re.search(r"UV_PYTHON_INSTALL_DIR=(\S+)", text)
    flash = re.search(r"(https://github\.com/Dao-AILab/flash-attention/\S+\.whl)", text)
    if not python or not python_dir:
        raise SystemExit(f"{path}: no `uv python install` / UV_PYTHON_INSTALL_DIR found")
    return Wanted(
        uv_image=uv,
        uv_version=uv.split(":", 1)[1],
        devel_image=devel,
        runtime_image=runtime,
        python=python.group(1),
        python_dir=python_dir.group(1).rstrip("\\").strip(),
        flash_attn_url=flash.group(1) if flash else None,
    )


def qualified(image: str) -> str:
    """The name buildah stores a short Docker Hub name under."""
    first = image.split("/", 1)[0]
    if "." in first or (":" in first.split("@")[0] and "/" in image):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


# ---------------------------------------------------------------- stand-in base images


def debootstrap(cache: Path, suite: str) -> Path:
    """A minbase Debian root (main, contrib, non-free), made once and kept under the cache."""
    rootfs = cache / f"rootfs-{suite}"
    if (rootfs / "etc" / "os-release").exists():
        return rootfs
    partial = cache / f"rootfs-{suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            "--components=main,contrib,non-free",
            suite,
            str(partial),
            DEBIAN_MIRROR,
        ]
    )
    partial.rename(rootfs)
    return rootfs


def base_image(b: Buildah, cache: Path, suite: str) -> str:
    """The Debian root as an image (a single layer), tagged under zr4-standin."""
    tag = f"{STANDIN_BASE}:{suite}"
    if b.exists(tag):
        return tag
    rootfs = debootstrap(cache, suite)
    ctr = b("from", "scratch", capture=True)
    mnt = b("mount", ctr, capture=True)
    run(["cp", "-a", f"{rootfs}/.", mnt])
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (Path(mnt) / junk).glob("*"):
            if item.is_file():
                item.unlink()
    b("umount", ctr)
    b(
        "config",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--cmd",
        "/bin/bash",
        "--label",
        f"io.zr4.standin=debootstrap {suite} from Debian's archive",
        ctr,
    )
    b("commit", "--format", "docker", "--rm", ctr, tag)
    return tag


def runtime_standin(b: Buildah, base: str, wanted: Wanted) -> None:
    """The runtime base: plain Debian (torch brings its own CUDA runtime libraries from PyPI)."""
    name = qualified(wanted.runtime_image)
    if not b.exists(name):
        b("tag", base, name)


def devel_standin(b: Buildah, base: str, wanted: Wanted, light: bool) -> None:
    """The devel base: Debian plus Debian's CUDA 12.4.1 toolkit, or plain Debian with --light."""
    name = qualified(wanted.devel_image)
    if b.exists(name):
        return
    if light:
        b("tag", base, name)
        return
    ctr = b("from", "--pull-never", base, capture=True)
    b(
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "bash",
        "-euo",
        "pipefail",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends nvidia-cuda-toolkit nvidia-cuda-toolkit-gcc >/dev/null && nvcc --version "
        "&& rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb",
    )
    b("config", "--label", "io.zr4.standin=Debian nvidia-cuda-toolkit (non-free)", ctr)
    b("commit", "--format", "docker", "--rm", ctr, name)


def pip_download(dest: Path, requirement: str) -> Path:
    """One wheel from PyPI into dest (kept: re-runs do not download again)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(dest.glob(f"{name}-{version}-*.whl"))
    if not found:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux2014_x86_64", "-d", str(dest), requirement])
        found = sorted(dest.glob(f"{name}-{version}-*.whl"))
    return found[0]


def uv_standin(b: Buildah, cache: Path, wanted: Wanted) -> None:
    """ghcr.io/astral-sh/uv:<v> rebuilt FROM scratch with /uv and /uvx from PyPI's uv wheel."""
    name = wanted.uv_image
    if b.exists(name):
        return
    wheel = pip_download(cache / "wheels", f"uv=={wanted.uv_version}")
    out = cache / "uv-bin"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if re.search(r"\.data/scripts/uvx?$", member):
                target = out / Path(member).name
                target.write_bytes(zf.read(member))
                target.chmod(0o755)
    ctr = b("from", "scratch", capture=True)
    b("copy", ctr, str(out / "uv"), str(out / "uvx"), "/")
    b("config", "--entrypoint", '["/uv"]', "--label", "io.zr4.standin=uv from PyPI", ctr)
    b("commit", "--format", "docker", "--rm", ctr, name)


# ---------------------------------------------------------------- local CPython (PYTHON_SOURCE=local)


def debian_python_source(cache: Path, minor: str, suite: str) -> tuple[str, Path]:
    """The upstream CPython tarball of Debian's python<minor> source package: (version, path)."""
    suites = [suite, "bookworm"] if suite != "bookworm" else [suite]
    for candidate in suites:
        index = cache / f"Sources-{candidate}"
        if not index.exists():
            data = subprocess.run(
                ["curl", "-fsS", f"{DEBIAN_MIRROR}/dists/{candidate}/main/source/Sources.xz"],
                check=True,
                stdout=subprocess.PIPE,
            ).stdout
            index.write_bytes(subprocess.run(["xz", "-d"], input=data, check=True, stdout=subprocess.PIPE).stdout)
        stanza = re.search(
            rf"^Package: python{re.escape(minor)}\n(.*?)(?:\n\n|\Z)", index.read_text(), flags=re.M | re.S
        )
        if not stanza:
            continue
        body = stanza.group(1)
        directory = re.search(r"^Directory: (\S+)", body, flags=re.M)
        orig = re.search(r"^ ([0-9a-f]{32}) \d+ (python\S+?_([0-9.]+)\.orig\.tar\.\w+)$", body, flags=re.M)
        if not directory or not orig:
            continue
        md5, filename, version = orig.groups()
        path = cache / filename
        if not path.exists():
            run(["curl", "-fsS", "-o", str(path), f"{DEBIAN_MIRROR}/{directory.group(1)}/{filename}"])
        if hashlib.md5(path.read_bytes()).hexdigest() != md5:
            raise SystemExit(f"{path}: checksum differs from Debian's Sources index")
        return version, path
    raise SystemExit(f"no python{minor} source package in Debian's {' or '.join(suites)}")


PYTHON_BUILD = r"""
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  build-essential pkg-config patchelf xz-utils libssl-dev zlib1g-dev libbz2-dev liblzma-dev \
  libffi-dev libsqlite3-dev uuid-dev libncurses-dev libreadline-dev libgdbm-dev >/dev/null
rm -rf /tmp/cpython && mkdir -p /tmp/cpython && tar -xf /work/"$TARBALL" -C /tmp/cpython --strip-components=1
cd /tmp/cpython
./configure -q --prefix="$PREFIX" --with-ensurepip=install LDFLAGS='-Wl,-rpath,\$$ORIGIN/../lib' >/dev/null
make -s -j"$(nproc)" >/dev/null 2>/tmp/cpython-make.log || { tail -50 /tmp/cpython-make.log; exit 1; }
make -s install >/dev/null 2>&1
rm -rf /work/python-local.partial && mkdir -p /work/python-local.partial
cp -a "$PREFIX" /work/python-local.partial/
"""


# Bundle every shared library outside glibc into lib/ (rpath $ORIGIN), as python-build-standalone
# is self-contained: the runtime base needs none of the -dev packages' libraries.
PYTHON_BUNDLE = r"""
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends patchelf libssl3t64 \
  libffi8 libsqlite3-0 libreadline8t64 libncursesw6 libgdbm6t64 libuuid1 libbz2-1.0 liblzma5 zlib1g >/dev/null
tree="/work/python-local/$DIRNAME"
for elf in "$tree"/bin/python3.* $(find "$tree/lib" -name '*.so*' -type f); do
  if ldd "$elf" >/tmp/deps 2>/dev/null; then
    awk '/=> \//{print $3}' /tmp/deps | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|ld-linux*|libgcc_s.so*) ;;
        *) [ -e "$tree/lib/$(basename "$lib")" ] || cp -L "$lib" "$tree/lib/" ;;
      esac
    done
  fi
done
for elf in $(find "$tree/lib" -name '*.so*' -type f); do
  case "$elf" in
    "$tree"/lib/python*/lib-dynload/*) patchelf --set-rpath '$ORIGIN/../..' "$elf" ;;
    *) patchelf --set-rpath '$ORIGIN' "$elf" ;;
  esac
done
for exe in "$tree"/bin/python3.*; do
  if ldd "$exe" >/dev/null 2>&1; then patchelf --set-rpath '$ORIGIN/../lib' "$exe"; fi
done
"""

# What a stand-in runtime base must be able to import from the tree alone.
PYTHON_CHECK = (
    "import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, readline, dbm.gnu, curses; print(ssl.OPENSSL_VERSION)"
)


def local_python(b: Buildah, cache: Path, base: str, wanted: Wanted, suite: str) -> Path:
    """A relocatable CPython at the managed-Python path, matching the Dockerfile's pin."""
    minor = ".".join(wanted.python.split(".")[:2])
    version, tarball = debian_python_source(cache, minor, suite)
    if wanted.python.count(".") == 2 and wanted.python != version:
        raise SystemExit(
            f"the Dockerfile pins Python {wanted.python}, but Debian's archive has only {version}: "
            "no local CPython of the pinned version can be built here"
        )
    out = cache / "python-local"
    dirname = f"cpython-{version}-linux-x86_64-gnu"
    if (out / dirname / "bin" / "python3").exists():
        return out
    prefix = f"{wanted.python_dir}/{dirname}"
    ctr = b("from", "--pull-never", base, capture=True)
    try:
        b("run", "--isolation", "chroot", "-v", f"{cache}:/work", "--env", f"TARBALL={tarball.name}",
          "--env", f"PREFIX={prefix}", ctr, "--", "bash", "-c", PYTHON_BUILD.replace("$$", "$"))
    finally:
        b("rm", ctr)
    shutil.rmtree(out, ignore_errors=True)
    (cache / "python-local.partial").rename(out)
    bundle_python(b, cache, base, dirname)
    return out


def bundle_python(b: Buildah, cache: Path, base: str, dirname: str) -> None:
    """Make the tree self-contained, then prove it imports its C modules on the bare base."""
    ctr = b("from", "--pull-never", base, capture=True)
    try:
        b("run", "--isolation", "chroot", "-v", f"{cache}:/work", "--env", f"DIRNAME={dirname}", ctr,
          "--", "bash", "-c", PYTHON_BUNDLE)
    finally:
        b("rm", ctr)
    bare = b("from", "--pull-never", base, capture=True)
    try:
        b("run", "--isolation", "chroot", "-v", f"{cache / 'python-local' / dirname}:/opt/check-python:ro", bare,
          "--", "/opt/check-python/bin/python3", "-c", PYTHON_CHECK)
    finally:
        b("rm", bare)


# ---------------------------------------------------------------- flash-attn stand-in wheel


def flash_attn_standin(cache: Path, url: str) -> Path:
    """A wheel with the release file name whose flash_attn package imports and says it is a stand-in."""
    filename = url.rsplit("/", 1)[1]
    version = filename.split("-")[1]
    out = cache / "flash-attn-local"
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / filename.replace("%2B", "+")
    if wheel.exists():
        return out
    dist = f"flash_attn-{version}.dist-info"
    files = {
        "flash_attn/__init__.py": (
            '"""STAND-IN for flash-attn (hermetic build without GitHub and without a GPU): imports only."""\n'
            f'__version__ = "{version.split("+")[0]}"\n'
            "STANDIN = True\n\n\n"
            "def flash_attn_func(*args, **kwargs):  # noqa: D103\n"
            '    raise RuntimeError("flash-attn stand-in: the real wheel was not installed in this build")\n'
        ),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: flash_attn\nVersion: {version}\n"
        "Summary: STAND-IN built by zr4 bench/build_image.py\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: zr4-bench\nRoot-Is-Purelib: false\n"
        f"Tag: {'-'.join(filename[:-4].split('-')[2:])}\n",
        f"{dist}/top_level.txt": "flash_attn\n",
    }
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
            zf.writestr(name, data)
        record.append(f"{dist}/RECORD,,")
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return out


# ---------------------------------------------------------------- CA bundle for PyPI, never in a layer


def ca_secrets(cache: Path) -> list[str]:
    """The Dockerfile's optional build secrets: this machine's CA bundle and configs that make uv/pip use it."""
    bundle = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    conf = cache / "ca"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "uv.toml").write_text("system-certs = true\n")
    (conf / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/zr4-build-ca.crt\n")
    return [
        "--secret", f"id=build-ca,src={bundle}",
        "--secret", f"id=uv-config,src={conf / 'uv.toml'}",
        "--secret", f"id=pip-config,src={conf / 'pip.conf'}",
    ]


# ---------------------------------------------------------------- the build


STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] STEP (\d+)/(\d+): (.*)$")


@dataclass
class StageLog:
    """When each stage's first step started, read from buildah's own progress lines."""

    order: list[str] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    cached_steps: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)


def stage_name(line: str, index: str) -> str:
    """`FROM image AS name` -> name; a stage without a name keeps its index."""
    match = re.search(r"\bAS\s+(\S+)\s*$", line, flags=re.I)
    return match.group(1) if match else f"stage {index}"


def build(
    b: Buildah,
    context: Path,
    target: str,
    tag: str,
    contexts: dict[str, Path],
    build_args: dict[str, str],
    cache: Path,
    log_path: Path,
) -> tuple[StageLog, int, list[str]]:
    """buildah build of one target; every line goes to the log with its time since the start."""
    cmd = [
        *b.base, "build", "--format", "docker", "--isolation", "chroot", "--layers", "--pull-never",
        "--target", target, "-t", tag, "-f", str(context / "Dockerfile"),
    ]
    for name, path in sorted(contexts.items()):
        cmd += ["--build-context", f"{name}={path}"]
    for name, value in sorted(build_args.items()):
        cmd += ["--build-arg", f"{name}={value}"]
    cmd += ca_secrets(cache)
    cmd.append(str(context))
    stages = StageLog()
    start = time.monotonic()
    current = ""
    print("+ " + shlex.join(cmd), flush=True)
    with log_path.open("w") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - start
            log.write(f"{now:8.1f} {line}")
            log.flush()
            match = STEP_LINE.match(line.rstrip("\n"))
            if match:
                index, _, step, _, text = match.groups()
                if step == "1":
                    current = stage_name(text, index)
                    if current in stages.started:  # a stage name repeats only for unnamed stages
                        current = f"{current} ({index})"
                    if stages.order:
                        stages.ended[stages.order[-1]] = now
                    stages.order.append(current)
                    stages.started[current] = now
                    stages.steps[current] = 0
                    stages.cached_steps[current] = 0
                stages.steps[current] = stages.steps.get(current, 0) + 1
                print(f"{now:8.1f} {line}", end="", flush=True)
            elif line.startswith("--> Using cache") and current:
                stages.cached_steps[current] = stages.cached_steps.get(current, 0) + 1
            elif line.startswith(("Error", "error")) or "exit status" in line:
                print(f"{now:8.1f} {line}", end="", flush=True)
        code = proc.wait()
    if stages.order:
        stages.ended[stages.order[-1]] = time.monotonic() - start
    return stages, code, cmd


def layer_sizes(b: Buildah, image: str) -> list[tuple[str, int]]:
    """(history line, uncompressed bytes) of each layer of the image, from the store's layer index."""
    info = json.loads(b("inspect", "--type", "image", image, capture=True))
    diff_ids = info["Docker"]["rootfs"]["diff_ids"]
    history = [h for h in info["Docker"].get("history", []) if not h.get("empty_layer")]
    layers = json.loads((b.root / "overlay-layers" / "layers.json").read_text())
    size_of = {layer.get("diff-digest"): layer.get("diff-size", 0) for layer in layers}
    rows = []
    for index, digest in enumerate(diff_ids):
        created_by = history[index].get("created_by", "") if index < len(history) else ""
        rows.append((created_by, int(size_of.get(digest, 0))))
    return rows
# ---------------------------------------------------------------- boot through the entrypoint


@dataclass
class BootResult:
    """What the first boot printed and what `zr4 health` answered once ComfyUI was up."""

    ok: bool
    seconds: float
    health: str
    command: list[str]


def boot(b: Buildah, image: str, port: int, timeout_s: float, log_path: Path) -> BootResult:
    """Start the image through its ENTRYPOINT (as its USER) on the CPU; poll `zr4 health` inside it."""
    info = json.loads(b("inspect", "--type", "image", image, capture=True))
    config = info["Docker"]["config"]
    entrypoint = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    ctr = b("from", "--pull-never", image, capture=True)
    env = ["-e", "SKIP_MODEL_DOWNLOAD=true", "-e", f"COMFYUI_PORT={port}"]
    cmd = [*b.base, "run", "--isolation", "chroot", *env, ctr, "--", *entrypoint]
    health_cmd = [*b.base, "run", "--isolation", "chroot", *env, ctr, "--", "zr4", "health"]
    start = time.monotonic()
    answer = ""
    ok = False
    print("+ " + shlex.join(cmd), flush=True)
    with log_path.open("w") as log, subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    ) as proc:
        try:
            while time.monotonic() - start < timeout_s and proc.poll() is None:
                time.sleep(5)
                done = subprocess.run(health_cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                answer = done.stdout.strip()
                if done.returncode == 0:
                    ok = True
                    break
        finally:
            seconds = time.monotonic() - start
            if proc.poll() is None:
                os.killpg(proc.pid, 15)  # tini forwards SIGTERM: the start's own shutdown path
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
    b("rm", ctr)
    if not ok and not answer:
        answer = f"the entrypoint exited with {proc.returncode} before ComfyUI answered"
    return BootResult(ok, seconds, answer, cmd)


def doctor_output(log_path: Path) -> str:
    """The build-time doctor's report, cut out of the build log."""
    lines = log_path.read_text().splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        text = line[9:] if len(line) > 9 else ""
        if "zr4 doctor --build-time" in text and "STEP" in text:
            inside = True
            continue
        if inside and (STEP_LINE.match(text) or text.startswith(("--> ", "COMMIT", "Getting image"))):
            break
        if inside:
            out.append(text)
    return "\n".join(out)


def standins(b: Buildah, cache: Path, wanted: Wanted, suite: str, light: bool, timings: Timings) -> Path:
    """Every stand-in the Dockerfile needs; returns the local CPython folder."""
    base = timings.run("stand-in: Debian base (debootstrap)", base_image, b, cache, suite)
    timings.run("stand-in: uv image", uv_standin, b, cache, wanted)
    timings.run("stand-in: runtime base", runtime_standin, b, base, wanted)
    timings.run("stand-in: devel base" + (" (light)" if light else " (CUDA toolkit)"),
                devel_standin, b, base, wanted, light)
    return timings.run("stand-in: local CPython", local_python, b, cache, base, wanted, suite)


def export_mmcv_wheel(b: Buildah, context: Path, cache: Path, contexts, build_args, log_dir: Path) -> Path | None:  # type: ignore[no-untyped-def]
    """Copy the wheel the mmcv stage compiled out of its (cached) image, for --mmcv-wheel re-runs."""
    if "AS mmcv-wheel" not in (context / "Dockerfile").read_text():
        return None
    tag = "localhost/zr4-build/mmcv-wheel:latest"
    _, code, _ = build(b, context, "mmcv-wheel", tag, contexts, build_args, cache, log_dir / "mmcv-export.log")
    if code != 0:
        return None
    out = cache / "mmcv-local"
    ctr = b("from", "--pull-never", tag, capture=True)
    try:
        mnt = Path(b("mount", ctr, capture=True))
        wheels = sorted((mnt / "wheels").glob("mmcv-*.whl"))
        if wheels:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            shutil.copy2(wheels[0], out / wheels[0].name)
        b("umount", ctr)
    finally:
        b("rm", ctr)
    return out if wheels else None


def smoke(b: Buildah, image: str, commands: list[list[str]]) -> list[tuple[str, int, str]]:
    """Run each command inside the image; (command, exit code, first lines of output)."""
    ctr = b("from", "--pull-never", image, capture=True)
    rows = []
    try:
        for command in commands:
            done = subprocess.run(
                [*b.base, "run", "--isolation", "chroot", ctr, "--", *command],
                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            head = "\n".join(done.stdout.strip().splitlines()[:6])
            print(f"$ {shlex.join(command)}  -> {done.returncode}\n{head}", flush=True)
            rows.append((shlex.join(command), done.returncode, head))
    finally:
        b("rm", ctr)
    return rows


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def record(
    path: Path,
    argv: list[str],
    timings: Timings,
    stages: StageLog,
    code: int,
    cmd: list[str],
    layers: list[tuple[str, int]],
    doctor: str,
    booted: BootResult | None,
    smokes: list[tuple[str, int, str]],
    notes: list[str],
) -> None:
    """Write the measurements as markdown (the file is replaced: one run, one record)."""
    total = sum(size for _, size in layers)
    out = [
        "# Real build of the rendered Dockerfile with buildah",
        "",
        "Produced by `bench/build_image.py` (its docstring says what is a stand-in and why).",
        "",
        "## Command",
        "",
        "```",
        "python bench/build_image.py " + shlex.join(argv),
        "```",
        "",
        "buildah invocation (store paths shortened to `$STORE`):",
        "",
        "```",
        shlex.join(cmd).replace(str(Path(cmd[2]).parent), "$STORE"),
        "```",
        "",
        f"Result: build exit code **{code}**" + (f"; boot: **{'healthy' if booted.ok else 'NOT healthy'}**" if booted else ""),
        "",
    ]
    out += [f"- {note}" for note in notes]
    out += ["", "## Stand-ins (cached between runs; 0 s = reused)", "", "| step | seconds |", "| --- | ---: |"]
    out += [f"| {name} | {secs:.0f} |" for name, secs in timings.steps]
    out += ["", "## Stages (in build order)", "", "| stage | seconds | steps | from cache |", "| --- | ---: | ---: | ---: |"]
    for name in stages.order:
        secs = stages.ended.get(name, 0.0) - stages.started[name]
        out.append(f"| {name} | {secs:.0f} | {stages.steps.get(name, 0)} | {stages.cached_steps.get(name, 0)} |")
    if layers:
        out += ["", "## Layers of the final image (uncompressed)", "", "| # | size | created by |", "| ---: | ---: | --- |"]
        for index, (created_by, size) in enumerate(layers, 1):
            short = created_by.replace("|", "\\|").replace("\n", " ")
            short = short if len(short) <= 160 else short[:157] + "..."
            out.append(f"| {index} | {human(size)} | `{short}` |")
        out += ["", f"**Image size: {human(total)}** uncompressed ({total:,} bytes; goal <= 12 GB)."]
    if doctor:
        out += ["", "## `zr4 doctor --build-time` (the Dockerfile's own RUN step)", "", "```", doctor, "```"]
    if booted:
        out += [
            "", "## Boot through the ENTRYPOINT on the CPU", "",
            f"{'Healthy' if booted.ok else 'Not healthy'} after {booted.seconds:.0f} s "
            "(SKIP_MODEL_DOWNLOAD=true: the Hub is unreachable here). `zr4 health` answered:", "",
            "```", booted.health, "```",
        ]
    if smokes:
        out += ["", "## Commands run inside the image", ""]
        for command, rc, head in smokes:
            out += [f"`{command}` -> exit {rc}", "", "```", head, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=Path, default=REPO_ROOT / "docker", help="rendered build context")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache" / "build")
    parser.add_argument("--sources", type=Path, default=None,
                        help="folder holding ComfyUI/ (bench/sources.py); default $ZR4_COMFYUI_SOURCES")
    parser.add_argument("--suite", default="trixie", help="Debian release of the stand-in bases")
    parser.add_argument("--light", action="store_true", help="devel stand-in without the CUDA toolkit (CI)")
    parser.add_argument("--target", default="runtime")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--mmcv-wheel", type=Path, default=None,
                        help="folder with the mmcv wheel an earlier run compiled (MMCV_SOURCE=local)")
    parser.add_argument("--boot", action="store_true", help="start the image and wait for `zr4 health`")
    parser.add_argument("--boot-timeout", type=float, default=900.0)
    parser.add_argument("--port", type=int, default=18188)
    parser.add_argument("--smoke", action="append", default=[], metavar="CMD",
                        help="a command to run inside the built image (repeatable)")
    parser.add_argument("--record", type=Path, default=None, help="write the measurements here (markdown)")
    parser.add_argument("--standins-only", action="store_true")
    args = parser.parse_args(argv)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    log_dir = cache / "logs"
    log_dir.mkdir(exist_ok=True)
    b = Buildah(cache)
    dockerfile = (args.context / "Dockerfile").read_text()
    wanted = read_dockerfile(args.context / "Dockerfile")
    timings = Timings()
    python_local = standins(b, cache, wanted, args.suite, args.light, timings)
    if args.standins_only:
        return 0

    contexts: dict[str, Path] = {"python-local": python_local}
    build_args = {"PYTHON_SOURCE": "local"}
    notes = [
        f"Base images: Debian {args.suite} stand-ins (debootstrap, Debian's archive) tagged "
        f"`{wanted.devel_image}` and `{wanted.runtime_image}`; Ubuntu's archive is unreachable here.",
        "Managed Python: CPython "
        + next(python_local.glob("cpython-*")).name.split("-")[1]
        + " compiled from the upstream tarball of Debian's source package (python-build-standalone is on GitHub).",
    ]
    if "COMFYUI_SOURCE" in dockerfile and args.target not in ("zr4-venv", "builder"):
        sources = args.sources or (Path(os.environ["ZR4_COMFYUI_SOURCES"]) if "ZR4_COMFYUI_SOURCES" in os.environ else None)
        if sources is None or not (sources / "ComfyUI" / "main.py").exists():
            parser.error("--sources (or ZR4_COMFYUI_SOURCES) must name a folder holding ComfyUI/: run bench/sources.py")
        contexts["comfyui-local"] = sources.resolve()
        build_args["COMFYUI_SOURCE"] = "local"
        notes.append("ComfyUI v0.7.0 and the pinned custom nodes: local trees from bench/sources.py (GitHub is unreachable).")
    if wanted.flash_attn_url and "FLASH_ATTN_SOURCE" in dockerfile:
        contexts["flash-attn-local"] = flash_attn_standin(cache, wanted.flash_attn_url)
        build_args["FLASH_ATTN_SOURCE"] = "local"
        notes.append("flash-attn is a STAND-IN wheel (same file name, `flash_attn` imports, no kernels): "
                     "the release wheel is on GitHub and there is no GPU here.")
    if args.mmcv_wheel:
        contexts["mmcv-local"] = args.mmcv_wheel.resolve()
        build_args["MMCV_SOURCE"] = "local"
        notes.append(f"mmcv: the wheel an earlier run of this script compiled ({next(args.mmcv_wheel.glob('*.whl')).name}).")
    elif "AS mmcv-wheel" in dockerfile:
        notes.append("mmcv: compiled for real in this run (CUDA ops, nvcc 12.4.131 of the devel stand-in).")
    if "COPY --from=zr4 " in dockerfile:
        contexts["zr4"] = REPO_ROOT
    tag = args.tag or f"localhost/zr4-build/{args.target}:latest"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    # Build from a snapshot: the checkout may change (a rebase, a re-render) during an hour-long build.
    snapshot = cache / "context"
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(args.context, snapshot, symlinks=True)
    args.context = snapshot
    log_path = log_dir / f"build-{args.target}-{stamp}.log"
    stages, code, cmd = timings.run(
        f"build --target {args.target}", build, b, args.context, args.target, tag, contexts, build_args, cache, log_path
    )
    print(f"build log: {log_path}", flush=True)
    layers = layer_sizes(b, tag) if code == 0 else []
    if code == 0 and not args.mmcv_wheel and args.target in ("runtime", "mmcv-wheel"):
        exported = export_mmcv_wheel(b, args.context, cache, contexts, build_args, log_dir)
        if exported:
            print(f"mmcv wheel kept for --mmcv-wheel: {exported}", flush=True)
    booted = None
    if code == 0 and args.boot:
        booted = timings.run("boot", boot, b, tag, args.port, args.boot_timeout, log_dir / f"boot-{stamp}.log")
        print(f"boot: {'healthy' if booted.ok else 'NOT healthy'}\n{booted.health}", flush=True)
    smokes = smoke(b, tag, [shlex.split(c) for c in args.smoke]) if code == 0 and args.smoke else []
    if args.record:
        record(args.record, argv, timings, stages, code, cmd, layers, doctor_output(log_path), booted, smokes, notes)
    failed = code != 0 or (booted is not None and not booted.ok) or any(rc != 0 for _, rc, _ in smokes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
