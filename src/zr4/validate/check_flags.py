"""Check 9: every ComfyUI command-line flag the context can emit is accepted by the pinned ComfyUI.

Flags come from three places: (1) command lines in the context that start ComfyUI (`main.py ...` in
a script, the Dockerfile, the compose `command`, the RunPod `dockerStartCmd`); (2) values of
variables that carry ComfyUI arguments (`COMFYUI_ARGS` and the like) in ENV, scripts, compose
environment and the RunPod template; (3) what `zr4 start` itself passes: its own flags and the VRAM
planner's choice for the profile. The accepted set per version is `data/comfyui_flags.yaml`
(`zr4.core.comfy_flags`), which also knows each flag's arity and exclusive groups, so
`--medvram` / `--cpu-text-encoder` (other UIs' flags, absent from comfyanonymous/ComfyUI@f59f71cf:comfy/cli_args.py) fail here.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, outcome
from zr4.validate.shell import split_commands

TITLE = "ComfyUI flags accepted by the pinned version"
ARGS_VARIABLE = re.compile(
    r"^(COMFYUI_ARGS|COMFYUI_EXTRA_ARGS|COMFY_ARGS|COMFYUI_FLAGS|CLI_ARGS|EXTRA_ARGS)$"
)
_ASSIGNMENT = re.compile(r"(?:^|\s|export\s+)([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)")


def _tokens(text: str) -> list[str]:
    """Shell words, without the ones that expand a variable (their value is checked where it is set)."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    return [word for word in words if not word.startswith("$")]


def _flags_after_main(command: str) -> list[str] | None:
    """The arguments of a `python main.py ...` command line (None when it does not start ComfyUI)."""
    words = _tokens(command)
    for index, word in enumerate(words):
        if word == "main.py" or word.endswith("/main.py"):
            return [w for w in words[index + 1 :] if not w.startswith("$")]
    return None


def collect_arguments(context: BuildContext) -> list[tuple[str, int | None, list[str]]]:
    """(file, line, argument tokens) for every place the context passes arguments to ComfyUI."""
    found: list[tuple[str, int | None, list[str]]] = []

    def from_shell(file: str, line: int | None, text: str) -> None:
        for command in split_commands(text):
            args = _flags_after_main(command.text)
            if args:
                found.append((file, line, args))
            for name, value in _ASSIGNMENT.findall(command.text):
                if ARGS_VARIABLE.match(name):
                    found.append((file, line, _tokens(value.strip("'\""))))

    for script in context.shell_scripts:
        for number, line in enumerate((context.read(script) or "").splitlines(), start=1):
            if not line.lstrip().startswith("#"):
                from_shell(script, number, line)
    for instruction in context.instructions("RUN", "CMD", "ENTRYPOINT", "ENV"):
        if instruction.cmd == "ENV":
            for name, value in zip(instruction.args[::2], instruction.args[1::2], strict=False):
                if ARGS_VARIABLE.match(name):
                    found.append((context.dockerfile_name, instruction.line, _tokens(value.strip("'\""))))
        elif instruction.json:
            args = _flags_after_main(shlex.join(instruction.args))
            if args:
                found.append((context.dockerfile_name, instruction.line, args))
        else:
            from_shell(context.dockerfile_name, instruction.line, instruction.shell_text)
    found.extend(_compose_arguments(context))
    found.extend(_runpod_arguments(context))
    return found


def _compose_arguments(context: BuildContext) -> list[tuple[str, int | None, list[str]]]:
    document, _ = context.compose
    file = context.compose_file or "docker-compose.yml"
    found: list[tuple[str, int | None, list[str]]] = []
    for service in ((document or {}).get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        command = service.get("command")
        if command:
            text = command if isinstance(command, str) else shlex.join(map(str, command))
            args = _flags_after_main(text)
            if args:
                found.append((file, None, args))
        environment = service.get("environment") or {}
        items: Any = (
            environment.items()
            if isinstance(environment, dict)
            else (str(e).split("=", 1) for e in environment if "=" in str(e))
        )
        for name, value in items:
            if ARGS_VARIABLE.match(str(name)) and value:
                text = re.sub(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}$", r"\1", str(value))
                found.append((file, None, _tokens(text)))
    return found


def _runpod_arguments(context: BuildContext) -> list[tuple[str, int | None, list[str]]]:
    text = context.read("runpod-template.json")
    if not text:
        return []
    try:
        template = json.loads(text)
    except json.JSONDecodeError:
        return []
    found: list[tuple[str, int | None, list[str]]] = []
    start = template.get("dockerStartCmd")
    if isinstance(start, str) and (args := _flags_after_main(start)):
        found.append(("runpod-template.json", None, args))
    for entry in template.get("env") or []:
        if isinstance(entry, dict) and ARGS_VARIABLE.match(str(entry.get("key", ""))) and entry.get("value"):
            found.append(("runpod-template.json", None, _tokens(str(entry["value"]))))
    return found


def check_flags(context: BuildContext) -> CheckResult:
    """Check 9."""
    profile, problem = context.profile
    if profile is None:
        return outcome(
            "flags", TITLE, [Finding(f"{problem}; the ComfyUI version is unknown", "profile.json")]
        )
    version = profile.comfyui.version
    try:
        from zr4.core.comfy_flags import FlagDataError, flag_set, split_args
    except ImportError:  # pragma: no cover - the flag data ships with zr4
        return outcome("flags", TITLE, [Finding("zr4.core.comfy_flags is not available")])
    try:
        flags = flag_set(version)
    except FlagDataError as error:
        return outcome("flags", TITLE, [Finding(str(error), "profile.json")])
    findings: list[Finding] = []
    notes: list[str] = [f"ComfyUI {version}: {len(flags.flags)} accepted flags (data/comfyui_flags.yaml)"]
    for file, line, args in collect_arguments(context):
        split = split_args(args, flags)
        for rejected in split.rejected:
            findings.append(
                Finding(
                    f"ComfyUI {version} rejects `{' '.join(rejected.tokens)}` ({rejected.reason}); "
                    f"argparse would exit and the pod crash-loop: remove it or use a flag from "
                    f"data/comfyui_flags.yaml",
                    file,
                    line,
                )
            )
    findings.extend(_runtime_findings(profile, flags, notes))
    return outcome("flags", TITLE, findings, notes)


def _runtime_findings(profile: Any, flags: Any, notes: list[str]) -> list[Finding]:
    """What `zr4 start` passes: its own flags plus the planner's for this profile's GPU."""
    from zr4.core.comfy_flags import split_args

    findings: list[Finding] = []
    own: tuple[str, ...] = ("--listen", "--port", "--output-directory")
    try:
        from zr4.core.comfy_launch import OWNED_FLAGS

        own = tuple(OWNED_FLAGS)
    except ImportError:
        pass
    missing = [flag for flag in own if flag not in flags]
    if missing:
        findings.append(
            Finding(f"zr4 start passes {', '.join(missing)}, which ComfyUI {flags.version} does not accept")
        )
    try:
        from zr4.validate.check_budget import plan_for_profile
    except ImportError:  # pragma: no cover
        return findings
    planned = plan_for_profile(profile)
    if planned is None:
        return findings
    split = split_args(list(planned.comfyui_args), flags)
    findings.extend(
        Finding(f"the VRAM planner would pass `{' '.join(r.tokens)}`: {r.reason}") for r in split.rejected
    )
    notes.append(f"flags zr4 start passes on this GPU: {' '.join((*own, *planned.comfyui_args))}")
    return findings
