"""Check 7: credentials reach the container only at run time.

- Dockerfile: no `ENV`/`ARG` declares a credential. Both are stored in the image config or its
  history (docker docs, "Build secrets"; BuildKit's SecretsUsedInArgOrEnv rule); build-time
  secrets belong in `RUN --mount=type=secret`.
- Compose: a credential is passed through from the user's shell (`${HF_TOKEN:-}`), never written.
- RunPod template: a credential's value is a `{{ RUNPOD_SECRET_<name> }}` placeholder (RunPod
  docs, "Secrets") or empty.
- Every text file: nothing that looks like a real token (Hugging Face `hf_...`, AWS `AKIA...`,
  a generated zr4 auth token `zr4_...`), except in `.env` when `.dockerignore` keeps it out of the
  image: that file is where compose reads the user's credentials from (docker docs, "Set environment
  variables within your container's environment": the `.env` file beside the compose file), so a token
  there is in its place, not baked in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zr4.validate.context import BuildContext
from zr4.validate.dockerignore import BadPatternError, DockerIgnore
from zr4.validate.model import CheckResult, Finding, outcome

TITLE = "no credentials baked into image, compose or template"
CREDENTIAL_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL|AUTH_KEY)", re.IGNORECASE
)
_PASS_THROUGH = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*(:?-)?\}?$")
_RUNPOD_SECRET = re.compile(r"^\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_]+\s*\}\}$")
# Token shapes: Hugging Face user access tokens (hf_ + 34 letters), AWS access key ids, private keys.
TOKEN_SHAPES = (
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), "a Hugging Face token"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    # zr4.core.auth_settings.generate_token: "zr4_" + 43 URL-safe base64 characters.
    (re.compile(r"\bzr4_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"), "a zr4 auth token"),
)


def _dockerfile_findings(context: BuildContext) -> list[Finding]:
    findings: list[Finding] = []
    for instruction in context.instructions("ENV", "ARG"):
        if instruction.cmd == "ENV":
            names = list(zip(instruction.args[::2], instruction.args[1::2], strict=False))
        else:
            names = [tuple(arg.split("=", 1)) if "=" in arg else (arg, "") for arg in instruction.args]  # type: ignore[misc]
        for name, value in names:
            if not CREDENTIAL_NAME.search(name):
                continue
            given = " with a value" if value.strip('"') else ""
            findings.append(
                Finding(
                    f"{instruction.cmd} {name}{given} puts a credential into the image (config or history, "
                    f"readable by anyone with the image); remove it and pass {name} at run time "
                    f"(docker run -e / RunPod secret), or use RUN --mount=type=secret for build-time use",
                    context.dockerfile_name,
                    instruction.line,
                )
            )
    return findings


def _environment_items(raw: Any) -> list[tuple[str, str | None]]:
    if isinstance(raw, dict):
        return [(str(k), None if v is None else str(v)) for k, v in raw.items()]
    items: list[tuple[str, str | None]] = []
    for entry in raw or []:
        key, sep, value = str(entry).partition("=")
        items.append((key, value if sep else None))
    return items


def _default_of(value: str) -> str:
    match = re.match(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}$", value)
    return match.group(1) if match else ""


def _compose_findings(context: BuildContext) -> list[Finding]:
    document, _ = context.compose
    file = context.compose_file or "docker-compose.yml"
    findings: list[Finding] = []
    if not document:
        return findings
    for service_name, service in (document.get("services") or {}).items():
        if not isinstance(service, dict):
            continue
        build = service.get("build")
        build = build if isinstance(build, dict) else {}
        sections = (("environment", service.get("environment")), ("build.args", build.get("args")))
        for section, raw in sections:
            for name, value in _environment_items(raw):
                if not CREDENTIAL_NAME.search(name) or value in (None, ""):
                    continue
                if _PASS_THROUGH.match(value) or (value.startswith("${") and not _default_of(value)):
                    if section == "build.args":
                        findings.append(
                            Finding(
                                f"services.{service_name}.build.args.{name} passes a credential as a build "
                                f"argument, which stays in the image history; use build secrets instead",
                                file,
                            )
                        )
                    continue
                findings.append(
                    Finding(
                        f"services.{service_name}.{section}.{name} is given a value in the compose file; "
                        f"write `{name}: ${{{name}:-}}` and set it in your shell or an untracked .env file",
                        file,
                    )
                )
    return findings


RUNPOD_TEMPLATES = ("runpod-template.json", "runpod-serverless-template.json")


def _runpod_findings(context: BuildContext) -> list[Finding]:
    return [finding for file in RUNPOD_TEMPLATES for finding in _template_findings(context, file)]


def _template_findings(context: BuildContext, file: str) -> list[Finding]:
    text = context.read(file)
    if text is None:
        return []
    try:
        template = json.loads(text)
    except json.JSONDecodeError as error:
        return [Finding(f"not valid JSON: {error}", file)]
    env = template.get("env") or []
    pairs = (
        [(str(e.get("key")), str(e.get("value", ""))) for e in env if isinstance(e, dict)]
        if isinstance(env, list)
        else [(str(k), str(v)) for k, v in env.items()]
    )
    findings: list[Finding] = []
    for name, value in pairs:
        if CREDENTIAL_NAME.search(name) and value and not _RUNPOD_SECRET.match(value.strip()):
            findings.append(
                Finding(
                    f"env {name} has a literal value; use {{{{ RUNPOD_SECRET_{name} }}}} so RunPod fills it "
                    f"from the account's secrets at pod start",
                    file,
                )
            )
    return findings


COMPOSE_ENV_FILE = ".env"


def _kept_out_of_the_image(context: BuildContext, relative: str) -> bool:
    """Whether ``relative`` is compose's own credentials file and the context's ``.dockerignore`` excludes it."""
    if relative != COMPOSE_ENV_FILE:
        return False
    try:
        ignore = DockerIgnore.for_context(context.root, context.dockerfile_name)
    except (OSError, BadPatternError):
        return False
    return ignore.is_excluded(relative)


def _token_findings(context: BuildContext) -> list[Finding]:
    findings: list[Finding] = []
    for relative in context.files:
        if _kept_out_of_the_image(context, relative):
            continue
        path = context.root / relative
        try:
            if path.stat().st_size > 5_000_000:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for shape, what in TOKEN_SHAPES:
                if shape.search(line):
                    findings.append(
                        Finding(
                            f"this line holds what looks like {what}; remove it, revoke it, and pass it at run time",
                            relative,
                            number,
                        )
                    )
    return findings


def check_secrets(context: BuildContext) -> CheckResult:
    """Check 7."""
    findings = (
        _dockerfile_findings(context)
        + _compose_findings(context)
        + _runpod_findings(context)
        + _token_findings(context)
    )
    return outcome("secrets", TITLE, findings)
