"""Build a rendered Dockerfile for real with buildah, replacing only what this machine cannot reach.

Why: a Dockerfile that lints and renders can still fail at its first RUN; the image is only proven
by building every stage to the final one and booting it. Machines without GitHub, Docker Hub or
ghcr.io (CI included) cannot pull the base images nor fetch the pinned sources, so the stand-ins of
``bench/build_standins.py`` are made under the exact names the Dockerfile uses, and the Dockerfile's
own hermetic switches (build ARGs whose defaults are the real sources; a user's build never sets
them) take local files:

* ``nvidia/cuda:*-devel-*`` / the final stage's ``*-base-*`` (or ``*-runtime-*``): Debian (``--suite``, default trixie) made with
  debootstrap from Debian's archive; ``--suite jammy`` / ``noble`` takes the Ubuntu release the real
  images are built on (``*-ubuntu22.04`` / ``-ubuntu24.04``), from Ubuntu's archive: the faithful
  choice for ``--light`` builds (CI). Debian stays the default because a CUDA compile needs its
  toolkit: jammy's multiverse has ``nvidia-cuda-toolkit`` 11.5.1, older than the images' 12.4.1. The devel stand-in adds Debian's ``nvidia-cuda-toolkit``
  (non-free), CUDA 12.4.1 (nvcc 12.4.131) in trixie, the release of the real devel image (PyPI's
  ``nvidia-cuda-nvcc-cu12==12.4.131`` wheel ships only ptxas, not nvcc). ``--light`` (CI) skips it.
* ``ghcr.io/astral-sh/uv:<v>``: ``FROM scratch`` with ``/uv`` and ``/uvx`` from PyPI's ``uv`` wheel.
* ``PYTHON_SOURCE=local``: CPython compiled from the upstream tarball of Debian's ``python3.<minor>``
  source package, installed at the managed-Python path with its non-glibc libraries bundled (rpath
  ``$ORIGIN``), i.e. relocatable like python-build-standalone. Debian's archive has no source of
  every patch release: where it lacks the pinned one, the build passes ``PYTHON_VERSION`` (the
  release it compiled) and the record says so.
* ``COMFYUI_SOURCE=local``: the pinned ComfyUI and custom nodes laid out by ``bench/sources.py``.
* ``FLASH_ATTN_SOURCE=local``: a STAND-IN wheel with the release file name whose ``flash_attn``
  package only imports (there is no GPU here and the release wheel is on GitHub).
* ``MMCV_SOURCE=local`` (``--mmcv-wheel``): a wheel an earlier run of this script compiled.

PyPI is reached from inside the build with this machine's CA bundle (its TLS may be intercepted),
passed as the Dockerfile's optional build secrets (``build-ca``, ``uv-config``, ``pip-config``), so
it is never part of a layer.

Everything goes to a private buildah store under ``--cache`` (never the machine's shared one).
Without ``--context`` the profile is rendered afresh into the cache (zr4's wheel included).

Usage:
    python bench/build_image.py --sources .cache/sources --boot --record bench/results/build.md
        [--mmcv-wheel DIR] [--target runtime]
    python bench/build_image.py --light --target zr4-venv --smoke 'zr4 --help'   # CI: no CUDA toolkit
    python bench/build_image.py --light --suite jammy --target runtime --stage-head   # CI: the runtime's own RUNs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from build_standins import (
    Buildah,
    Distro,
    LocalPython,
    Wanted,
    base_image,
    devel_standin,
    flash_attn_standin,
    local_python,
    read_dockerfile,
    run,
    runtime_standin,
    uv_standin,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


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


# ---------------------------------------------------------------- CA bundle for PyPI, never in a layer


def ca_secrets(cache: Path) -> list[str]:
    """The Dockerfile's optional build secrets: this machine's CA bundle and configs that make uv/pip use it."""
    bundle = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    conf = cache / "ca"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "uv.toml").write_text("system-certs = true\n")
    (conf / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/zr4-build-ca.crt\n")
    return [
        "--secret",
        f"id=build-ca,src={bundle}",
        "--secret",
        f"id=uv-config,src={conf / 'uv.toml'}",
        "--secret",
        f"id=pip-config,src={conf / 'pip.conf'}",
    ]


# ---------------------------------------------------------------- the build


STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] STEP (\d+)/(\d+): (.*)$")


@dataclass
class Step:
    """One STEP buildah printed: its stage, its text, and its own seconds (nested stages excluded)."""

    stage: str
    text: str
    start: float
    seconds: float = 0.0
    cached: bool = False
    nested: float = 0.0  # seconds of other stages' steps that ran inside this one


@dataclass
class StageLog:
    """Every STEP of a build, with its own time, read from buildah's progress lines.

    buildah builds a stage when a later one first needs it (``COPY --from=venv`` builds venv, then
    copies), so steps nest: a step runs from its STEP line to its ``--> <id>`` line, minus the steps
    of other stages that ran in between. A FROM step prints no ``-->``: it ends at the next STEP.
    """

    steps: list[Step] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # buildah's stage index -> stage name
    open: list[Step] = field(default_factory=list)

    def step_line(self, index: str, step: str, text: str, now: float) -> None:
        if step == "1":
            name = stage_name(text, index)
            self.names[index] = name if name not in self.names.values() else f"{name} ({index})"
        if self.open and self.open[-1].text.upper().startswith("FROM "):
            self._close(now)
        item = Step(self.names.get(index, f"stage {index}"), text, now)
        self.steps.append(item)
        self.open.append(item)

    def arrow_line(self, line: str, now: float) -> None:
        """`--> Using cache <id>` marks the open step cached; `--> <id>` ends it."""
        if not self.open:
            return
        if line.startswith("--> Using cache"):
            self.open[-1].cached = True
        else:
            self._close(now)

    def _close(self, now: float) -> None:
        item = self.open.pop()
        span = now - item.start
        item.seconds = span - item.nested
        if self.open:
            self.open[-1].nested += span

    def close(self, now: float) -> None:
        while self.open:
            self._close(now)

    def stages(self) -> list[tuple[str, float, int, int]]:
        """(stage, seconds, steps, steps from cache), in the order each stage first ran."""
        rows: dict[str, list[float]] = {}
        for item in self.steps:
            row = rows.setdefault(item.stage, [0.0, 0, 0])
            row[0] += item.seconds
            row[1] += 1
            row[2] += int(item.cached)
        return [(name, secs, int(n), int(cached)) for name, (secs, n, cached) in rows.items()]


def read_build_log(path: Path) -> StageLog:
    """The StageLog of a build log this script wrote (each line prefixed with its seconds)."""
    stages = StageLog()
    now = 0.0
    for raw in path.read_text().splitlines():
        seconds, _, line = raw.strip().partition(" ")
        try:
            now = float(seconds)
        except ValueError:
            continue
        match = STEP_LINE.match(line)
        if match:
            index, _, step, _, text = match.groups()
            stages.step_line(index, step, text, now)
        elif line.startswith("--> "):
            stages.arrow_line(line, now)
    stages.close(now)
    return stages


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
        *b.base,
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        "--layers",
        "--pull-never",
        "--target",
        target,
        "-t",
        tag,
        "-f",
        str(context / "Dockerfile"),
    ]
    for name, path in sorted(contexts.items()):
        cmd += ["--build-context", f"{name}={path}"]
    for name, value in sorted(build_args.items()):
        cmd += ["--build-arg", f"{name}={value}"]
    cmd += ca_secrets(cache)
    cmd.append(str(context))
    stages = StageLog()
    start = time.monotonic()
    print("+ " + shlex.join(cmd), flush=True)
    with (
        log_path.open("w") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - start
            log.write(f"{now:8.1f} {line}")
            log.flush()
            match = STEP_LINE.match(line.rstrip("\n"))
            if match:
                index, _, step, _, text = match.groups()
                stages.step_line(index, step, text, now)
                print(f"{now:8.1f} {line}", end="", flush=True)
            elif line.startswith("--> "):
                stages.arrow_line(line.rstrip("\n"), now)
            elif line.startswith(("Error", "error")) or "exit status" in line:
                print(f"{now:8.1f} {line}", end="", flush=True)
        code = proc.wait()
    stages.close(time.monotonic() - start)
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
    workspace: str  # `ls -lnR` of the volume after the boot: who owns what zr4 prepared


def boot(b: Buildah, image: str, port: int, timeout_s: float, log_path: Path) -> BootResult:
    """Start the image through its ENTRYPOINT (as its USER) on the CPU; poll `zr4 health` inside it.

    /workspace is a fresh root-owned folder (mode 0755) mounted as a volume, as RunPod mounts its own.
    """
    info = json.loads(b("inspect", "--type", "image", image, capture=True))
    config = info["Docker"]["config"]
    entrypoint = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    workspace = log_path.parent.parent / "workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(mode=0o755)
    os.chown(workspace, 0, 0)
    ctr = b("from", "--pull-never", image, capture=True)
    env = ["-e", "SKIP_MODEL_DOWNLOAD=true", "-e", f"COMFYUI_PORT={port}", "-v", f"{workspace}:/workspace"]
    cmd = [*b.base, "run", "--isolation", "chroot", *env, ctr, "--", *entrypoint]
    health_cmd = [*b.base, "run", "--isolation", "chroot", *env, ctr, "--", "zr4", "health"]
    start = time.monotonic()
    answer = ""
    ok = False
    print("+ " + shlex.join(cmd), flush=True)
    with (
        log_path.open("w") as log,
        subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True) as proc,
    ):
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
            stray = kill_chrooted(b)
            if stray:
                print(f"killed {stray} process(es) left in the container's root", flush=True)
    listing = subprocess.run(["ls", "-lanR", str(workspace)], text=True, stdout=subprocess.PIPE).stdout
    b("rm", ctr)
    if not ok and not answer:
        answer = f"the entrypoint exited with {proc.returncode} before ComfyUI answered"
    return BootResult(ok, seconds, answer, cmd, listing.replace(str(workspace), "/workspace"))


def kill_chrooted(b: Buildah) -> int:
    """SIGKILL every process chrooted into our store or our TMPDIR (only what this script started)."""
    roots = (str(b.root) + "/", str(b.tmp) + "/")
    killed = 0
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            root = os.readlink(proc_dir / "root")
        except OSError:
            continue
        if root.startswith(roots):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
                killed += 1
    return killed


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


def standins(
    b: Buildah, cache: Path, wanted: Wanted, suite: str, light: bool, timings: Timings
) -> LocalPython:
    """Every stand-in the Dockerfile needs; returns the local CPython."""
    distro = Distro.of(suite).name
    base = timings.run(f"stand-in: {distro} base (debootstrap)", base_image, b, cache, suite)
    timings.run("stand-in: uv image", uv_standin, b, cache, wanted)
    timings.run("stand-in: runtime base", runtime_standin, b, base, wanted)
    timings.run(
        "stand-in: devel base" + (" (light)" if light else " (CUDA toolkit)"),
        devel_standin,
        b,
        base,
        wanted,
        light,
        distro,
    )
    return timings.run("stand-in: local CPython", local_python, b, cache, base, wanted, suite)


def stage_head(dockerfile: str, stage: str) -> str:
    """The Dockerfile cut to ``stage``'s own first steps: its FROM and what follows up to its first
    COPY or ADD (the global ARGs before the first FROM kept, the parser directive line too).

    Why: the runtime stage installs its OS packages and creates its user on the CUDA runtime base
    before it takes anything from the other stages; building only that head checks those lines on a
    stand-in of the base's own release in seconds, without the GBs of wheels the full build fetches.
    """
    import dockerfile as parser  # the BuildKit parser zr4 validate uses

    lines = dockerfile.splitlines()
    commands = parser.parse_string(dockerfile)
    first_from = next(c for c in commands if c.cmd == "FROM")
    head = [line for line in lines[: first_from.start_line - 1] if line.startswith("# syntax=")]
    head += [c.original for c in commands if c.cmd == "ARG" and c.end_line < first_from.start_line]
    start = next(
        (i for i, c in enumerate(commands) if c.cmd == "FROM" and c.value[-2:] == ("AS", stage)), None
    )
    if start is None:
        raise SystemExit(f"no stage {stage!r} in the Dockerfile")
    for command in commands[start:]:
        if command.cmd in ("COPY", "ADD") or (command.cmd == "FROM" and command is not commands[start]):
            break
        head.append("\n".join(lines[command.start_line - 1 : command.end_line]))
    return "\n".join(head) + "\n"


def render_context(profile: str, overrides: list[str], out: Path) -> None:
    """`zr4 render` into a fresh folder, with the zr4 installed beside this interpreter (its wheel included)."""
    zr4 = shutil.which("zr4", path=str(Path(sys.executable).parent)) or shutil.which("zr4")
    if zr4 is None:
        raise SystemExit("zr4 is not installed beside this Python: pip install -e . first")
    shutil.rmtree(out, ignore_errors=True)
    sets = [arg for override in overrides for arg in ("--set", override)]
    run([zr4, "render", "--profile", profile, *sets, "--out", str(out)], stdout=subprocess.DEVNULL)


def export_mmcv_wheel(
    b: Buildah, context: Path, cache: Path, contexts, build_args, log_dir: Path
) -> Path | None:  # type: ignore[no-untyped-def]
    """Copy the wheel the mmcv stage compiled out of its (cached) image, for --mmcv-wheel re-runs."""
    if "AS mmcv-wheel" not in (context / "Dockerfile").read_text():
        return None
    tag = "localhost/zr4-build/mmcv-wheel:latest"
    _, code, _ = build(
        b, context, "mmcv-wheel", tag, contexts, build_args, cache, log_dir / "mmcv-export.log"
    )
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
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
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


def stage_section(stages: StageLog) -> list[str]:
    """The record's stage table and its slowest steps (markdown lines)."""
    out: list[str] = []
    out += [
        "",
        "## Stages (in the order buildah first ran them)",
        "",
        "| stage | seconds | steps | from cache |",
        "| --- | ---: | ---: | ---: |",
    ]
    out += [f"| {name} | {secs:.0f} | {n} | {cached} |" for name, secs, n, cached in stages.stages()]
    slowest = sorted(stages.steps, key=lambda item: item.seconds, reverse=True)[:10]
    out += ["", "Slowest steps:", "", "| stage | seconds | step |", "| --- | ---: | --- |"]
    for item in slowest:
        text = item.text.replace("|", "\\|")
        out.append(
            f"| {item.stage} | {item.seconds:.0f} | `{text if len(text) <= 110 else text[:107] + '...'}` |"
        )
    return out


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
    aliases: dict[str, str],
) -> None:
    """Write the measurements as markdown (the file is replaced: one run, one record).

    ``aliases`` maps this machine's paths (cache, sources, checkout) to names such as ``$CACHE``: a
    record in the repository names no folder of the machine it was measured on.
    """
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
        "buildah invocation (`$CACHE`: the script's cache folder, `$SOURCES`: bench/sources.py's output):",
        "",
        "```",
        shlex.join(cmd),
        "```",
        "",
        f"Result: build exit code **{code}**"
        + (f"; boot: **{'healthy' if booted.ok else 'NOT healthy'}**" if booted else ""),
        "",
    ]
    out += [f"- {note}" for note in notes]
    out += [
        "",
        "## Stand-ins (cached between runs; 0 s = reused)",
        "",
        "| step | seconds |",
        "| --- | ---: |",
    ]
    out += [f"| {name} | {secs:.0f} |" for name, secs in timings.steps]
    out += stage_section(stages)
    if layers:
        out += [
            "",
            "## Layers of the final image (uncompressed)",
            "",
            "| # | size | created by |",
            "| ---: | ---: | --- |",
        ]
        for index, (created_by, size) in enumerate(layers, 1):
            short = created_by.replace("|", "\\|").replace("\n", " ")
            short = short if len(short) <= 160 else short[:157] + "..."
            out.append(f"| {index} | {human(size)} | `{short}` |")
        out += ["", f"**Image size: {human(total)}** uncompressed ({total:,} bytes; goal <= 12 GB)."]
    if doctor:
        out += ["", "## `zr4 doctor --build-time` (the Dockerfile's own RUN step)", "", "```", doctor, "```"]
    if booted:
        out += [
            "",
            "## Boot through the ENTRYPOINT on the CPU",
            "",
            f"{'Healthy' if booted.ok else 'Not healthy'} after {booted.seconds:.0f} s "
            "(SKIP_MODEL_DOWNLOAD=true: the Hub is unreachable here). `zr4 health` answered:",
            "",
            "```",
            booted.health,
            "```",
            "",
            "The root-owned volume after the boot (`ls -lanR`; uid 1000 is the image's user):",
            "",
            "```",
            booted.workspace.strip()[:3000],
            "```",
        ]
    if smokes:
        out += ["", "## Commands run inside the image", ""]
        for command, rc, head in smokes:
            out += [f"`{command}` -> exit {rc}", "", "```", head, "```", ""]
    text = "\n".join(out).rstrip() + "\n"
    for host, alias in sorted(aliases.items(), key=lambda item: len(item[0]), reverse=True):
        text = text.replace(host, alias)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def remove_store(b: Buildah, cache: Path) -> None:
    """Stop what still runs on the private store, delete its containers and images, unmount, delete the cache."""
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(proc_dir.name) != os.getpid() and str(b.root) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
    kill_chrooted(b)
    b("rm", "--all", check=False)
    b("rmi", "--all", "--force", check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(cache) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    shutil.rmtree(cache)


def comfyui_sources(given: Path | None) -> Path:
    """The folder holding ComfyUI/ (custom_nodes/ inside) laid out by bench/sources.py."""
    env = os.environ.get("ZR4_COMFYUI_SOURCES")
    sources = given or (Path(env) if env else None)
    if sources is None or not (sources / "ComfyUI" / "main.py").exists():
        raise SystemExit(
            "--sources (or ZR4_COMFYUI_SOURCES) must name a folder holding ComfyUI/: run bench/sources.py"
        )
    return sources.resolve()


def python_switches(dockerfile: str, wanted: Wanted, python: LocalPython) -> tuple[dict[str, str], str]:
    """The build ARGs that take the local CPython, and the note that says which one it is."""
    build_args = {"PYTHON_SOURCE": "local"}
    source = (
        "compiled from the upstream tarball of Debian's source package (python-build-standalone is on GitHub)"
    )
    if python.version == wanted.python or (
        wanted.python.count(".") == 1 and python.version.startswith(wanted.python + ".")
    ):
        return (
            build_args,
            f"Managed Python: CPython {python.version} (the Dockerfile asks for {wanted.python}), {source}.",
        )
    if not re.search(r"^ARG PYTHON_VERSION=", dockerfile, flags=re.M):
        raise SystemExit(
            f"the Dockerfile pins CPython {wanted.python} and has no PYTHON_VERSION build ARG, but Debian's "
            f"archive has the source of {python.version} only: no local CPython of the pin can be built here"
        )
    build_args["PYTHON_VERSION"] = python.version
    return build_args, (
        f"Managed Python: CPython **{python.version}, not the pinned {wanted.python}**: {source}, and Debian's "
        f"archive has no source of {wanted.python}; the build passes `PYTHON_VERSION={python.version}`."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="4080super", help="render this profile afresh (default)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="render with this override (zr4 render --set; repeatable)",
    )
    parser.add_argument("--context", type=Path, default=None, help="build this rendered folder instead")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache" / "build")
    parser.add_argument(
        "--sources",
        type=Path,
        default=None,
        help="folder holding ComfyUI/ (bench/sources.py); default $ZR4_COMFYUI_SOURCES",
    )
    parser.add_argument(
        "--suite", default="trixie", help="release of the stand-in bases: Debian's, or Ubuntu's jammy/noble"
    )
    parser.add_argument("--light", action="store_true", help="devel stand-in without the CUDA toolkit (CI)")
    parser.add_argument("--target", default="runtime")
    parser.add_argument(
        "--stage-head",
        action="store_true",
        help="build only the target stage's steps before its first COPY/ADD (its OS packages, its user)",
    )
    parser.add_argument("--tag", default=None)
    parser.add_argument(
        "--mmcv-wheel",
        type=Path,
        default=None,
        help="folder with the mmcv wheel an earlier run compiled (MMCV_SOURCE=local)",
    )
    parser.add_argument("--boot", action="store_true", help="start the image and wait for `zr4 health`")
    parser.add_argument("--boot-timeout", type=float, default=900.0)
    parser.add_argument("--port", type=int, default=18188)
    parser.add_argument(
        "--smoke",
        action="append",
        default=[],
        metavar="CMD",
        help="a command to run inside the built image (repeatable)",
    )
    parser.add_argument("--record", type=Path, default=None, help="write the measurements here (markdown)")
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the record's notes (repeatable)"
    )
    parser.add_argument("--standins-only", action="store_true")
    parser.add_argument(
        "--remove-cache",
        action="store_true",
        help="delete the private store and everything cached under --cache at the end (CI)",
    )
    args = parser.parse_args(argv)
    # A stopped run (CI's timeout, a kill) still cleans up with --remove-cache: SIGTERM unwinds as an exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return build_and_record(args, argv)
    finally:
        if args.remove_cache and args.cache.exists():
            remove_store(Buildah(args.cache.resolve()), args.cache.resolve())


