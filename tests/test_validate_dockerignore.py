"""`.dockerignore` matching behaves exactly like Docker's (moby/patternmatcher) own tests say."""

from __future__ import annotations

from pathlib import Path

import pytest

from zr4.validate.dockerignore import BadPatternError, DockerIgnore, go_clean

# moby/patternmatcher patternmatcher_test.go `TestMatches` (commit 5a6d842): (pattern, path, matches).
SINGLE_PATTERN_CASES = [
    ("**", "file", True),
    ("**", "file/", True),
    ("**/", "file", True),
    ("**/", "file/", True),
    ("**", "/", True),
    ("**/", "/", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**", "dir/file/", True),
    ("**/", "dir/file/", True),
    ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),
]
MULTI_PATTERN_CASES = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    # TestExclusionPatternMatchesPatternBefore / TestPatternMatchesFolder*Exclusions
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), SINGLE_PATTERN_CASES)
def test_single_pattern_matches_like_moby(pattern: str, path: str, expected: bool) -> None:
    assert DockerIgnore.from_patterns([pattern]).matches(path) is expected


@pytest.mark.parametrize(("patterns", "path", "expected"), MULTI_PATTERN_CASES)
def test_pattern_order_and_exceptions_like_moby(patterns: list[str], path: str, expected: bool) -> None:
    matcher = DockerIgnore.from_patterns(patterns)
    assert matcher.matches(path) is expected
    assert (matcher.excluded_by(path) is not None) is expected


def test_malformed_patterns_are_rejected_like_moby() -> None:
    with pytest.raises(BadPatternError):
        DockerIgnore.from_patterns(["["])
    with pytest.raises(BadPatternError, match="illegal exclusion"):
        DockerIgnore.from_patterns(["!"])


# moby/patternmatcher patternmatcher_test.go `matchTests` (Go's filepath.Match cases) that Docker
# refuses with filepath.ErrBadPattern; a hand port on Python's `re` accepted all of these.
@pytest.mark.parametrize("pattern", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[^", "[^bc", "a["])
def test_patterns_docker_refuses_are_refused_with_the_line(pattern: str) -> None:
    with pytest.raises(BadPatternError, match=r"^\.dockerignore line 2: "):
        DockerIgnore(f"ok\n{pattern}\n")


# The same table's classes that Docker does accept (escapes inside a class, a non-ASCII range).
@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("[\\]a]", "]", True),
        ("[\\-x]", "-", True),
        ("[\\-x]", "a", False),
        ("*[a-ζ]", "A", False),
        ("a?b", "a☺b", True),
    ],
)
def test_classes_docker_accepts(pattern: str, path: str, expected: bool) -> None:
    assert DockerIgnore.from_patterns([pattern]).is_excluded(path) is expected


def test_go_clean_is_go_filepath_clean() -> None:
    cases = {
        "": ".",
        ".": ".",
        "//a//b/": "/a/b",
        "./a": "a",
        "a/../../b": "../b",
        "/../a": "/a",
        "a/./b/.": "a/b",
    }
    assert {raw: go_clean(raw) for raw in cases} == cases


def test_ignore_file_reading_follows_readall() -> None:
    text = "\ufeff# comment\n  /abs/path  \n!/keep\n\n  # not a comment (leading space)\n./dot/\n! /inv\n"
    patterns = DockerIgnore(text).patterns
    assert [("!" if p.exclusion else "") + p.text for p in patterns] == [
        "abs/path",
        "!keep",
        "# not a comment (leading space)",
        "dot",
        "!inv",
    ]
    assert [p.line for p in patterns] == [2, 3, 5, 6, 7]


def test_the_deciding_line_is_the_last_that_excluded_the_path() -> None:
    ignore = DockerIgnore("*.log\n!keep.log\nkeep.log\n")
    deciding = ignore.excluded_by("keep.log")
    assert deciding is not None and deciding.describe() == "line 3 `keep.log`"
    assert DockerIgnore("*.log\n!keep.log\n").excluded_by("keep.log") is None


def test_a_broad_dockerignore_excludes_locks_and_workflows_and_names_the_line() -> None:
    seed = DockerIgnore("*.txt\n*.md\nworkflows/\n")
    by_txt = seed.excluded_by("requirements.txt")
    by_dir = seed.excluded_by("workflows/steadydancer-gguf.json")
    assert by_txt is not None and by_txt.describe() == "line 1 `*.txt`"
    assert by_dir is not None and by_dir.describe() == "line 3 `workflows/`"
    assert seed.excluded_by("nested/requirements.txt") is None  # `*` never crosses `/`
    assert seed.excluded_by("start.sh") is None


def test_allow_list_style_ignore_file_reincludes_directories(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "src" / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"\0")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / ".dockerignore").write_text("*\n!src/\n**/__pycache__\n")
    ignore = DockerIgnore.for_context(tmp_path)
    assert list(ignore.sent_files(tmp_path)) == ["src/pkg/mod.py"]
    excluded = ignore.excluded_by("tests/test_x.py")
    assert excluded is not None and excluded.text == "*"


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("secret\n")
    ignore = DockerIgnore.for_context(tmp_path, "Dockerfile")
    assert ignore.source == "Dockerfile.dockerignore"
    assert not ignore.is_excluded("start.sh")
    assert ignore.is_excluded("secret")
