"""Local stand-ins for what a hermetic build of the rendered Dockerfile cannot fetch.

Why: machines without GitHub, Docker Hub or ghcr.io (CI included) cannot pull the base images nor
fetch python-build-standalone or the flash-attn release wheel. These functions make each one
locally, under the exact names the Dockerfile uses, from Debian's archive and PyPI only; the
Dockerfile's own switches (build ARGs whose defaults are the real sources) take the local files.
``bench/build_image.py`` says which stand-in replaces what, and records it next to its numbers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import re
import shlex
import shutil
import subprocess
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Ubuntu's archive over HTTPS: the Release files and the keyring package are checked through TLS.
UBUNTU_MIRROR = "https://archive.ubuntu.com/ubuntu"
UBUNTU_SUITES = ("jammy", "noble")  # the releases of the nvidia/cuda *-ubuntu22.04 / -ubuntu24.04 images
STANDIN_BASE = "localhost/zr4-standin/debian"


@dataclass(frozen=True)
class Distro:
    """Where a stand-in root comes from: Debian by default, Ubuntu for the CUDA images' own releases."""

    name: str
    mirror: str
    components: str
    image: str

    @staticmethod
    def of(suite: str) -> Distro:
        if suite in UBUNTU_SUITES:
            # universe holds tini and the other runtime packages; multiverse the CUDA toolkit.
            return Distro("Ubuntu", UBUNTU_MIRROR, "main,universe,multiverse", "localhost/zr4-standin/ubuntu")
        return Distro("Debian", DEBIAN_MIRROR, "main,contrib,non-free", STANDIN_BASE)


def archive_index(url: str) -> bytes:
    """An archive's xz-compressed index (Packages.xz, Sources.xz), fetched with curl and unpacked."""
    data = subprocess.run(["curl", "-fsS", url], check=True, stdout=subprocess.PIPE).stdout
    return lzma.decompress(data)


def ubuntu_keyring(cache: Path, suite: str) -> Path:
    """Ubuntu's archive keyring, from the ``ubuntu-keyring`` package of ``suite``.

    Debian's archive does not carry it. The package index is read over HTTPS and the .deb checked
    against the SHA256 the index gives, so the trust in the keyring is the trust in TLS to
    archive.ubuntu.com; debootstrap then checks every Release file with it.
    """
    keyring = cache / f"ubuntu-archive-keyring-{suite}.gpg"
    if keyring.exists():
        return keyring
    index = archive_index(f"{UBUNTU_MIRROR}/dists/{suite}/main/binary-amd64/Packages.xz").decode()
    stanza = next(
        (block for block in index.split("\n\n") if block.startswith("Package: ubuntu-keyring\n")), None
    )
    if stanza is None:
        raise SystemExit(f"no ubuntu-keyring package in {suite}'s main index")
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    deb = cache / Path(fields["Filename"]).name
    run(["curl", "-fsS", "-o", str(deb), f"{UBUNTU_MIRROR}/{fields['Filename']}"])
    if hashlib.sha256(deb.read_bytes()).hexdigest() != fields["SHA256"]:
        raise SystemExit(f"{deb.name}: sha256 differs from {suite}'s package index")
    unpacked = cache / f"ubuntu-keyring-{suite}"
    shutil.rmtree(unpacked, ignore_errors=True)
    run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    shutil.copy(unpacked / "usr" / "share" / "keyrings" / "ubuntu-archive-keyring.gpg", keyring)
    return keyring


class Buildah:
    """buildah against a private store, so nothing here touches other users' images.

    TMPDIR points into the cache too: buildah keeps RUN cache mounts (uv's and apt's caches, several
    GB) under it, by default in the machine-wide /var/tmp/buildah-cache.
    """

    def __init__(self, cache: Path) -> None:
        self.root = cache / "storage"
        self.runroot = cache / "run"
        self.tmp = cache / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.base = [
            "env",
            f"TMPDIR={self.tmp}",
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
    # The final stage's base: an nvidia/cuda flavor without compilers (base, runtime or cudnn-runtime).
    runtime = next(f for f in reversed(froms) if f.startswith("nvidia/cuda:") and "-devel-" not in f)
    # The pin is the default of the PYTHON_VERSION build ARG where the Dockerfile has one.
    python = re.search(r"^ARG PYTHON_VERSION=(\S+)", text, flags=re.M) or re.search(
        r"uv python install (\S+)", text
    )
    python_dir = re.search(r"UV_PYTHON_INSTALL_DIR=(\S+)", text)
    # The release wheel's URL is in the Dockerfile or, pinned with its sha256, in flash-attn.lock beside it.
    lock = path.parent / "flash-attn.lock"
    flash = re.search(
        r"(https://github\.com/Dao-AILab/flash-attention/\S+\.whl)",
        text + (lock.read_text() if lock.exists() else ""),
    )
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
    """A minbase root of ``suite`` (Debian: main, contrib, non-free; Ubuntu: main, universe,
    multiverse), made once and kept under the cache."""
    rootfs = cache / f"rootfs-{suite}"
    if (rootfs / "etc" / "os-release").exists():
        return rootfs
    distro = Distro.of(suite)
    keyring = [f"--keyring={ubuntu_keyring(cache, suite)}"] if distro.name == "Ubuntu" else []
    partial = cache / f"rootfs-{suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--components={distro.components}",
            *keyring,
            suite,
            str(partial),
            distro.mirror,
        ]
    )
    if distro.name == "Ubuntu":
        # What the Ubuntu images ship: plain HTTP (apt checks the signed Release files with the keyring;
        # a minbase root has no CA bundle), every component, and the release's -updates pocket.
        components = distro.components.replace(",", " ")
        mirror = distro.mirror.replace("https://", "http://", 1)
        (partial / "etc" / "apt" / "sources.list").write_text(
            f"deb {mirror} {suite} {components}\ndeb {mirror} {suite}-updates {components}\n"
        )
    partial.rename(rootfs)
    return rootfs


