"""Docker's `.dockerignore` rules, ported from the code BuildKit runs.

Sources (read with the repository mirror, moby/patternmatcher at 5a6d842, v0.6.1+):
- `ignorefile/ignorefile.go` `ReadAll`: a UTF-8 BOM is dropped; lines *starting* with `#` are
  comments; each line is trimmed, cleaned (Go `filepath.Clean`) and loses one leading `/`; `!`
  marks an exception and is handled before cleaning.
- `patternmatcher.go` `New` + `MatchesOrParentMatches`: patterns are trimmed and cleaned again;
  patterns apply in order and the last one that matches decides; an exclusion pattern is only
  evaluated while the path is excluded and an inclusion only while it is not; a pattern matches a
  path when it matches the path itself or any of its parent directories. `Pattern.compile` turns a
  pattern into a regexp: `*` is any run of non-`/`, `?` one non-`/` character, `**` any number of
  directories (a leading `**` matches a suffix, a trailing `**` a prefix), `\\` escapes, `[...]`
  is a character class, `.+()|{}$` are literal.
BuildKit also prefers `<Dockerfile name>.dockerignore` next to the Dockerfile over `.dockerignore`
(docker docs "Build context: .dockerignore files").
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_ESCAPED = set(".+()|{}$")


def go_clean(path: str) -> str:
    """Go's `filepath.Clean` for slash-separated paths (not Python's `normpath`: `//a` -> `/a`)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


class BadPatternError(ValueError):
    """A `.dockerignore` line Docker would reject."""


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern with where it came from (for messages)."""

    text: str  # cleaned, without the leading `!`
    exclusion: bool
    line: int
    original: str
    regex: re.Pattern[str] | None
    kind: str  # exact, prefix, suffix, regexp

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None

    def describe(self) -> str:
        return f"line {self.line} `{self.original}`"


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """`Pattern.compile` from moby/patternmatcher, for `/` as the separator."""
    regex = "^"
    kind = "exact"
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                first = i == 0
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regexp"
                else:
                    regex += "(.*/)?"
                    kind = "regexp"
                if first:
                    kind = "suffix"
                continue
            regex += "[^/]*"
            kind = "regexp"
        elif char == "?":
            regex += "[^/]"
            kind = "regexp"
        elif char in _ESCAPED:
            regex += "\\" + char
        elif char == "\\":
            if i + 1 < n:
                regex += "\\" + pattern[i + 1]
                kind = "regexp"
                i += 1
            else:
                regex += "\\\\"
        elif char in "[]":
            regex += char
            kind = "regexp"
        else:
            regex += char
        i += 1
    if kind != "regexp":
        return kind, None
    try:
        return kind, re.compile(regex + "$", re.DOTALL)
    except re.error as error:
        raise BadPatternError(f"syntax error in pattern {pattern!r}: {error}") from error


def read_patterns(text: str) -> list[tuple[int, str, str]]:
    """`ignorefile.ReadAll`: (line number, pattern as Docker keeps it, line as written)."""
    result: list[tuple[int, str, str]] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        result.append((number, ("!" + pattern) if invert else pattern, raw.strip()))
    return result


def _new_pattern(kept: str, line: int, original: str, source: str) -> Pattern:
    """One pattern as `patternmatcher.New` builds it: trimmed, cleaned, `!` split off, compiled."""
    pattern = go_clean(kept.strip())
    exclusion = pattern.startswith("!")
    if exclusion:
        if len(pattern) == 1:
            raise BadPatternError(f'{source} line {line}: illegal exclusion pattern: "!"')
        pattern = pattern[1:]
    kind, regex = _compile(pattern)
    return Pattern(pattern, exclusion, line, original, regex, kind)


class DockerIgnore:
    """The patterns of one ignore file; `excluded_by(path)` is the pattern that excludes a path."""

    def __init__(self, text: str = "", source: str = ".dockerignore") -> None:
        """Patterns of an ignore file's ``text``, read as `ignorefile.ReadAll` then `New` do."""
        self.source = source
        self.patterns = [
            _new_pattern(kept, line, original, source) for line, kept, original in read_patterns(text)
        ]

    @classmethod
    def from_patterns(cls, patterns: list[str]) -> DockerIgnore:
        """`patternmatcher.New(patterns)` without reading a file (blank patterns are dropped)."""
        matcher = cls("", "patterns")
        matcher.patterns = [
            _new_pattern(p, number, p, "patterns") for number, p in enumerate(patterns, start=1) if p.strip()
        ]
        return matcher

    @classmethod
    def for_context(cls, context_dir: Path, dockerfile_name: str = "Dockerfile") -> DockerIgnore:
        """The ignore file BuildKit uses for a context: `<Dockerfile>.dockerignore`, else `.dockerignore`."""
        for name in (f"{dockerfile_name}.dockerignore", ".dockerignore"):
            candidate = context_dir / name
            if candidate.is_file():
                return cls(candidate.read_text(encoding="utf-8"), name)
        return cls("", "(no .dockerignore)")

    def excluded_by(self, path: str) -> Pattern | None:
        """The pattern that excludes the context-relative ``path`` from the build (None = it is sent)."""
        path = go_clean(path.strip("/"))
        if path == ".":
            return None
        return self.matches_or_parent_matches(path)

    def matches_or_parent_matches(self, path: str) -> Pattern | None:
        """`PatternMatcher.MatchesOrParentMatches` on a slash path as given, returning the deciding
        pattern instead of a bool."""
        parent = go_clean(posixpath.dirname(path))  # Go: filepath.Dir cleans its result
        parents = parent.split("/") if parent != "." else []
        deciding: Pattern | None = None
        for pattern in self.patterns:
            if pattern.exclusion != (deciding is not None):
                continue
            match = pattern.matches(path)
            if not match:
                for i in range(len(parents)):
                    if pattern.matches("/".join(parents[: i + 1])):
                        match = True
                        break
            if match:
                deciding = None if pattern.exclusion else pattern
        return deciding

    def is_excluded(self, path: str) -> bool:
        return self.excluded_by(path) is not None

    def sent_files(self, root: Path) -> Iterable[str]:
        """Relative paths of the files under ``root`` that a build would receive."""
        for item in sorted(root.rglob("*")):
            if item.is_file() or item.is_symlink():
                relative = item.relative_to(root).as_posix()
                if not self.is_excluded(relative):
                    yield relative
