"""`zr4 validate` end to end: every bundled profile passes every check, exit codes, JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zr4.cli.validate import validate
from zr4.errors import Zr4Error
from zr4.paths import source_root
from zr4.profile import bundled_profile_names, load_profile
from zr4.render import render_files, write_context
from zr4.validate import CHECK_IDS, Options, validate_directory, validate_profile

REPO = source_root()

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("validate")(validate)


@app.command("version")
def _version() -> None:  # a second command keeps `validate` a named subcommand, as in zr4's app
    """Unused."""


def invoke(*args: str) -> tuple[int, str]:
    """Run `zr4 validate ARGS` as the console script does: a Zr4Error becomes its exit code (usage: 2)."""
    result = CliRunner().invoke(app, ["validate", *args])
    if isinstance(result.exception, Zr4Error):
        return result.exception.exit_code, result.output + str(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("name", bundled_profile_names())
def test_every_bundled_profile_passes_every_check(name: str) -> None:
    report = validate_profile(name, options=Options(resolve=False, build=True))
    failed = {r.check: [str(f) for f in r.findings] for r in report.results if r.failed}
    assert failed == {}
    statuses = {r.check: r.status for r in report.results}
    assert set(statuses) == set(CHECK_IDS)
    assert statuses["resolve"] == "skip"  # needs the network: CI runs it with --resolve
    if shutil.which("buildah") is None:
        assert statuses["build"] == "skip"
    elif statuses["build"] == "skip":  # installed but unusable here (e.g. rootless without user namespaces)
        assert report.result("build").notes[0].startswith("buildah cannot build here")
    else:
        assert statuses["build"] == "pass"
    assert all(statuses[check] == "pass" for check in CHECK_IDS if check not in ("resolve", "build"))


def test_static_checks_on_one_profile_take_seconds() -> None:
    report = validate_profile("4080super", options=Options(build=False))
    static = sum(r.seconds for r in report.results)
    assert static < 5, {r.check: round(r.seconds, 2) for r in report.results}


def test_the_committed_docker_dir_validates(tmp_path: Path) -> None:
    import shutil

    from zr4.profile import load_profile
    from zr4.render import render_files

    assert REPO is not None
    # The committed files, plus zr4's wheel that `zr4 render` adds (a build artifact, not committed).
    context = Path(shutil.copytree(REPO / "docker", tmp_path / "docker"))
    for item in render_files(load_profile("4080super")):
        if item.artifact:
            (context / item.path).write_bytes(item.content)
    report = validate_directory(context, Options(build=False))
    assert report.ok, [str(f) for r in report.results for f in r.findings]


def test_cli_profile_passes_with_exit_0() -> None:
    code, output = invoke("--profile", "4080super", "--no-build")
    assert code == 0, output
    assert "all checks passed (11 passed, 0 failed, 2 skipped)" in output
    assert "   1  parse       PASS" in output


def test_cli_directory_fails_with_exit_1_and_json(tmp_path: Path) -> None:
    out = tmp_path / "docker"
    write_context(render_files(load_profile("4080super")), out)
    (out / ".dockerignore").write_text("*.txt\n*.md\nworkflows/\n")
    start = out / "start.sh"
    start.write_text(start.read_text().replace("exec ", 'COMFYUI_ARGS="--medvram" exec ', 1))
    assert REPO is not None
    code, output = invoke(str(out), "--json", "--no-build", "--build-context", f"zr4={REPO}")
    assert code == 1
    output, _, error = output.rpartition("\n}")
    assert error.strip() == "2 check(s) failed: context, flags; fix the findings above"
    document = json.loads(output + "\n}")
    by_check = {c["check"]: c for c in document["checks"]}
    assert document["ok"] is False
    assert by_check["context"]["status"] == "fail"
    assert by_check["context"]["findings"][0]["file"] == "Dockerfile"
    assert "excluded by .dockerignore line 3 `workflows/`" in by_check["context"]["findings"][0]["message"]
    assert "--medvram" in by_check["flags"]["findings"][0]["message"]
    assert by_check["parse"]["status"] == "pass"


def test_cli_only_runs_the_named_checks(tmp_path: Path) -> None:
    code, output = invoke("--profile", "4080super", "--only", "parse", "--only", "secrets")
    assert code == 0
    assert "parse" in output and "secrets" in output and "hadolint" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either a context directory or --profile"),
        (("docker", "--profile", "4080super"), "give either a context directory or --profile"),
        (("--profile", "4080super", "--only", "nonsense"), "unknown check nonsense"),
        (("/nonexistent/ctx",), "/nonexistent/ctx is not a directory"),
        (("--profile", "4080super", "--build-context", "zr4"), "--build-context takes NAME=PATH"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2
    assert message in output
