"""A build context on disk, loaded once and shared by every check."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from zr4.validate.dockerfile_model import DockerfileModel, Instruction, build_model, parse_text
from zr4.validate.dockerignore import BadPatternError, DockerIgnore

SHELL_SUFFIXES = (".sh", ".bash")


@dataclass
class BuildContext:
    """The directory `docker build` receives, plus the named contexts (`--build-context NAME=PATH`)."""

    root: Path
    dockerfile_name: str = "Dockerfile"
    named_contexts: dict[str, Path] = field(default_factory=dict)

    # ---- files ----------------------------------------------------------------------------------
    def read(self, relative: str) -> str | None:
        path = self.root / relative
        return path.read_text(encoding="utf-8") if path.is_file() else None

    @cached_property
    def files(self) -> list[str]:
        """Every regular file of the context, relative, sorted."""
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    @cached_property
    def shell_scripts(self) -> list[str]:
        """Files that are shell scripts: a `.sh` suffix or a `sh`/`bash` shebang."""
        found: list[str] = []
        for relative in self.files:
            path = self.root / relative
            if relative.endswith(SHELL_SUFFIXES):
                found.append(relative)
                continue
            try:
                with path.open("rb") as handle:
                    first = handle.readline(200)
            except OSError:
                continue
            if first.startswith(b"#!") and any(
                first.rstrip().endswith(shell) for shell in (b"/sh", b"/bash", b" sh", b" bash")
            ):
                found.append(relative)
        return found

    # ---- Dockerfile -----------------------------------------------------------------------------
    @cached_property
    def dockerfile_text(self) -> str | None:
        return self.read(self.dockerfile_name)

    @cached_property
    def _parsed(self) -> tuple[DockerfileModel | None, str | None]:
        import dockerfile

        if self.dockerfile_text is None:
            return None, f"{self.dockerfile_name} is missing from {self.root}"
        try:
            return build_model(parse_text(self.dockerfile_text)), None
        except dockerfile.GoParseError as error:
            return None, str(error)

    @property
    def model(self) -> DockerfileModel | None:
        """The parsed Dockerfile, or None when it is missing or does not parse (see check 1)."""
        return self._parsed[0]

    @property
    def parse_error(self) -> str | None:
        return self._parsed[1]

    def instructions(self, *commands: str) -> list[Instruction]:
        if self.model is None:
            return []
        return [i for i in self.model.instructions if not commands or i.cmd in commands]

    # ---- ignore files ---------------------------------------------------------------------------
    def ignore_for(self, context_root: Path) -> DockerIgnore:
        """The ignore rules of a context root (raises BadPatternError for a malformed file)."""
        name = self.dockerfile_name if context_root == self.root else "Dockerfile"
        return DockerIgnore.for_context(context_root, name)

    # ---- structured files -----------------------------------------------------------------------
    @cached_property
    def compose_file(self) -> str | None:
        """The compose file's name in the context (Compose's own search order), or None."""
        names = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
        return next((name for name in names if (self.root / name).is_file()), None)

    @cached_property
    def compose(self) -> tuple[dict[str, Any] | None, str | None]:
        """(document, error) of the compose file."""
        if self.compose_file is None:
            return None, "no compose file (docker-compose.yml) in the context"
        text = self.read(self.compose_file) or ""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            return None, f"{self.compose_file} is not valid YAML: {error}"
        if not isinstance(document, dict):
            return None, f"{self.compose_file} must be a mapping at the top level"
        return document, None

    @cached_property
    def profile(self) -> tuple[Any, str | None]:
        """(Profile, error) read from the context's `profile.json`, as the image reads it."""
        from pydantic import ValidationError

        from zr4.profile import Profile

        text = self.read("profile.json")
        if text is None:
            return None, "profile.json is missing from the context; render it with `zr4 render`"
        try:
            return Profile.model_validate_json(text), None
        except ValidationError as error:
            return None, f"profile.json does not validate: {str(error).splitlines()[0]}"


def named_contexts_from_compose(context: BuildContext) -> dict[str, Path]:
    """`build.additional_contexts` of the compose services that build this directory."""
    document, _ = context.compose
    found: dict[str, Path] = {}
    if not document:
        return found
    for service in (document.get("services") or {}).values():
        build = service.get("build") if isinstance(service, dict) else None
        if not isinstance(build, dict):
            continue
        base = (context.root / str(build.get("context", "."))).resolve()
        extra = build.get("additional_contexts") or {}
        items = extra.items() if isinstance(extra, dict) else (e.split("=", 1) for e in extra if "=" in e)
        for name, value in items:
            value = str(value)
            if "://" in value or value.startswith(("docker-image:", "service:", "target:")):
                continue
            found[str(name)] = (base / value).resolve()
    return found


__all__ = ["BadPatternError", "BuildContext", "named_contexts_from_compose"]