def base_image(b: Buildah, cache: Path, suite: str) -> str:
    """The debootstrapped root as an image (a single layer), tagged under zr4-standin."""
    distro = Distro.of(suite)
    tag = f"{distro.image}:{suite}"
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
        f"io.zr4.standin=debootstrap {suite} from {distro.name}'s archive",
        ctr,
    )
    b("commit", "--format", "docker", "--rm", ctr, tag)
    return tag


def runtime_standin(b: Buildah, base: str, wanted: Wanted) -> None:
    """The runtime base: the plain stand-in root, without any CUDA library, as the real ``base`` flavor
    is but for libcudart (torch brings CUDA and cuDNN from its nvidia-* wheels on PyPI)."""
    name = qualified(wanted.runtime_image)
    if not b.exists(name):
        b("tag", base, name)


def devel_standin(b: Buildah, base: str, wanted: Wanted, light: bool, distro: str = "Debian") -> None:
    """The devel base: the stand-in root plus its archive's CUDA toolkit (Debian trixie: 12.4.1), or the
    plain root with --light."""
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
    b("config", "--label", f"io.zr4.standin={distro} nvidia-cuda-toolkit", ctr)
    b("commit", "--format", "docker", "--rm", ctr, name)


def pypi_wheel(dest: Path, name: str, version: str) -> Path:
    """The manylinux x86_64 wheel of name==version from PyPI's simple index (PEP 691 JSON), sha256-checked.

    Read from the index directly (no pip needed, which a uv-made venv lacks); kept for re-runs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        f"https://pypi.org/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    prefix = f"{name.replace('-', '_')}-{version}-"
    wheel = next(
        f
        for f in files
        if f["filename"].startswith(prefix)
        and "manylinux" in f["filename"]
        and f["filename"].endswith("x86_64.whl")
    )
    path = dest / wheel["filename"]
    if not path.exists():
        print(f"+ download {wheel['url']}", flush=True)
        with urllib.request.urlopen(wheel["url"], timeout=300) as answer:
            data = answer.read()
        if hashlib.sha256(data).hexdigest() != wheel["hashes"]["sha256"]:
            raise SystemExit(f"{wheel['filename']}: sha256 differs from PyPI's")
        path.write_bytes(data)
    return path


def uv_standin(b: Buildah, cache: Path, wanted: Wanted) -> None:
    """ghcr.io/astral-sh/uv:<v> rebuilt FROM scratch with /uv and /uvx from PyPI's uv wheel."""
    name = wanted.uv_image
    if b.exists(name):
        return
    wheel = pypi_wheel(cache / "wheels", "uv", wanted.uv_version)
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
    # An Ubuntu stand-in still compiles Debian's source of CPython (the same upstream tarball).
    own = [suite] if Distro.of(suite).name == "Debian" else []
    suites = [*own, "bookworm"] if suite != "bookworm" else [suite]
    for candidate in suites:
        index = cache / f"Sources-{candidate}"
        if not index.exists():
            index.write_bytes(archive_index(f"{DEBIAN_MIRROR}/dists/{candidate}/main/source/Sources.xz"))
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
rm -rf /tmp/cpython && mkdir -p /tmp/cpython && tar -xf /standin/"$TARBALL" -C /tmp/cpython --strip-components=1
cd /tmp/cpython
./configure -q --prefix="$PREFIX" --with-ensurepip=install LDFLAGS='-Wl,-rpath,\$$ORIGIN/../lib' >/dev/null
make -s -j"$(nproc)" >/dev/null 2>/tmp/cpython-make.log || { tail -50 /tmp/cpython-make.log; exit 1; }
make -s install >/dev/null 2>&1
rm -rf /standin/python-local.partial && mkdir -p /standin/python-local.partial
cp -a "$PREFIX" /standin/python-local.partial/
"""


# Bundle every shared library outside glibc into lib/ (rpath $ORIGIN), as python-build-standalone
# is self-contained: the runtime base needs none of the -dev packages' libraries.
PYTHON_BUNDLE = r"""
set -euo pipefail
apt-get update -qq
# The first name the archive has: Debian trixie renamed these in its 64-bit time_t transition (t64).
pick() { for name; do apt-cache show "$name" >/dev/null 2>&1 && { echo "$name"; return; }; done; echo "$1"; }
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends patchelf \
  "$(pick libssl3t64 libssl3)" libffi8 libsqlite3-0 "$(pick libreadline8t64 libreadline8)" libncursesw6 \
  "$(pick libgdbm6t64 libgdbm6)" libuuid1 libbz2-1.0 liblzma5 zlib1g >/dev/null
