"""Docker's `.dockerignore` rules, through ``e2b-dockerfile-utils`` (a port of moby/patternmatcher).

The matching is the library's: of the Python implementations measured against moby/patternmatcher's
own tests at 5a6d842 (``TestMatches``, ``TestMatch`` with the patterns Docker refuses, and the
rest; bench/dockerignore_libraries.py, bench/results/dockerignore.md), ``e2b-dockerfile-utils``
passes all 138 cases, docker-py's ``PatternMatcher`` 107 and zr4's earlier hand port 128 (it
accepted malformed classes such as ``[a-b-c]`` that Docker refuses). Its ``PatternMatcher`` reads
lines as moby's ``ignorefile.ReadAll`` + ``patternmatcher.New`` do (comments are lines *starting*
with ``#``, a leading ``/`` is dropped, ``!`` re-includes, the last matching pattern decides, a
pattern that matches a parent directory matches what is under it).

What stays here is what zr4 adds on top: which file BuildKit reads (``<Dockerfile>.dockerignore``
before ``.dockerignore``, docker docs "Build context: .dockerignore files"), and *which line*
excludes a path, so a finding can name it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from e2b_dockerfile_utils import PatternMatcher


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
    """One line of the ignore file that holds a pattern."""

    text: str  # as Docker keeps it: cleaned, `!` split off
    exclusion: bool
    line: int
    original: str

    def describe(self) -> str:
        return f"line {self.line} `{self.original}`"


class DockerIgnore:
    """The patterns of one ignore file; `excluded_by(path)` is the line that excludes a path."""

    def __init__(self, text: str = "", source: str = ".dockerignore") -> None:
        self.source = source
        self.patterns: list[Pattern] = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            self._add(raw, number, raw.strip())

    def _add(self, raw: str, number: int, original: str) -> None:
        try:
            kept = PatternMatcher([raw]).patterns
        except ValueError as error:
            raise BadPatternError(f"{self.source} line {number}: {error}") from None
        for cleaned in kept:  # none for a blank line or a comment
            exclusion = cleaned.startswith("!")
            self.patterns.append(Pattern(cleaned.removeprefix("!"), exclusion, number, original))

    @classmethod
    def from_patterns(cls, patterns: list[str]) -> DockerIgnore:
        """Patterns given one by one, as `patternmatcher.New(patterns)` takes them."""
        matcher = cls("", "patterns")
        for number, pattern in enumerate(patterns, start=1):
            matcher._add(pattern, number, pattern)
        return matcher

    @classmethod
    def for_context(cls, context_dir: Path, dockerfile_name: str = "Dockerfile") -> DockerIgnore:
        """The ignore file BuildKit uses for a context: `<Dockerfile>.dockerignore`, else `.dockerignore`."""
        for name in (f"{dockerfile_name}.dockerignore", ".dockerignore"):
            candidate = context_dir / name
            if candidate.is_file():
                return cls(candidate.read_text(encoding="utf-8"), name)
        return cls("", "(no .dockerignore)")

    @cached_property
    def _prefixes(self) -> list[PatternMatcher]:
        """A matcher for the first 1, 2, ... n patterns: the state after pattern k is prefix k's."""
        kept = [("!" if p.exclusion else "") + p.text for p in self.patterns]
        return [PatternMatcher(kept[: k + 1]) for k in range(len(kept))]

    def matches(self, path: str) -> bool:
        """`PatternMatcher.MatchesOrParentMatches` on a slash path as given (no cleaning)."""
        return bool(self._prefixes) and self._prefixes[-1].matches(path)

    def is_excluded(self, path: str) -> bool:
        """Whether the context-relative ``path`` is kept out of the build."""
        path = go_clean(path.strip("/"))
        return path != "." and self.matches(path)

    def excluded_by(self, path: str) -> Pattern | None:
        """The pattern that excludes ``path`` from the build (None = it is sent): the last one that
        turned the path from sent to excluded."""
        if not self.is_excluded(path):
            return None
        path = go_clean(path.strip("/"))
        deciding = None
        before = False
        for pattern, matcher in zip(self.patterns, self._prefixes, strict=True):
            now = matcher.matches(path)
            if now and not before:
                deciding = pattern
            before = now
        return deciding

    def sent_files(self, root: Path) -> Iterable[str]:
        """Relative paths of the files under ``root`` that a build would receive."""
        for item in sorted(root.rglob("*")):
            if item.is_file() or item.is_symlink():
                relative = item.relative_to(root).as_posix()
                if not self.is_excluded(relative):
                    yield relative