def build_and_record(args: argparse.Namespace, argv: list[str]) -> int:
    """Stand-ins, the build, the optional boot and smoke commands, the record; 0 when all passed."""
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    log_dir = cache / "logs"
    log_dir.mkdir(exist_ok=True)
    b = Buildah(cache)
    # Build from a private copy, one per run: the checkout may change (a rebase, a re-render) during an
    # hour-long build, and two builds may share the store (and so its layer cache) at once.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    context = cache / "contexts" / f"{args.target}-{stamp}"
    context.parent.mkdir(exist_ok=True)
    if args.context:
        shutil.copytree(args.context, context, symlinks=True)
    else:
        render_context(args.profile, args.set, context)
    dockerfile = (context / "Dockerfile").read_text()
    wanted = read_dockerfile(context / "Dockerfile")
    full_dockerfile = dockerfile
    if args.stage_head:
        dockerfile = stage_head(dockerfile, args.target)
        (context / "Dockerfile").write_text(dockerfile)
    timings = Timings()
    python = standins(b, cache, wanted, args.suite, args.light, timings)
    if args.standins_only:
        return 0

    contexts: dict[str, Path] = {"python-local": python.folder}
    build_args, python_note = python_switches(full_dockerfile, wanted, python)
    notes = [
        f"Base images: {Distro.of(args.suite).name} {args.suite} stand-ins (debootstrap, "
        f"{Distro.of(args.suite).name}'s archive) tagged "
        f"`{wanted.devel_image}` and `{wanted.runtime_image}`"
        + (" (the devel one without a CUDA toolkit: `--light`)." if args.light else "."),
        python_note,
    ]
    notes += args.note
    if args.set:
        notes.append("Rendered with " + ", ".join(f"`--set {o}`" for o in args.set) + " (the notes say why).")
    if "COMFYUI_SOURCE" in dockerfile and args.target in ("runtime", "comfyui-src"):
        contexts["comfyui-local"] = comfyui_sources(args.sources)
        build_args["COMFYUI_SOURCE"] = "local"
        notes.append(
            "ComfyUI and the pinned custom nodes: local trees from bench/sources.py at the pinned commits "
            "(GitHub is unreachable)."
        )
    if wanted.flash_attn_url and "FLASH_ATTN_SOURCE" in dockerfile:
        contexts["flash-attn-local"] = flash_attn_standin(cache, wanted.flash_attn_url)
        build_args["FLASH_ATTN_SOURCE"] = "local"
        notes.append(
            "flash-attn is a STAND-IN wheel (same file name, `flash_attn` imports, no kernels): "
            "the release wheel is on GitHub and there is no GPU here."
        )
    if args.mmcv_wheel:
        contexts["mmcv-local"] = args.mmcv_wheel.resolve()
        build_args["MMCV_SOURCE"] = "local"
        notes.append(
            f"mmcv: the wheel an earlier run of this script compiled ({next(args.mmcv_wheel.glob('*.whl')).name})."
        )
    elif "AS mmcv-wheel" in dockerfile and args.target in ("runtime", "venv", "mmcv-wheel"):
        notes.append("mmcv: compiled for real in this run (CUDA ops, nvcc 12.4.131 of the devel stand-in).")
    if "COPY --from=zr4 " in dockerfile:
        contexts["zr4"] = REPO_ROOT
    tag = args.tag or f"localhost/zr4-build/{args.target}:latest"
    log_path = log_dir / f"build-{args.target}-{stamp}.log"
    stages, code, cmd = timings.run(
        f"build --target {args.target}",
        build,
        b,
        context,
        args.target,
        tag,
        contexts,
        build_args,
        cache,
        log_path,
    )
    print(f"build log: {log_path}", flush=True)
    layers = layer_sizes(b, tag) if code == 0 else []
    if code == 0 and not args.mmcv_wheel and args.target in ("runtime", "mmcv-wheel"):
        exported = export_mmcv_wheel(b, context, cache, contexts, build_args, log_dir)
        if exported:
            print(f"mmcv wheel kept for --mmcv-wheel: {exported}", flush=True)
    booted = None
    if code == 0 and args.boot:
        booted = timings.run(
            "boot", boot, b, tag, args.port, args.boot_timeout, log_dir / f"boot-{stamp}.log"
        )
        print(f"boot: {'healthy' if booted.ok else 'NOT healthy'}\n{booted.health}", flush=True)
    smokes = smoke(b, tag, [shlex.split(c) for c in args.smoke]) if code == 0 and args.smoke else []
    if args.record:
        aliases = {str(cache): "$CACHE", str(REPO_ROOT): "."}
        if "comfyui-local" in contexts:
            aliases[str(contexts["comfyui-local"])] = "$SOURCES"
        record(
            args.record,
            argv,
            timings,
            stages,
            code,
            cmd,
            layers,
            doctor_output(log_path),
            booted,
            smokes,
            notes,
            aliases,
        )
    failed = code != 0 or (booted is not None and not booted.ok) or any(rc != 0 for _, rc, _ in smokes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
