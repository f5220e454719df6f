"""Check 12 (`--resolve`, needs the package index): resolve the locks for the image's platform.

Each lock of the context (`requirements.lock`, `zr4-runtime.lock`) and the exact pins the
Dockerfile installs outside them (e.g. `mmcv==2.1.0`, build tools) are resolved with
`uv pip compile --no-deps --python-platform x86_64-manylinux_<glibc> --python-version <profile's>
--format pylock.toml` (docs.astral.sh/uv/reference/cli/#uv-pip-compile; uv's pylock output lists, per package, only
the wheels that install on that platform, and the sdist). So each package is one of:
- wheel: a compatible wheel exists; the lock's `--hash` must include one of their hashes, or
  `uv pip install --require-hashes` fails;
- sdist: only a source archive: it is compiled in the builder stage (fine for mmcv, which has a
  stage for it; a failure for anything the lock installs into the runtime venv without one);
- missing: the index has no such version, or nothing that installs on the platform.
The glibc level follows the runtime image's Ubuntu release (22.04 ships glibc 2.35, 24.04 2.39).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from zr4.validate.check_pins import EXACT_PIN
from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import parse_image
from zr4.validate.model import CheckResult, Finding, outcome, skipped
from zr4.validate.shell import INSTALL_COMMAND, split_commands

TITLE = "locks resolve for linux x86_64 (--resolve)"
GLIBC_BY_UBUNTU = {"20.04": "2_31", "22.04": "2_35", "24.04": "2_39"}
DEFAULT_GLIBC = "2_28"
LOCKS = ("requirements.lock", "zr4-runtime.lock")
_NAME_IN_ERROR = re.compile(
    r"Because (?:there is no version of |there are no versions of |only )?([A-Za-z0-9][A-Za-z0-9._-]*)"
)
_MAX_ROUNDS = 25


@dataclass
class Resolution:
    """Where each requirement of one input would come from."""

    source: str
    wheels: list[str] = field(default_factory=list)
    sdists: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (requirement, uv's reason)
    hash_mismatch: list[str] = field(default_factory=list)
    error: str | None = None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def platform_for(base_image: str) -> str:
    """uv's --python-platform for the runtime image (its Ubuntu release decides the glibc)."""
    tag = parse_image(base_image).tag or ""
    match = re.search(r"ubuntu(\d\d\.\d\d)", tag)
    glibc = GLIBC_BY_UBUNTU.get(match.group(1), DEFAULT_GLIBC) if match else DEFAULT_GLIBC
    return f"x86_64-manylinux_{glibc}"


def requirements_of(text: str) -> list[tuple[str, str, set[str]]]:
    """(name, requirement line without hashes, hashes) for each requirement of a lock."""
    logical = re.sub(r"\\\n", " ", text)
    result: list[tuple[str, str, set[str]]] = []
    for line in logical.splitlines():
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith(("#", "-")):
            continue
        hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", stripped))
        requirement = stripped.split(" --hash", 1)[0].strip()
        name = re.split(r"[\s\[=<>!~;@]", requirement, maxsplit=1)[0]
        result.append((_normalise(name), requirement, hashes))
    return result


def dockerfile_pins(context: BuildContext) -> list[str]:
    """Exact pins installed by RUN lines outside any lock (`pip wheel mmcv==2.1.0`, build tools)."""
    pins: list[str] = []
    for instruction in context.instructions("RUN"):
        for command in split_commands(instruction.shell_text):
            if not INSTALL_COMMAND.search(command.text):
                continue
            pins.extend(w for w in command.words if EXACT_PIN.match(w) and "==" in w)
    return list(dict.fromkeys(pins))


def _compile(
    requirements: list[str],
    python: str,
    platform: str,
    index_args: Sequence[str],
    timeout_s: float,
    workdir: Path,
) -> tuple[dict[str, Any] | None, str]:
    """Run uv once; (pylock document, "") or (None, uv's error text)."""
    uv = shutil.which("uv")
    assert uv is not None
    source = workdir / "requirements.in"
    source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    output = workdir / "pylock.toml"
    output.unlink(missing_ok=True)
    command = [
        uv, "pip", "compile", str(source), "--no-deps", "--quiet", "--no-config",
        "--python-platform", platform, "--python-version", python,
        "--format", "pylock.toml", "-o", str(output),
    ]  # fmt: skip
    command += list(index_args)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None, f"uv pip compile did not finish in {timeout_s:.0f} s"
    if result.returncode == 0 and output.is_file():
        return tomllib.loads(output.read_text(encoding="utf-8")), ""
    return None, (result.stderr or result.stdout).strip()


