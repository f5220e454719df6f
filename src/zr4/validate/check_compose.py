"""Check 6: the compose file validates against the Compose Specification's JSON Schema, and the
service reserves a GPU, publishes 8188 and has a healthcheck.

The schema is vendored as `data/compose-spec.json` (compose-spec/compose-go v2.13.0, the file
compose-spec/compose-spec's `schema/README.md` names as the original; see
`data/compose-spec.README.md`). GPU reservations follow the Compose spec's
`deploy.resources.reservations.devices` (capabilities `[gpu]`) or the service-level `gpus`.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from zr4.paths import data_dir
from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import parse_image
from zr4.validate.model import CheckResult, Finding, outcome

TITLE = "compose file: schema, GPU, port 8188, healthcheck"
COMFYUI_PORT = 8188


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((data_dir() / "compose-spec.json").read_text(encoding="utf-8"))
    return schema


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _reserves_gpu(service: dict[str, Any]) -> bool:
    if service.get("gpus"):
        return True
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    )
    return any(
        "gpu" in (device.get("capabilities") or []) for device in devices or [] if isinstance(device, dict)
    )


def _publishes(service: dict[str, Any], port: int) -> bool:
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if str(entry.get("target")) == str(port) and entry.get("published") not in (None, ""):
                return True
            continue
        text = str(entry).split("/")[0]
        parts = text.split(":")
        if len(parts) >= 2 and parts[-1] == str(port):
            return True
    return False


def _has_healthcheck(service: dict[str, Any]) -> bool:
    health = service.get("healthcheck")
    return isinstance(health, dict) and not health.get("disable") and bool(health.get("test"))


def check_compose(context: BuildContext) -> CheckResult:
    """Check 6."""
    document, error = context.compose
    file = context.compose_file or "docker-compose.yml"
    if document is None:
        return outcome("compose", TITLE, [Finding(f"{error}; render the context with `zr4 render`", file)])
    findings: list[Finding] = []
    validator = Draft202012Validator(compose_schema())
    for problem in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        message = problem.message
        if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
            allowed = set(problem.schema.get("properties", {}))
            unknown = sorted(k for k in problem.instance if k not in allowed and not str(k).startswith("x-"))
            message = (
                f"unknown key {', '.join(map(repr, unknown))}: the Compose Specification allows only its "
                f"own keys and x- extensions"
            )
        findings.append(
            Finding(f"at {_path(problem.absolute_path)}: {message} (Compose Specification schema)", file)
        )
    services = document.get("services") or {}
    if not isinstance(services, dict) or not services:
        findings.append(Finding("no services: define the ComfyUI service", file))
        return outcome("compose", TITLE, findings)
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        where = f"services.{name}"
        if not _reserves_gpu(service):
            findings.append(
                Finding(
                    f"{where} reserves no GPU; add deploy.resources.reservations.devices "
                    f"[{{driver: nvidia, count: 1, capabilities: [gpu]}}]",
                    file,
                )
            )
        if not _publishes(service, COMFYUI_PORT):
            findings.append(
                Finding(
                    f'{where} does not publish ComfyUI\'s port {COMFYUI_PORT}; add ports: ["8188:8188"]', file
                )
            )
        if not _has_healthcheck(service):
            findings.append(
                Finding(
                    f'{where} has no healthcheck; add healthcheck: {{test: ["CMD", "zr4", "health"]}}', file
                )
            )
        findings.extend(_build_problems(context, where, service, file))
    return outcome("compose", TITLE, findings)


def _build_problems(context: BuildContext, where: str, service: dict[str, Any], file: str) -> list[Finding]:
    """The service's build points at this Dockerfile and provides every named context it uses."""
    build = service.get("build")
    if build is None:
        return []
    if isinstance(build, str):
        build = {"context": build}
    findings: list[Finding] = []
    base = (context.root / str(build.get("context", "."))).resolve()
    dockerfile = base / str(build.get("dockerfile", "Dockerfile"))
    if not dockerfile.is_file():
        findings.append(Finding(f"{where}.build points at {dockerfile}, which does not exist", file))
    provided = build.get("additional_contexts") or {}
    names = set(provided) if isinstance(provided, dict) else {str(e).split("=", 1)[0] for e in provided}
    stage_names = {stage.name for stage in context.model.stages} if context.model else set()
    for instruction in context.instructions("COPY"):
        source = instruction.flag("from")
        if not source or source.lower() in stage_names or source.isdigit() or source in names:
            continue
        image = parse_image(source)
        if image.tag is None and image.digest is None:
            findings.append(
                Finding(
                    f"{where}.build lacks additional_contexts.{source}, which COPY --from={source} "
                    f"(Dockerfile line {instruction.line}) reads; `docker compose build` would look for an image "
                    f"called {source!r}",
                    file,
                )
            )
    return findings
