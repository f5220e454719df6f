"""Which `.dockerignore` matcher passes moby/patternmatcher's own tests: zr4's, or a library's?

Reads the test cases straight from a checkout of moby/patternmatcher (the code BuildKit runs for
`.dockerignore`): ``TestMatches`` (single patterns, the non-Windows extra, multi-pattern lists),
``TestMatch`` (Go's filepath.Match cases, including the patterns that must be refused), and the small
``Test*`` functions; then runs every case through each matcher
that is importable and prints a Markdown table plus each failure.

    git clone https://github.com/moby/patternmatcher && git -C patternmatcher checkout 5a6d842
    pip install docker e2b-dockerfile-utils   # the candidates, outside zr4's own dependencies
    PYTHONPATH=src python bench/dockerignore_libraries.py patternmatcher

Results: bench/results/dockerignore.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# One case: patterns, path, expected match, or "error" where moby refuses the pattern.
Expected = bool | str


@dataclass(frozen=True)
class Case:
    source: str
    patterns: tuple[str, ...]
    path: str
    expected: Expected


_GO_STRING = r'"(?:[^"\\]|\\.)*"'
_SINGLE = re.compile(rf"^\s*\{{({_GO_STRING}), ({_GO_STRING}), (true|false)\}},")
_MULTI = re.compile(rf"^\s*\{{\[\]string\{{(.*?)\}}, ({_GO_STRING}), (true|false)\}},")
_MATCH = re.compile(
    rf"^\s*\{{({_GO_STRING}), ({_GO_STRING}), (true|false), (nil|filepath\.ErrBadPattern)\}},"
)


def _go(literal: str) -> str:
    return str(json.loads(literal))


def _strings(body: str) -> tuple[str, ...]:
    return tuple(_go(item) for item in re.findall(_GO_STRING, body))


def _function(text: str, name: str) -> str:
    start = text.index(f"func {name}(")
    end = text.find("\nfunc ", start + 1)
    return text[start : end if end != -1 else len(text)]


def moby_cases(checkout: Path, commit: str) -> list[Case]:
    def show(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(checkout), "show", f"{commit}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    text = show("patternmatcher_test.go")
    cases: list[Case] = []
    for line in _function(text, "TestMatches").splitlines():
        if (single := _SINGLE.match(line)) is not None:
            cases.append(Case("TestMatches", (_go(single[1]),), _go(single[2]), single[3] == "true"))
        elif (multi := _MULTI.match(line)) is not None:
            cases.append(Case("TestMatches (multi)", _strings(multi[1]), _go(multi[2]), multi[3] == "true"))
    match_table = text[text.index("var matchTests") : text.index("func errp")]
    for line in match_table.splitlines():
        if (row := _MATCH.match(line)) is not None:
            expected: Expected = "error" if row[4] != "nil" else row[3] == "true"
            cases.append(Case("TestMatch", (_go(row[1]),), _go(row[2]), expected))
    # The one-case functions at the top of the file, as they call Matches(file, patterns).
    for name in (
        "TestWildcardMatches",
        "TestPatternMatches",
        "TestExclusionPatternMatchesPatternBefore",
        "TestPatternMatchesFolderExclusions",
        "TestPatternMatchesFolderWithSlashExclusions",
        "TestPatternMatchesFolderWildcardExclusions",
        "TestExclusionPatternMatchesPatternAfter",
        "TestExclusionPatternMatchesWholeDirectory",
        "TestSingleExclamationError",
        "TestMatchesWithNoPatterns",
        "TestMatchesWithMalformedPatterns",
    ):
        body = _function(text, name)
        call = re.search(rf"Matches\(({_GO_STRING}), \[\]string\{{(.*?)\}}\)", body)
        assert call is not None, name
        # `if err == nil` -> the call must fail; `if !match` -> it must match; `if match` -> it must not
        expected = "error" if "err == nil" in body else ("if !match" in body)
        cases.append(Case(name, _strings(call[2]), _go(call[1]), expected))
    body = _function(text, "TestMatchesOrParentMatchesMalformedPatternDoesNotPanicOnRepeatedCall")
    cases.append(Case("TestMatchesOrParentMatchesMalformed…", ("[Local-Only]/",), "x", "error"))
    assert '"[Local-Only]/"' in body
    return cases


# --- the matchers ---------------------------------------------------------------------------


Matcher = Callable[[tuple[str, ...], str], bool]


def _zr4() -> tuple[str, Matcher]:
    from zr4.validate.dockerignore import DockerIgnore, go_clean

    def match(patterns: tuple[str, ...], path: str) -> bool:
        matcher = DockerIgnore.from_patterns(list(patterns))
        path = go_clean(path)
        return path != "." and matcher.matches(path)

    return "zr4.validate.dockerignore", match


def _docker_py() -> tuple[str, Matcher]:
    import docker
    from docker.utils.build import PatternMatcher

    def match(patterns: tuple[str, ...], path: str) -> bool:
        return bool(PatternMatcher(list(patterns)).matches(path))

    return f"docker {docker.__version__} (docker.utils.build.PatternMatcher)", match


def _e2b() -> tuple[str, Matcher]:
    from importlib.metadata import version

    from e2b_dockerfile_utils.dockerignore import PatternMatcher

    def match(patterns: tuple[str, ...], path: str) -> bool:
        return bool(PatternMatcher(list(patterns)).matches(path))

    name = f"e2b-dockerfile-utils {version('e2b-dockerfile-utils')} (dockerignore.PatternMatcher)"
    return name, match


def run(cases: list[Case], matcher: Matcher) -> list[tuple[Case, str]]:
    failures = []
    for case in cases:
        try:
            got: Expected = matcher(case.patterns, case.path)
        except Exception as error:  # any refusal counts as "error"
            got = "error"
            detail = f"{type(error).__name__}: {error}"
        else:
            detail = str(got)
        if got != case.expected:
            failures.append((case, detail))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a git checkout of moby/patternmatcher")
    parser.add_argument("--commit", default="5a6d842")
    options = parser.parse_args()
    cases = moby_cases(options.checkout, options.commit)
    print(f"moby/patternmatcher@{options.commit}: {len(cases)} cases\n")
    print("| matcher | cases passed |")
    print("|---|---|")
    details: list[str] = []
    for load in (_zr4, _docker_py, _e2b):
        try:
            name, matcher = load()
        except ImportError as error:
            print(f"| {load.__name__} | not installed ({error}) |")
            continue
        failures = run(cases, matcher)
        print(f"| {name} | {len(cases) - len(failures)} / {len(cases)} |")
        for case, got in failures:
            details.append(
                f"- {name}: {case.source} patterns={list(case.patterns)!r} path={case.path!r} "
                f"expected {case.expected}, got {got}"
            )
    print()
    print("\n".join(details) if details else "no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
