"""Render a profile's templates into the files of a build context (pure: nothing is written here).

Writing them into a folder, and comparing them with one, is zr4.render.output's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from zr4.errors import Zr4Error
from zr4.paths import templates_dir
from zr4.profile.models import Profile
from zr4.render.context import build_context_vars, header
from zr4.render.context_manifest import MANIFEST_NAME, format_manifest
from zr4.render.extras import (
    compile_lock_file,
    flash_attn_lock_file,
    lock_files,
    manifest_file,
    workflow_files,
    zr4_wheel_files,
)
from zr4.render.filters import FILTERS, UnsafeValueError

# Template name -> path in the build context, and whether it is executable.
TEMPLATES: tuple[tuple[str, str, bool], ...] = (
    ("Dockerfile.j2", "Dockerfile", False),
    ("dockerignore.j2", ".dockerignore", False),
    ("start.sh.j2", "start.sh", True),
    ("docker-compose.yml.j2", "docker-compose.yml", False),
    ("profile.json.j2", "profile.json", False),
    ("runpod-template.json.j2", "runpod-template.json", False),
    ("runpod-serverless-template.json.j2", "runpod-serverless-template.json", False),
)


@dataclass(frozen=True)
class RenderedFile:
    """One file of the build context: relative path, bytes, and whether it is executable.

    ``artifact`` marks a build artifact (zr4's wheel and its hash): rendered into every context but not
    committed, and not compared by ``render --check``, because its bytes follow every line of zr4's code.
    """

    path: str
    content: bytes
    executable: bool = False
    artifact: bool = False


class RenderError(Zr4Error):
    """A template could not be rendered for this profile."""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def render_files(profile: Profile) -> list[RenderedFile]:
    """Every file of the build context for ``profile``, sorted by path (pure: no writes)."""
    variables = build_context_vars(profile)
    env = _environment()
    files: list[RenderedFile] = []
    for template_name, out_path, executable in TEMPLATES:
        try:
            text = env.get_template(template_name).render(**variables)
        except UnsafeValueError as error:
            raise RenderError(f"profile {profile.name}: {error}") from error
        except TemplateError as error:
            raise RenderError(f"template {template_name}: {error}") from error
        files.append(RenderedFile(out_path, text.encode("utf-8"), executable))
    files.extend(RenderedFile(path, content) for path, content in lock_files(profile).items())
    if variables["build_mmcv"] or variables["build_flash_attn_from_source"]:
        files.append(RenderedFile("compile.lock", compile_lock_file(profile)))
    if variables["flash_attn_wheel_url"]:
        files.append(RenderedFile("flash-attn.lock", flash_attn_lock_file(profile)))
    files.extend(RenderedFile(path, content, artifact=True) for path, content in zr4_wheel_files().items())
    files.append(RenderedFile("models.yaml", manifest_file(profile)))
    files.extend(RenderedFile(path, content) for path, content in workflow_files(profile))
    entries = [(item.path, item.artifact) for item in files]
    files.append(RenderedFile(MANIFEST_NAME, format_manifest(header(profile), profile.name, entries)))
    return sorted(files, key=lambda item: item.path)