def resolve_requirements(
    source: str,
    entries: list[tuple[str, str, set[str]]],
    python: str,
    platform: str,
    index_args: Sequence[str] = (),
    timeout_s: float = 240.0,
) -> Resolution:
    """Resolve ``entries``; a requirement uv cannot satisfy is reported and dropped, then uv reruns."""
    resolution = Resolution(source)
    remaining = list(entries)
    with tempfile.TemporaryDirectory(prefix="zr4-resolve-") as folder:
        for _ in range(_MAX_ROUNDS):
            if not remaining:
                return resolution
            document, error = _compile(
                [r for _, r, _ in remaining], python, platform, index_args, timeout_s, Path(folder)
            )
            if document is not None:
                _classify(resolution, remaining, document)
                return resolution
            culprit = _culprit(error, remaining)
            if culprit is None:
                resolution.error = error.splitlines()[-1] if error else "uv failed without a message"
                return resolution
            reason = " ".join(
                line.strip() for line in error.splitlines() if "cause:" in line or "Because" in line
            )
            resolution.missing.append((culprit[1], reason.removeprefix("cause: ") or error[:200]))
            remaining.remove(culprit)
    resolution.error = f"gave up after {_MAX_ROUNDS} rounds"
    return resolution


def _culprit(error: str, remaining: list[tuple[str, str, set[str]]]) -> tuple[str, str, set[str]] | None:
    names = {_normalise(match) for match in _NAME_IN_ERROR.findall(error)}
    for entry in remaining:
        if entry[0] in names:
            return entry
    for entry in remaining:  # uv names the package in other phrasings too
        if re.search(rf"\b{re.escape(entry[0])}\b", error.replace("_", "-").lower()):
            return entry
    return None


def _classify(
    resolution: Resolution, entries: list[tuple[str, str, set[str]]], document: dict[str, Any]
) -> None:
    by_name = {_normalise(package["name"]): package for package in document.get("packages", [])}
    for name, requirement, hashes in entries:
        package = by_name.get(name)
        if package is None:
            resolution.missing.append((requirement, "uv resolved no such package"))
            continue
        wheels = package.get("wheels") or []
        if wheels:
            resolution.wheels.append(requirement)
            offered = {w.get("hashes", {}).get("sha256") for w in wheels}
            if hashes and not (hashes & offered):
                resolution.hash_mismatch.append(requirement)
        elif package.get("sdist"):
            resolution.sdists.append(requirement)
        else:
            resolution.missing.append((requirement, "no wheel for this platform and no sdist"))


