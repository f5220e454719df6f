"""Render a profile's templates into files, write them atomically, or compare with what is on disk.

Rendering is pure (profile -> list of files); writing goes to a temporary sibling directory that
replaces the target only when every file rendered, so a bad profile never leaves partial output.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from zr4.errors import Zr4Error
from zr4.paths import templates_dir
from zr4.profile.models import Profile
from zr4.render.context import build_context_vars
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
    return sorted(files, key=lambda item: item.path)


def _write_tree(root: Path, files: list[RenderedFile]) -> None:
    for item in files:
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.content)
        mode = 0o755 if item.executable else 0o644
        os.chmod(target, mode)


def write_context(files: list[RenderedFile], out_dir: Path) -> None:
    """Replace ``out_dir`` with exactly ``files``; nothing changes unless every file was written."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.render-", dir=out_dir.parent))
    try:
        _write_tree(staging, files)
        os.chmod(staging, 0o755)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            retired.rmdir()
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_rendered(files: list[RenderedFile], out_dir: Path) -> list[str]:
    """Paths that differ between ``files`` and ``out_dir`` (missing, changed, extra, or wrong mode).

    Artifacts (zr4's wheel) are neither required nor compared: ``zr4 render`` rewrites them.
    """
    differences: list[str] = []
    artifacts = {item.path for item in files if item.artifact}
    expected = {item.path: item for item in files if not item.artifact}
    for path, item in expected.items():
        target = out_dir / path
        if not target.is_file():
            differences.append(f"{path} (missing)")
            continue
        if target.read_bytes() != item.content:
            differences.append(f"{path} (content differs)")
        elif bool(target.stat().st_mode & stat.S_IXUSR) != item.executable:
            differences.append(f"{path} (executable bit differs)")
    if out_dir.is_dir():
        for target in sorted(out_dir.rglob("*")):
            relative = target.relative_to(out_dir).as_posix()
            if target.is_file() and relative not in expected and relative not in artifacts:
                differences.append(f"{relative} (not rendered any more)")
    return differences