tree="/standin/python-local/$DIRNAME"
{ printf '%s\0' "$tree"/bin/python3.*; find "$tree/lib" -name '*.so*' -type f -print0; } |
while IFS= read -r -d '' elf; do
  if ldd "$elf" >/tmp/deps 2>/dev/null; then
    awk '/=> \//{print $3}' /tmp/deps | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|ld-linux*|libgcc_s.so*) ;;
        *) [ -e "$tree/lib/$(basename "$lib")" ] || cp -L "$lib" "$tree/lib/" ;;
      esac
    done
  fi
done
find "$tree/lib" -name '*.so*' -type f -print0 | while IFS= read -r -d '' elf; do
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
PYTHON_CHECK = "import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, readline, dbm.gnu, curses; print(ssl.OPENSSL_VERSION)"


@dataclass(frozen=True)
class LocalPython:
    """The folder for the "python-local" named context, and the CPython version it holds."""

    folder: Path
    version: str


def local_python(b: Buildah, cache: Path, base: str, wanted: Wanted, suite: str) -> LocalPython:
    """A relocatable CPython at the managed-Python path, compiled from Debian's source of it.

    The pinned patch release where Debian's archive has it; otherwise the release Debian has for
    the same minor version, which the caller must pass as the Dockerfile's PYTHON_VERSION (and say so).
    """
    minor = ".".join(wanted.python.split(".")[:2])
    version, tarball = debian_python_source(cache, minor, suite)
    out = cache / "python-local"
    dirname = f"cpython-{version}-linux-x86_64-gnu"
    # Written only once the tree is bundled and imported its C modules on the bare base: a run stopped
    # between compiling and bundling must not leave a tree that later runs take as finished.
    bundled = cache / f"python-local-{dirname}.bundled"
    if (out / dirname / "bin" / "python3").exists():
        if not bundled.exists():
            bundle_python(b, cache, base, dirname)
            bundled.touch()
        return LocalPython(out, version)
    prefix = f"{wanted.python_dir}/{dirname}"
    run_throwaway(
        b,
        base,
        ["bash", "-c", PYTHON_BUILD.replace("$$", "$")],
        volumes=[f"{cache}:/standin"],
        env={"TARBALL": tarball.name, "PREFIX": prefix},
    )
    shutil.rmtree(out, ignore_errors=True)
    (cache / "python-local.partial").rename(out)
    bundle_python(b, cache, base, dirname)
    bundled.touch()
    return LocalPython(out, version)


def run_throwaway(
    b: Buildah, image: str, command: list[str], volumes: list[str], env: dict[str, str] | None = None
) -> None:
    """``command`` in a container of ``image`` that is removed afterwards (chroot isolation, like the
    build); ``volumes`` as ``host:container[:ro]``."""
    ctr = b("from", "--pull-never", image, capture=True)
    options = [arg for volume in volumes for arg in ("-v", volume)]
    options += [arg for name, value in (env or {}).items() for arg in ("--env", f"{name}={value}")]
    try:
        b("run", "--isolation", "chroot", *options, ctr, "--", *command)
    finally:
        b("rm", ctr)


def bundle_python(b: Buildah, cache: Path, base: str, dirname: str) -> None:
    """Make the tree self-contained, then prove it imports its C modules on the bare base."""
    run_throwaway(b, base, ["bash", "-c", PYTHON_BUNDLE], [f"{cache}:/standin"], {"DIRNAME": dirname})
    run_throwaway(
        b,
        base,
        ["/opt/check-python/bin/python3", "-c", PYTHON_CHECK],
        [f"{cache / 'python-local' / dirname}:/opt/check-python:ro"],
    )


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
