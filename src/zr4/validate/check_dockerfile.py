"""Checks 1 and 2: the Dockerfile parses as BuildKit would, and its stage graph is sound.

Instruction rules are those of moby/buildkit `frontend/dockerfile/instructions/parse.go` (commit
73ed682, read from the repository): allowed flags per instruction, `FROM` taking one or three
arguments, stage names matching `^[a-z][a-z0-9-_.]*$`, COPY/ADD needing a destination, SHELL in
JSON form. Image tags of nvidia/cuda carry the patch version (hub.docker.com/r/nvidia/cuda tags; replicate/cog pkg/config/cuda_compatibility.json).
"""

from __future__ import annotations

import json
import re

from zr4.compat import cuda_flavor, runtime_flavors
from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import (
    STAGE_NAME,
    DockerfileModel,
    Instruction,
    Stage,
    locate_parse_error,
    parse_image,
)
from zr4.validate.model import CheckResult, Finding, outcome
from zr4.validate.shell import INSTALL_COMMAND, commands_of, split_commands

KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
ALLOWED_FLAGS = {
    "FROM": {"platform"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "link", "keep-git-dir", "checksum", "unpack", "exclude"},
    "RUN": {"mount", "network", "security", "device"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
_EXPOSE = re.compile(r"^(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|[0-9]+(-[0-9]+)?)(/(tcp|udp|sctp))?$", re.I)
_CUDA_PATCH_TAG = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-|$)")
_CUDA_MINOR_TAG = re.compile(r"^([0-9]+\.[0-9]+)(-.*)?$")

PARSE_TITLE = "Dockerfile parses (BuildKit parser)"
STAGES_TITLE = "Stage graph, base images, extension builds"
# A torch CUDA extension built during `docker build` sees no GPU, so the arches must be given
# (torch.utils.cpp_extension._get_cuda_arch_flags; flash-attention setup.py): TORCH_CUDA_ARCH_LIST for torch's cpp_extension (mmcv), FLASH_ATTN_CUDA_ARCHS for flash-attn.
_FLASH_ATTN = re.compile(r"^flash[-_]attn\b", re.I)


def _instruction_problems(instruction: Instruction) -> list[str]:
    cmd, args = instruction.cmd, instruction.args
    if cmd not in KNOWN_INSTRUCTIONS:
        return [f"unknown instruction {cmd}: Docker knows {', '.join(sorted(KNOWN_INSTRUCTIONS))}"]
    problems: list[str] = []
    allowed = ALLOWED_FLAGS.get(cmd, set())
    for name in instruction.flag_names():
        if name not in allowed:
            where = f"; {cmd} takes --{', --'.join(sorted(allowed))}" if allowed else ""
            problems.append(f"{cmd} has no flag --{name}{where}")
    if cmd == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not STAGE_NAME.match(args[2].lower()):
                problems.append(
                    f"invalid stage name {args[2]!r}: it must start with a letter and use only a-z 0-9 - _ ."
                )
        elif len(args) != 1:
            problems.append("FROM requires either one or three arguments: FROM <image> [AS <name>]")
    elif cmd in ("COPY", "ADD") and len(args) < 2:
        problems.append(f"{cmd} requires at least two arguments (sources and a destination)")
    elif cmd == "SHELL" and not instruction.json:
        problems.append('SHELL must be in JSON form, e.g. SHELL ["/bin/bash", "-o", "pipefail", "-c"]')
    elif cmd in ("CMD", "ENTRYPOINT", "RUN") and not instruction.json:
        text = instruction.shell_text.strip()
        if text.startswith("[") and text.endswith("]"):
            problems.append(
                f"{cmd} looks like exec form but is not valid JSON, so it runs through the shell as text; "
                'use double quotes: ["a", "b"]'
            )
        if cmd == "RUN" and not text and not instruction.heredocs:
            problems.append("RUN has no command")
    elif cmd == "HEALTHCHECK":
        kind = args[0].upper() if args else ""
        if kind not in ("CMD", "NONE"):
            problems.append("HEALTHCHECK takes CMD <command> or NONE")
        elif kind == "CMD" and len(args) < 2:
            problems.append("HEALTHCHECK CMD needs a command")
    elif cmd == "EXPOSE":
        problems.extend(
            f"EXPOSE {port!r} is not a port[/protocol]" for port in args if not _EXPOSE.match(port)
        )
    elif cmd in ("WORKDIR", "USER", "STOPSIGNAL") and len(args) != 1:
        problems.append(f"{cmd} requires exactly one argument")
    elif cmd in ("ENV", "LABEL", "ARG", "VOLUME", "ONBUILD") and not args:
        problems.append(f"{cmd} requires at least one argument")
    return problems


def check_parse(context: BuildContext) -> CheckResult:
    """Check 1: BuildKit's parser accepts the file and every instruction is well formed."""
    name = context.dockerfile_name
    if context.dockerfile_text is None:
        return outcome("parse", PARSE_TITLE, [Finding(f"{name} is missing; render the context first", name)])
    if context.parse_error is not None:
        line = locate_parse_error(context.dockerfile_text, context.parse_error)
        return outcome(
            "parse",
            PARSE_TITLE,
            [Finding(f"syntax error: {context.parse_error}; fix this instruction", name, line)],
        )
    model = context.model
    assert model is not None
    findings: list[Finding] = []
    seen_from = False
    stage_lines: dict[str, int] = {}
    for instruction in model.instructions:
        if instruction.cmd == "FROM":
            seen_from = True
            args = instruction.args
            if len(args) == 3 and args[1].lower() == "as":
                stage = args[2].lower()
                if stage in stage_lines:
                    findings.append(
                        Finding(
                            f"duplicate stage name {stage!r} (first defined on line {stage_lines[stage]}); rename one",
                            name,
                            instruction.line,
                        )
                    )
                stage_lines.setdefault(stage, instruction.line)
        elif not seen_from and instruction.cmd != "ARG":
            findings.append(
                Finding(
                    f"{instruction.cmd} comes before the first FROM; only ARG may precede FROM",
                    name,
                    instruction.line,
                )
            )
        findings.extend(
            Finding(problem, name, instruction.line) for problem in _instruction_problems(instruction)
        )
    if not seen_from:
        findings.append(Finding("no FROM instruction: a Dockerfile needs at least one build stage", name))
    return outcome("parse", PARSE_TITLE, findings)


# ---- check 2 -------------------------------------------------------------------------------------


def _stage_env(model: DockerfileModel) -> list[dict[str, str]]:
    """Each stage's environment after its ENV instructions, inherited along `FROM <stage>`."""
    envs: list[dict[str, str]] = []
    for stage in model.stages:
        parent = _parent(model, stage)
        env = dict(envs[parent.index]) if parent is not None else {}
        for instruction in stage.instructions:
            if instruction.cmd == "ENV":
                pairs = instruction.args
                for key, value in zip(pairs[::2], pairs[1::2], strict=False):
                    env[key] = value.strip('"').strip("'")
        envs.append(env)
    return envs


def _parent(model: DockerfileModel, stage: Stage) -> Stage | None:
    """The earlier stage this one is built `FROM`, if any."""
    earlier = [s for s in model.stages[: stage.index] if s.name == stage.base.lower()]
    if earlier:
        return earlier[-1]
    if stage.base.isdigit() and int(stage.base) < stage.index:
        return model.stages[int(stage.base)]
    return None


def _descendants(model: DockerfileModel, stage: Stage) -> list[Stage]:
    found: list[Stage] = []
    for candidate in model.stages[stage.index + 1 :]:
        parent = _parent(model, candidate)
        while parent is not None:
            if parent.index == stage.index:
                found.append(candidate)
                break
            parent = _parent(model, parent)
    return found


def root_image(model: DockerfileModel, stage: Stage) -> str:
    current = stage
    while (parent := _parent(model, current)) is not None:
        current = parent
    return current.base


def _mentions_path(text: str, path: str) -> bool:
    return re.search(rf"(^|[\s=:'\"]){re.escape(path.rstrip('/'))}(/|\s|$|['\";&|])", text) is not None


def _is_venv(env: dict[str, str], path: str) -> bool:
    path = path.rstrip("/")
    return env.get("VIRTUAL_ENV", "").rstrip("/") == path or env.get("PATH", "").startswith(f"{path}/bin")


def _changes_path(stage: Stage, env: dict[str, str], path: str) -> Instruction | None:
    """The first instruction of ``stage`` that writes into ``path`` (a copy target or a RUN naming it,
    or a package install while ``path`` is the active virtualenv)."""
    for instruction in stage.instructions:
        if instruction.cmd in ("COPY", "ADD") and len(instruction.args) >= 2:
            dest = instruction.args[-1].rstrip("/")
            if dest == path.rstrip("/") or dest.startswith(path.rstrip("/") + "/"):
                return instruction
        if instruction.cmd == "RUN":
            text = instruction.shell_text
            if _mentions_path(text, path):
                return instruction
            if _is_venv(env, path) and any(INSTALL_COMMAND.search(c) for c in commands_of(text)):
                return instruction
    return None


def _scratch_paths(stage: Stage) -> set[str] | None:
    """Paths a `FROM scratch` stage of only COPY/ADD contains (None when it is not that simple)."""
    if stage.base.lower() != "scratch":
        return None
    paths: set[str] = set()
    for instruction in stage.instructions:
        if instruction.cmd in ("COPY", "ADD") and len(instruction.args) >= 2:
            paths.add(instruction.args[-1].rstrip("/") or "/")
        elif instruction.cmd in ("RUN",):
            return None
    return paths


def _reference_problem(
    model: DockerfileModel, context: BuildContext, reference: str, current: Stage, what: str
) -> str | None:
    """Why ``reference`` (a FROM base or a --from) is not a stage defined above, a named context or a
    pinned image; None when it is fine."""
    lowered = reference.lower()
    if lowered == "scratch":
        return None
    if lowered.isdigit():
        if int(lowered) < current.index:
            return None
        return f"{what} refers to stage index {lowered}, which is not defined above this stage"
    defined = [s for s in model.stages if s.name == lowered]
    if any(s.index < current.index for s in defined):
        return None
    if defined:
        return (
            f"{what} uses stage {lowered!r} before it is defined (line {defined[0].line}); BuildKit would try "
            f"to pull an image called {lowered!r} instead: move that stage above this one"
        )
    if reference in context.named_contexts:
        return None
    image = parse_image(reference)
    if image.tag is None and image.digest is None:
        return (
            f"{what} names {reference!r}, which is no stage defined above, no named build context "
            f"(--build-context / compose additional_contexts) and no tagged image; define the stage, declare "
            f"the context, or pin the image's tag"
        )
    return None


def _cuda_tag_problem(reference: str) -> str | None:
    image = parse_image(reference)
    if not image.is_nvidia_cuda or image.tag is None or _CUDA_PATCH_TAG.match(image.tag):
        return None
    minor = _CUDA_MINOR_TAG.match(image.tag)
    example = f"{minor.group(1)}.<patch>{minor.group(2) or ''}" if minor else "<major>.<minor>.<patch>-..."
    return (
        f"{reference} has no patch version in its tag, and NVIDIA publishes CUDA tags only with one "
        f"(e.g. 12.4.1-base-ubuntu22.04): use nvidia/cuda:{example}"
    )


def check_stages(context: BuildContext) -> CheckResult:
    """Check 2: every stage reference resolves in order, the final base is a CUDA image without
    compilers (base, runtime or cudnn-runtime), CUDA tags carry a patch version, and no COPY --from
    takes a path that later stages still change."""
    model = context.model
    name = context.dockerfile_name
    if model is None:
        return outcome("stages", STAGES_TITLE, [Finding("the Dockerfile does not parse (see check 1)", name)])
    if not model.stages:
        return outcome("stages", STAGES_TITLE, [Finding("no build stage", name)])
    findings: list[Finding] = []
    envs = _stage_env(model)
    for stage in model.stages:
        problem = _reference_problem(model, context, stage.base, stage, f"FROM {stage.base}")
        if problem:
            findings.append(Finding(problem, name, stage.line))
        if _parent(model, stage) is None and (cuda := _cuda_tag_problem(stage.base)):
            findings.append(Finding(cuda, name, stage.line))
        for instruction in stage.instructions:
            sources = [instruction.flag("from")] if instruction.cmd == "COPY" else []
            if instruction.cmd == "RUN":
                sources += [
                    dict(part.split("=", 1) for part in raw.split(",") if "=" in part).get("from")
                    for raw in _mount_flags(instruction)
                ]
            for source in sources:
                if not source:
                    continue
                problem = _reference_problem(
                    model, context, source, stage, f"{instruction.cmd} --from={source}"
                )
                if problem:
                    findings.append(Finding(problem, name, instruction.line))
                    continue
                if instruction.cmd == "COPY":
                    findings.extend(_stale_copy(model, envs, stage, instruction, source, name))
    findings.extend(_extension_build_findings(model, envs, name))
    findings.extend(_docker_command_findings(context, model))
    final = model.stages[-1]
    root = root_image(model, final)
    image = parse_image(root)
    flavors = runtime_flavors()
    flavor = cuda_flavor(root) if image.is_nvidia_cuda else None
    if root.lower() == "scratch" or flavor not in flavors:
        kind = (
            "a devel image with compilers"
            if flavor and "devel" in flavor
            else "not a CUDA image without compilers"
        )
        findings.append(
            Finding(
                f"the final stage {final.label!r} is based on {root}, {kind}; base it on "
                f"nvidia/cuda:<x.y.z>-<{'|'.join(flavors)}>-<os> (torch's wheels bring CUDA and cuDNN, "
                "so base is enough) and copy what was built from the builder stages",
                name,
                final.line,
            )
        )
    return outcome("stages", STAGES_TITLE, findings)


def _mount_flags(instruction: Instruction) -> list[str]:
    return [raw.partition("=")[2] for raw in instruction.flags if raw[2:].lower().startswith("mount=")]


def _stale_copy(
    model: DockerfileModel,
    envs: list[dict[str, str]],
    stage: Stage,
    instruction: Instruction,
    source_stage_name: str,
    file: str,
) -> list[Finding]:
    source_stage = model.stage_named(source_stage_name)
    if source_stage is None or len(instruction.args) < 2:
        return []
    findings: list[Finding] = []
    scratch = _scratch_paths(source_stage)
    for path in instruction.args[:-1]:
        if not path.startswith("/") or any(ch in path for ch in "*?["):
            continue
        if scratch is not None:
            target = path.rstrip("/") or "/"
            if not any(
                p == target or p.startswith(target + "/") or target.startswith(p + "/") for p in scratch
            ):
                findings.append(
                    Finding(
                        f"COPY --from={source_stage.label} {path}: stage {source_stage.label!r} "
                        f"(FROM scratch) never creates {path}; it holds only {', '.join(sorted(scratch))}",
                        file,
                        instruction.line,
                    )
                )
            continue
        changers = []
        for later in _descendants(model, source_stage):
            if later.index == stage.index:
                continue
            changed = _changes_path(later, envs[later.index], path)
            if changed is not None:
                changers.append(f"{later.label} (line {changed.line})")
        if changers:
            findings.append(
                Finding(
                    f"COPY --from={source_stage.label} {path} copies {path} as stage {source_stage.label!r} "
                    f"left it, but the stages built on it change {path} afterwards: {', '.join(changers)}; "
                    f"what they install never reaches this stage. Copy from the last of those stages instead",
                    file,
                    instruction.line,
                )
            )
    return findings


def stage_summary(model: DockerfileModel) -> str:
    """One line: the stages and their bases (for notes)."""
    return json.dumps({stage.label: stage.base for stage in model.stages})


def _extension_build_findings(model: DockerfileModel, envs: list[dict[str, str]], file: str) -> list[Finding]:
    """Stages that compile a CUDA extension (an install/wheel of a named package with
    `--no-build-isolation`, or FORCE_CUDA set) need a devel base and the arch list (no GPU is visible in `docker build`)."""
    findings: list[Finding] = []
    for stage in model.stages:
        env = dict(envs[stage.index])
        for instruction in stage.instructions:
            if instruction.cmd == "ENV":
                env.update(zip(instruction.args[::2], instruction.args[1::2], strict=False))
            if instruction.cmd != "RUN":
                continue
            for command in split_commands(instruction.shell_text):
                if not INSTALL_COMMAND.search(command.text):
                    continue
                words = command.words
                named = [w for w in words if re.match(r"^[A-Za-z][A-Za-z0-9._-]*(\[.*\])?(==|>=|<=|~=|$)", w)]
                named = [
                    w
                    for w in named
                    if w not in {"pip", "pip3", "python", "python3", "uv", "install", "wheel"}
                    and not w.endswith((".txt", ".lock", ".in", ".whl"))
                ]
                builds = "--no-build-isolation" in words and bool(named)
                if not builds and env.get("FORCE_CUDA", "").strip('"') != "1":
                    continue
                root = parse_image(root_image(model, stage))
                if "devel" not in (root.tag or ""):
                    findings.append(
                        Finding(
                            f"stage {stage.label!r} compiles {', '.join(named) or 'a CUDA extension'} but is based on "
                            f"{root_image(model, stage)}, which has no nvcc; build it in a stage FROM a CUDA devel image",
                            file,
                            instruction.line,
                        )
                    )
                for package in named or ["(extension)"]:
                    variable = (
                        "FLASH_ATTN_CUDA_ARCHS" if _FLASH_ATTN.match(package) else "TORCH_CUDA_ARCH_LIST"
                    )
                    if not env.get(variable, "").strip('"'):
                        findings.append(
                            Finding(
                                f"stage {stage.label!r} compiles {package} without {variable}: a build sees no GPU, "
                                f'so set ENV {variable}="8.9" (the profile\'s compute capability) before this RUN',
                                file,
                                instruction.line,
                            )
                        )
                    elif variable == "FLASH_ATTN_CUDA_ARCHS":
                        problem = _flash_attn_arch_problem(package, env[variable].strip('"'))
                        if problem:
                            findings.append(
                                Finding(f"stage {stage.label!r}: {problem}", file, instruction.line)
                            )
    return findings


def _flash_attn_arch_problem(requirement: str, archs: str) -> str | None:
    """flash-attn's setup.py adds a -gencode only for the archs it knows (80/90/100/120 for 2.7.4.post1);
    a list naming none of them compiles no kernel, then fails looking for a GPU the builder lacks."""
    from zr4.compat import flash_attn_compile_archs

    version = requirement.partition("==")[2] or None
    known = flash_attn_compile_archs(version)
    if not known:
        return None  # a version the matrix does not describe: nothing to compare with
    named = [arch.strip() for arch in archs.split(";") if arch.strip()]
    if any(arch in known for arch in named):
        return None
    return (
        f"FLASH_ATTN_CUDA_ARCHS={archs} names no arch flash-attn {version} compiles (its setup.py knows "
        f"{', '.join(known)}; sm_8x cards run the 80 build), so the build makes no kernel; use e.g. "
        f'FLASH_ATTN_CUDA_ARCHS="80"'
    )


_DOCKER_BUILD = re.compile(r"\bdocker\s+(?:buildx\s+)?build\b[^\n]*")


def _docker_command_findings(context: BuildContext, model: DockerfileModel) -> list[Finding]:
    """`docker build` lines in the context (scripts, comments, docs): real flags, real targets (docs.docker.com/reference/cli/docker/buildx/build/)."""
    stage_names = {stage.name for stage in model.stages if stage.name}
    findings: list[Finding] = []
    for relative in [
        context.dockerfile_name,
        *context.shell_scripts,
        *(f for f in context.files if f.endswith(".md")),
    ]:
        for number, line in enumerate((context.read(relative) or "").splitlines(), start=1):
            match = _DOCKER_BUILD.search(line)
            if not match:
                continue
            words = match.group(0).split()
            for index, word in enumerate(words):
                flag, _, value = word.partition("=")
                if flag in ("-e", "--env"):
                    findings.append(
                        Finding(
                            f"`docker build` has no {flag} flag; pass build-time values with --build-arg NAME=value "
                            f"and run-time values with `docker run -e`",
                            relative,
                            number,
                        )
                    )
                elif flag == "--target":
                    target = value or (words[index + 1] if index + 1 < len(words) else "")
                    if target and target not in stage_names and not target.startswith("$"):
                        findings.append(
                            Finding(
                                f"`docker build --target {target}` names no stage of the Dockerfile; targets are stage "
                                f"names: {', '.join(sorted(stage_names))}",
                                relative,
                                number,
                            )
                        )
    return findings