def check_resolve(
    context: BuildContext, timeout_s: float = 240.0, index_args: Sequence[str] = ()
) -> CheckResult:
    """Check 12. ``index_args`` go to uv as they are (default: uv's own index, PyPI, or $UV_INDEX_URL)."""
    if shutil.which("uv") is None:
        return skipped("resolve", TITLE, "uv is not installed (pip install uv)")
    profile, problem = context.profile
    if profile is None:
        return outcome(
            "resolve", TITLE, [Finding(f"{problem}; the target Python is unknown", "profile.json")]
        )
    python = profile.stack.python
    platform = platform_for(profile.stack.base_image_runtime)
    findings: list[Finding] = []
    notes: list[str] = [f"target {platform}, CPython {python}"]
    inputs: list[tuple[str, list[tuple[str, str, set[str]]]]] = [
        (name, requirements_of(context.read(name) or "")) for name in LOCKS if context.read(name) is not None
    ]
    extra: list[tuple[str, str, set[str]]] = [
        (_normalise(re.split(r"[=\[]", pin)[0]), pin, set()) for pin in dockerfile_pins(context)
    ]
    if extra:
        inputs.append((f"{context.dockerfile_name} pins", extra))
    pin_stages = _pin_stages(context)
    for source, entries in inputs:
        resolution = resolve_requirements(source, entries, python, platform, index_args, timeout_s)
        if resolution.error:
            findings.append(Finding(f"uv could not resolve it: {resolution.error}", source))
            continue
        notes.append(
            f"{source}: {len(resolution.wheels)} wheels, {len(resolution.sdists)} sdists "
            f"({', '.join(resolution.sdists) or 'none'}), {len(resolution.missing)} missing"
        )
        for requirement, reason in resolution.missing:
            findings.append(
                Finding(
                    f"{requirement} cannot be installed on {platform}/cp{python.replace('.', '')}: {reason}",
                    source,
                )
            )
        for requirement in resolution.hash_mismatch:
            findings.append(
                Finding(
                    f"{requirement}: none of the lock's hashes is a wheel for {platform}, so "
                    f"`uv pip install --require-hashes` fails; regenerate the lock with `zr4 lock`",
                    source,
                )
            )
        for requirement in resolution.sdists:
            name = _normalise(re.split(r"[=\[]", requirement)[0])
            if source in LOCKS:
                findings.append(
                    Finding(
                        f"{requirement} has no wheel for {platform}/cp{python.replace('.', '')}: the lock install "
                        f"would compile it without a build stage for it; pin a version with a wheel or add a "
                        f"wheel-building stage",
                        source,
                    )
                )
                continue
            stage, root, line = pin_stages.get(name, ("?", "", 0))
            if "devel" in (parse_image(root).tag or ""):
                notes.append(f"{requirement}: source only, compiled in stage {stage} ({root})")
            else:
                findings.append(
                    Finding(
                        f"{requirement} has no wheel for {platform}/cp{python.replace('.', '')}, so it compiles in "
                        f"stage {stage}, whose base {root or '(unknown)'} has no compiler toolchain; build its wheel in "
                        f"a devel stage and copy the wheel",
                        context.dockerfile_name,
                        line or None,
                    )
                )
    for line, url in url_wheels(context):
        problem = wheel_tag_problem(url, python)
        if problem:
            findings.append(
                Finding(
                    f"{problem}; use the wheel for cp{python.replace('.', '')}", context.dockerfile_name, line
                )
            )
        else:
            notes.append(f"{unquote(url.rsplit('/', 1)[-1])}: URL wheel, tags match (not downloaded here)")
    return outcome("resolve", TITLE, findings, notes)


def url_wheels(context: BuildContext) -> list[tuple[int, str]]:
    """(line, URL) of wheels the Dockerfile installs straight from a URL (e.g. a GitHub release)."""
    found: list[tuple[int, str]] = []
    for instruction in context.instructions("RUN"):
        for command in split_commands(instruction.shell_text):
            if INSTALL_COMMAND.search(command.text):
                found.extend(
                    (instruction.line, w)
                    for w in command.words
                    if "://" in w and w.split("?")[0].endswith(".whl")
                )
    return found


def wheel_tag_problem(url: str, python: str) -> str | None:
    """Why a wheel file name cannot install on CPython ``python`` / linux x86_64 (None = it can)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    name = unquote(url.split("?")[0].rsplit("/", 1)[-1])
    try:
        _, _, _, tags = parse_wheel_filename(name)
    except InvalidWheelFilename as error:
        return f"{name} is not a valid wheel file name ({error})"
    cp = f"cp{python.replace('.', '')}"
    for tag in tags:
        python_ok = tag.interpreter in (cp, "py3", f"py{python.replace('.', '')}") or tag.abi == "abi3"
        platform_ok = tag.platform == "any" or (
            tag.platform.endswith("x86_64") and tag.platform.startswith(("linux", "manylinux"))
        )
        if python_ok and platform_ok:
            return None
    shown = ", ".join(sorted(str(t) for t in tags))
    return f"{name} is built for {shown}, not CPython {python} on linux x86_64"


def _pin_stages(context: BuildContext) -> dict[str, tuple[str, str, int]]:
    """Package -> (stage, root image, line) of the RUN that installs or wheels its exact pin."""
    from zr4.validate.check_dockerfile import root_image

    found: dict[str, tuple[str, str, int]] = {}
    if context.model is None:
        return found
    for stage in context.model.stages:
        for instruction in stage.instructions:
            if instruction.cmd != "RUN":
                continue
            for command in split_commands(instruction.shell_text):
                if INSTALL_COMMAND.search(command.text):
                    for word in command.words:
                        if EXACT_PIN.match(word) and "==" in word:
                            name = _normalise(re.split(r"[=\[]", word)[0])
                            found.setdefault(
                                name, (stage.label, root_image(context.model, stage), instruction.line)
                            )
    return found
