"""Check 3: every COPY/ADD source exists in its build context and survives the ignore file.

Plain `COPY` reads the main context (the rendered directory) through its `.dockerignore`;
`COPY --from=<name>` with a named context (`--build-context zr4=.`, compose `additional_contexts`)
reads that directory through *its* `.dockerignore`. Sources are relative to the context root
(a leading `/` means the root); wildcards follow Go's `filepath.Match` (docs.docker.com, COPY).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import Instruction
from zr4.validate.dockerignore import BadPatternError, DockerIgnore, go_clean
from zr4.validate.model import CheckResult, Finding, outcome

TITLE = "COPY/ADD sources exist and pass .dockerignore"
_WILDCARD = re.compile(r"[*?\[]")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^git@", re.I)


def _match_segments(pattern: str, path: str) -> bool:
    """`filepath.Match`: wildcards never cross `/`."""
    pattern_parts, path_parts = pattern.split("/"), path.split("/")
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(part, want) for part, want in zip(path_parts, pattern_parts, strict=True)
    )


def _all_paths(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def source_problem(root: Path, ignore: DockerIgnore, source: str, label: str) -> str | None:
    """Why ``source`` would not reach the build from the context at ``root`` (None = it does)."""
    cleaned = go_clean(source)
    relative = cleaned.lstrip("/") or "."
    if relative == ".." or relative.startswith("../"):
        return f"source {source} points outside the {label} ({root}); move the file into it"
    if relative == ".":
        return None
    if _WILDCARD.search(relative):
        matches = [p for p in _all_paths(root) if _match_segments(relative, p)]
        sent = [p for p in matches if not ignore.is_excluded(p)]
        if sent:
            return None
        if matches:
            pattern = ignore.excluded_by(matches[0])
            assert pattern is not None
            return (
                f"source {source} matches only files that {ignore.source} {pattern.describe()} excludes "
                f"from the {label} ({', '.join(matches[:3])}); add an exception like `!{matches[0]}`"
            )
        return f"source {source} matches nothing in the {label} ({root}); check the name"
    path = root / relative
    if not path.exists():
        return f"source {source} does not exist in the {label} ({root}); render or create it, or fix the path"
    pattern = ignore.excluded_by(relative)
    if path.is_dir():
        inside = [p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()]
        sent = [p for p in inside if not ignore.is_excluded(p)]
        if sent:
            return None
        if pattern is not None:
            return (
                f"source {source}/ is excluded by {ignore.source} {pattern.describe()} of the {label}, so "
                f"the build never sees it; remove that line or add `!{relative}/` after it"
            )
        if inside:
            first = ignore.excluded_by(inside[0])
            assert first is not None
            return (
                f"every file under {source}/ is excluded by {ignore.source} {first.describe()} of the "
                f"{label}, so COPY would create an empty directory; add an exception for them"
            )
        return None
    if pattern is not None:
        return (
            f"source {source} is excluded by {ignore.source} {pattern.describe()} of the {label}, so the "
            f"build fails with 'not found'; remove that line or add `!{relative}` after it"
        )
    return None


def _sources(instruction: Instruction) -> list[str]:
    """Local sources: heredocs (`<<EOF`) and URLs (ADD) are not files of a context."""
    return [arg for arg in instruction.args[:-1] if not arg.startswith("<<") and not _URL.match(arg)]


def check_context(context: BuildContext) -> CheckResult:
    """Check 3 over every COPY/ADD of the Dockerfile."""
    file = context.dockerfile_name
    if context.model is None:
        return outcome("context", TITLE, [Finding("the Dockerfile does not parse (see check 1)", file)])
    findings: list[Finding] = []
    notes: list[str] = []
    ignores: dict[Path, DockerIgnore] = {}
    unchecked: set[str] = set()
    for stage in context.model.stages:
        for instruction in stage.instructions:
            if instruction.cmd not in ("COPY", "ADD") or len(instruction.args) < 2:
                continue
            source_name = instruction.flag("from") if instruction.cmd == "COPY" else None
            if source_name is None:
                root, label = context.root, "build context"
            elif source_name in context.named_contexts:
                root, label = context.named_contexts[source_name], f"named build context {source_name!r}"
            else:
                continue  # a stage or an image: check 2 covers it
            if not root.is_dir():
                if source_name:
                    unchecked.add(source_name)
                    continue
                findings.append(Finding(f"the {label} {root} is not a directory", file, instruction.line))
                continue
            if root not in ignores:
                try:
                    ignores[root] = context.ignore_for(root)
                except BadPatternError as error:
                    findings.append(Finding(f"{root}/.dockerignore: {error}", file, instruction.line))
                    ignores[root] = DockerIgnore("")
            for source in _sources(instruction):
                problem = source_problem(root, ignores[root], source, label)
                if problem:
                    findings.append(Finding(f"{instruction.cmd}: {problem}", file, instruction.line))
    for name in sorted(unchecked):
        notes.append(f"named context {name!r} is not available here, so its COPY sources were not checked")
    return outcome("context", TITLE, findings, notes)
