"""Check 13: build for real the parts of the Dockerfile that fetch nothing, with buildah.

A stage "fetches nothing" when it starts `FROM scratch` (or from such a stage), runs no RUN, ADDs
no URL and copies only from the build context, named contexts or such stages: the rendered
`context-files` stage is one. Each is built with `buildah bud --target <stage>` on the real
Dockerfile, so every COPY of it runs against the real context and its `.dockerignore`.

Named contexts: buildah 1.28 (Debian 12's package) accepts `--build-context NAME=PATH` but does
not apply that directory's `.dockerignore` (tried here: a path the repository's `.dockerignore`
excludes was copied), unlike BuildKit. So every `COPY --from=<named context>` of the Dockerfile is
also built as a derived `FROM scratch` stage whose main context *is* that directory, where buildah
does apply the ignore file.

The other stages need base images and the network, but what they copy from the build context does
not: every such COPY (zr4's wheel, the locks) is replayed in one derived `FROM scratch` stage against
the rendered folder, and each copied `*.sha256` file is checked against the file it names, so a
render to any folder is proven to hold everything the build copies.

Storage and isolation need no daemon: `--storage-driver vfs --isolation chroot` under a throw-away
`--root`, as root or where user namespaces work; otherwise the check is skipped, not failed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import DockerfileModel, Instruction, Stage
from zr4.validate.model import CheckResult, Finding, outcome, skipped

TITLE = "real build of network-free stages (buildah)"
_TIMEOUT_S = 120
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^git@", re.I)
_STEP_ERROR = re.compile(r'building at STEP "(?P<step>[^"]+)": (?P<message>.+)')


def offline_stages(model: DockerfileModel, named_contexts: dict[str, Path]) -> list[Stage]:
    """Stages that can be built with no network and no base image."""
    offline: dict[int, Stage] = {}
    for stage in model.stages:
        parent_ok = stage.base.lower() == "scratch" or any(
            s.name == stage.base.lower() for s in offline.values()
        )
        if not parent_ok:
            continue
        ok = True
        for instruction in stage.instructions:
            fetches = instruction.cmd == "ADD" and any(_URL.match(a) for a in instruction.args[:-1])
            if instruction.cmd in ("RUN", "ONBUILD") or fetches:
                ok = False
            elif instruction.cmd == "COPY" and (source := instruction.flag("from")) is not None:
                stage_ok = any(s.name == source.lower() or str(s.index) == source for s in offline.values())
                ok = ok and (stage_ok or source in named_contexts)
        if ok:
            offline[stage.index] = stage
    # An empty `FROM scratch` stage (a seam a named context may replace) has nothing to build.
    return [stage for stage in offline.values() if any(i.cmd != "FROM" for i in stage.instructions)]


@dataclass
class _Buildah:
    binary: str
    root: Path

    def command(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip

    def bud(
        self, dockerfile: Path, context_dir: Path, target: str | None, extra: list[str]
    ) -> tuple[int, str]:
        args = ["bud", "--isolation", "chroot", "--layers=false", "--pull-never", "-f", str(dockerfile)]
        args += ["--signature-policy", str(self.root / "policy.json")]
        if target:
            args += ["--target", target]
        args += [*extra, "-t", f"localhost/zr4-validate-{target or 'probe'}", str(context_dir)]
        try:
            result = subprocess.run(
                self.command(*args), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return 124, f"buildah did not finish in {_TIMEOUT_S} s"
        return result.returncode, (result.stderr + result.stdout)


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error") or "error" in line.lower()]
    return (lines[-1] if lines else output.strip().splitlines()[-1] if output.strip() else "").strip()


def _finding_for(output: str, model: DockerfileModel, file: str, what: str) -> Finding:
    message = _error_line(output)
    match = _STEP_ERROR.search(output)
    line = None
    if match:
        step = match.group("step")
        line = next(
            (i.line for i in model.instructions if " ".join(i.original.split()) == " ".join(step.split())),
            None,
        )
        message = match.group("message")
    return Finding(f"{what} fails: {message}", file, line)


def check_build(context: BuildContext) -> CheckResult:
    """Check 13."""
    binary = shutil.which("buildah")
    if binary is None:
        return skipped("build", TITLE, "buildah is not available (Debian/Ubuntu: apt-get install buildah)")
    model = context.model
    file = context.dockerfile_name
    if model is None:
        return outcome("build", TITLE, [Finding("the Dockerfile does not parse (see check 1)", file)])
    with tempfile.TemporaryDirectory(prefix="zr4-buildah-", ignore_cleanup_errors=True) as folder:
        buildah = _Buildah(binary, Path(folder))
        (buildah.root / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]}), encoding="utf-8"
        )
        findings: list[Finding] = []
        notes: list[str] = []
        named = {name: path for name, path in context.named_contexts.items() if path.is_dir()}
        failures: list[str] = []
        offline = offline_stages(model, named)
        for stage in offline:
            if stage.name is None:
                continue
            used = {i.flag("from") for i in stage.instructions if i.cmd == "COPY"}
            contexts = [a for n, p in named.items() if n in used for a in ("--build-context", f"{n}={p}")]
            code, output = buildah.bud(context.root / file, context.root, stage.name, contexts)
            if code == 0:
                notes.append(f"built stage {stage.name} ({len(stage.instructions)} instructions)")
            else:
                failures.append(output)
                findings.append(_finding_for(output, model, file, f"stage {stage.name}"))
        for name, path in named.items():
            findings.extend(_build_named(buildah, model, name, path, file, notes, failures))
        built = {stage.index for stage in offline}
        others = [stage for stage in model.stages if stage.index not in built]
        findings.extend(_build_context_copies(buildah, model, others, context.root, file, notes, failures))
        findings.extend(_checksum_findings(model, context.root, file))
        if any(_STEP_ERROR.search(output) is None for output in failures):
            reason = _environment_problem(buildah)
            if reason:
                return skipped("build", TITLE, f"buildah cannot build here: {reason}")
    return outcome("build", TITLE, findings, notes)


def _environment_problem(buildah: _Buildah) -> str | None:
    """Why buildah cannot build even an empty image here (rootless without user namespaces...)."""
    probe = buildah.root / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "Dockerfile").write_text("FROM scratch\nLABEL zr4.validate=probe\n", encoding="utf-8")
    code, output = buildah.bud(probe / "Dockerfile", probe, None, [])
    return None if code == 0 else _error_line(output) or f"exit status {code}"


def _build_named(
    buildah: _Buildah,
    model: DockerfileModel,
    name: str,
    path: Path,
    file: str,
    notes: list[str],
    failures: list[str],
) -> list[Finding]:
    """Every `COPY --from=<name>` replayed in a FROM scratch stage whose context is ``path``."""
    copies = [i for i in model.instructions if i.cmd == "COPY" and i.flag("from") == name]
    if not copies:
        return []
    steps = [_replayed(instruction) for instruction in copies]
    derived = buildah.root / f"Dockerfile.{name}"
    derived.write_text("FROM scratch\n" + "\n".join(steps) + "\n", encoding="utf-8")
    code, output = buildah.bud(derived, path, None, [])
    if code == 0:
        notes.append(f"built {len(copies)} COPY --from={name} against {path} and its .dockerignore")
        return []
    failures.append(output)
    finding = _finding_for(output, model, file, f"COPY --from={name} (replayed against {path})")
    step = _STEP_ERROR.search(output)
    if step:  # map the derived step back to the Dockerfile line
        for instruction in copies:
            if _replayed(instruction) == step.group("step"):
                finding = Finding(finding.message, file, instruction.line)
    return [finding]


def _build_context_copies(
    buildah: _Buildah,
    model: DockerfileModel,
    stages: list[Stage],
    root: Path,
    file: str,
    notes: list[str],
    failures: list[str],
) -> list[Finding]:
    """Every COPY from the build context in ``stages`` (those that need a base image or the network)
    replayed in one FROM scratch stage against the rendered folder and its `.dockerignore`: the context
    holds every file the whole build copies, wherever it was rendered."""
    copies = [i for stage in stages for i in stage.instructions if i.cmd == "COPY" and i.flag("from") is None]
    if not copies:
        return []
    steps = [_replayed(instruction) for instruction in copies]
    derived = buildah.root / "Dockerfile.context-copies"
    derived.write_text("FROM scratch\n" + "\n".join(dict.fromkeys(steps)) + "\n", encoding="utf-8")
    code, output = buildah.bud(derived, root, None, [])
    if code == 0:
        notes.append(
            f"built every COPY from the build context ({len(copies)}) against {root} and its .dockerignore"
        )
        return []
    failures.append(output)
    finding = _finding_for(output, model, file, "COPY from the build context (replayed)")
    step = _STEP_ERROR.search(output)
    if step:
        for instruction in copies:
            if _replayed(instruction) == step.group("step"):
                finding = Finding(finding.message, file, instruction.line)
    return [finding]


def _checksum_findings(model: DockerfileModel, root: Path, file: str) -> list[Finding]:
    """A copied `*.sha256` file (`sha256sum` format) must match the file it names, or the build's
    `sha256sum --check` step fails after the hour a GPU image takes to get there."""
    findings: list[Finding] = []
    for instruction in model.instructions:
        if instruction.cmd != "COPY" or instruction.flag("from") is not None:
            continue
        for source in instruction.args[:-1]:
            listing = root / source.lstrip("/")
            if not source.endswith(".sha256") or not listing.is_file():
                continue
            for line in listing.read_text(encoding="utf-8").splitlines():
                digest, _, name = line.partition("  ")
                target = root / name.strip().lstrip("*")
                if not name.strip():
                    continue
                if not target.is_file():
                    findings.append(
                        Finding(
                            f"{source} names {name.strip()}, which the context lacks", file, instruction.line
                        )
                    )
                elif hashlib.sha256(target.read_bytes()).hexdigest() != digest.strip().lower():
                    findings.append(
                        Finding(
                            f"{source} does not match {name.strip()} (sha256sum --check would fail)",
                            file,
                            instruction.line,
                        )
                    )
    return findings


def _replayed(instruction: Instruction) -> str:
    """The COPY without --from (and without ownership flags, which need the image's users)."""
    flags = [f for f in instruction.flags if not f.lower().startswith(("--from=", "--chown=", "--link"))]
    return " ".join(["COPY", *flags, *instruction.args])
