"""Usage errors and `--version` as a new user meets them: one line, exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zr4 import __version__


def _zr4(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("flag", ["--version", "version"])
def test_version_prints_the_version(flag: str) -> None:
    completed = _zr4(flag)
    assert (completed.returncode, completed.stdout, completed.stderr) == (0, f"{__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "error: No such command 'bogus'. (see: zr4 --help)"),
        (["render", "--bogus"], "error: No such option: --bogus"),
        (["plan", "--frames", "abc"], "error: Invalid value for '--frames'"),
        (["models", "bogus"], "error: No such command 'bogus'. (see: zr4 models --help)"),
        (["render", "--profile"], "error: Option '--profile' requires an argument."),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    completed = _zr4(*args)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith(message)
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "command", [["show"], ["plan"], ["render"], ["validate"], ["models", "download"], ["sync", "run"]]
)
def test_help_shows_click_style_value_names_not_python_types(command: list[str]) -> None:
    completed = _zr4(*command, "--help")
    assert completed.returncode == 0, completed.stderr
    for python_type in ("<bool>", "<str>", "<int>", "<float>", "<list[", "<Path>"):
        assert python_type not in completed.stdout
    assert "Show this message and exit." in completed.stdout
