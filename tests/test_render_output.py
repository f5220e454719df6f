"""`zr4 render` and `zr4 build` write only zr4's own files: a user's `.env` and notes survive, a folder
that is not a zr4 context (or a file, or a place zr4 cannot write) is refused in one line, unchanged.

Every test runs zr4 as a user does: ``python -m zr4.cli.main`` in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zr4.profile import load_profile
from zr4.render import check_rendered, render_files

REPO = Path(__file__).resolve().parents[1]
ZR4 = [sys.executable, "-m", "zr4.cli.main"]
MANIFEST_NAME = ".zr4-context"  # the list of files zr4 wrote (zr4.render.context_manifest)


def zr4(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZR4, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def render(profile: str, out: Path, *more: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return zr4("render", "--profile", profile, *more, "--out", str(out), cwd=cwd)


def assert_one_line_failure(completed: subprocess.CompletedProcess[str]) -> None:
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert completed.stderr.startswith("error: ") and completed.stderr.count("\n") == 1, completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""


def tree(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder``: inode, modification time and bytes (a rewrite changes one of them)."""
    found: dict[str, tuple[int, int, bytes]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (info.st_ino, info.st_mtime_ns, path.read_bytes())
    return found


def add_user_files(context: Path) -> dict[str, bytes]:
    """What a user keeps in a build context: compose's .env (docs/how-to/auth.md), notes, a folder."""
    files = {".env": b"ZR4_AUTH_TOKEN=keep-me\n", "NOTES.md": b"my notes\n", "mine/data.txt": b"x\n"}
    for relative, content in files.items():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        (context / relative).write_bytes(content)
    return files


# --- a zr4 context keeps the user's files -----------------------------------------------------------


def test_env_and_notes_survive_a_render_into_a_rendered_context(tmp_path: Path) -> None:
    context = tmp_path / "docker"
    assert render("4090", context).returncode == 0
    mine = add_user_files(context)
    before = tree(context)
    completed = render("4090", context)
    assert completed.returncode == 0, completed.stderr
    after = tree(context)
    for relative in mine:
        assert after[relative] == before[relative], f"{relative} was rewritten"
    assert (context / "Dockerfile").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docker"]  # no staging or retired folder left


def test_a_file_zr4_no_longer_renders_is_removed_and_nothing_else(tmp_path: Path) -> None:
    # 4090 installs flash-attn's release wheel (flash-attn.lock); 5090's stack has no flash-attn.
    context = tmp_path / "ctx"
    assert render("4090", context).returncode == 0
    assert (context / "flash-attn.lock").is_file()
    mine = add_user_files(context)
    completed = render("5090", context)
    assert completed.returncode == 0, completed.stderr
    assert not (context / "flash-attn.lock").exists()
    assert {relative: (context / relative).read_bytes() for relative in mine} == mine
    from zr4.render.context_manifest import parse_manifest

    manifest = parse_manifest((context / MANIFEST_NAME).read_text())
    assert manifest.profile == "5090" and "flash-attn.lock" not in manifest.files
    assert not [p for p in context.rglob("*") if p.name.endswith(".zr4-new")]


def test_a_file_of_the_user_at_a_newly_rendered_path_is_refused_and_kept(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    assert render("5090", context).returncode == 0
    (context / "flash-attn.lock").write_text("my own lock\n")  # not zr4's: not in its .zr4-context
    before = tree(context)
    completed = render("4090", context)
    assert_one_line_failure(completed)
    assert "flash-attn.lock exists and zr4 did not write it" in completed.stderr
    assert tree(context) == before


def test_a_manifest_naming_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    # zr4 removes the listed files a render no longer has: a list it did not write must not steer that.
    context = tmp_path / "ctx"
    assert render("4090", context).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not zr4's\n")
    with (context / MANIFEST_NAME).open("a") as manifest:
        manifest.write("file ../victim.txt\n")
    before = tree(tmp_path)
    completed = render("5090", context)
    assert_one_line_failure(completed)
    assert f"{MANIFEST_NAME} is not a file list zr4 wrote" in completed.stderr
    assert tree(tmp_path) == before


def test_a_context_rendered_before_the_manifest_is_updated_in_place(tmp_path: Path) -> None:
    # A docker/ rendered by a zr4 without .zr4-context: its Dockerfile carries zr4's generated line.
    context = tmp_path / "docker"
    assert render("4090", context).returncode == 0
    (context / MANIFEST_NAME).unlink(missing_ok=True)
    (context / "Dockerfile").write_text(
        "# syntax=docker/dockerfile:1.7\n# Generated by zr4 0.0.9 from profile 4090; do not edit: change it.\n"
    )
    mine = add_user_files(context)
    (context / "old-render.txt").write_text("a file an older zr4 wrote\n")
    completed = render("4090", context)
    assert completed.returncode == 0, completed.stderr
    assert {relative: (context / relative).read_bytes() for relative in mine} == mine
    assert (context / "old-render.txt").is_file()  # not listed anywhere: kept
    assert check_rendered(render_files(load_profile("4090")), context) == []


# --- anything else is refused, unchanged --------------------------------------------------------------


def test_out_dot_in_a_folder_with_an_unrelated_file_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "keep").write_text("mine\n")
    completed = render("4090", Path("."), cwd=project)
    assert_one_line_failure(completed)
    assert "holds files zr4 did not write (keep)" in completed.stderr
    assert [p.name for p in project.iterdir()] == ["keep"] and (project / "keep").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_out_a_home_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home" / "you"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("export A=1\n")
    before = tree(home)
    completed = render("4090", home)
    assert_one_line_failure(completed)
    assert tree(home) == before and sorted(p.name for p in home.iterdir()) == [".bashrc", ".ssh"]


@pytest.mark.parametrize("below", ["", "sub"])
def test_out_a_file_is_one_line_and_leaves_it_alone(tmp_path: Path, below: str) -> None:
    target = tmp_path / "f"
    target.write_text("x\n")
    completed = render("4090", target / below if below else target)
    assert_one_line_failure(completed)
    assert "is a file, not a folder" in completed.stderr
    assert target.read_text() == "x\n" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_out_under_proc_is_one_line() -> None:
    completed = render("4090", Path("/proc/zr4-render-test/ctx"))
    assert_one_line_failure(completed)
    assert not Path("/proc/zr4-render-test").exists()


def _read_only_bind_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_bind_works(), reason="no user+mount namespaces here for a read-only bind")
@pytest.mark.parametrize("existing", [True, False])
def test_out_on_a_read_only_file_system_is_one_line_and_unchanged(tmp_path: Path, existing: bool) -> None:
    # A read-only bind mount in a private mount namespace: read-only even for root, as CI may run.
    read_only = tmp_path / "ro"
    read_only.mkdir()
    context = read_only / "ctx"
    if existing:
        assert render("4090", context).returncode == 0
        add_user_files(context)
    before = tree(read_only)
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    completed = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(read_only), *ZR4, "render", "--profile", "4090",
         "--out", str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert_one_line_failure(completed)
    assert "not writable" in completed.stderr
    assert tree(read_only) == before


# --- render --check -------------------------------------------------------------------------------------


def test_check_passes_with_the_users_env_present(tmp_path: Path) -> None:
    context = tmp_path / "docker"
    assert render("4090", context).returncode == 0
    add_user_files(context)
    completed = render("4090", context, "--check")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{context}: up to date with profile 4090")


def test_check_reports_a_file_zr4_wrote_and_no_longer_renders(tmp_path: Path) -> None:
    context = tmp_path / "docker"
    assert render("4090", context).returncode == 0
    add_user_files(context)
    completed = render("4090", context, "--check", "--set", "features.flash_attn=false")
    assert completed.returncode == 1
    assert "flash-attn.lock (not rendered any more)" in completed.stderr
    assert ".env" not in completed.stderr and "NOTES.md" not in completed.stderr


def test_check_of_another_profiles_folder_names_the_profiles_own_folder() -> None:
    # The committed docker/ is 4080super's: rendering 3090 there (and committing) would replace it.
    completed = zr4("render", "--check", "--profile", "3090")
    assert completed.returncode == 1
    docker = REPO / "docker"
    assert completed.stderr.startswith(
        f"error: {docker} holds the build context of profile 4080super, not 3090"
    )
    assert (
        f"`zr4 render --profile 3090 --check --out {REPO / 'tests' / 'golden' / '3090'}`" in completed.stderr
    )
    assert f"--out {docker}" not in completed.stderr and "and commit" not in completed.stderr


def test_check_says_commit_only_where_git_tracks_the_folder(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git here")
    loose = tmp_path / "loose"
    assert render("4090", loose).returncode == 0
    (loose / "start.sh").write_text("#!/bin/sh\n")
    completed = render("4090", loose, "--check")
    assert completed.returncode == 1 and f"Run `zr4 render --profile 4090 --out {loose}`" in completed.stderr
    assert "and commit" not in completed.stderr

    repository = tmp_path / "repo"
    committed = repository / "docker"
    assert render("4090", committed).returncode == 0
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for step in (["init", "-q"], ["add", "docker"], ["commit", "-qm", "render"]):
        subprocess.run([*git, *step], check=True, capture_output=True, env=env)
    (committed / "start.sh").write_text("#!/bin/sh\n")
    completed = render("4090", committed, "--check")
    assert completed.returncode == 1 and "and commit the result" in completed.stderr


# --- zr4 build renders into a folder of its own -----------------------------------------------------------


def test_build_dry_run_leaves_the_checkouts_docker_folder_alone(tmp_path: Path) -> None:
    docker = REPO / "docker"
    before = (docker.stat().st_ino, tree(docker))
    completed = zr4("build", "--profile", "4080super", "--engine", "buildah", "--dry-run", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    first = completed.stdout.splitlines()[0]
    assert first.startswith("context: ") and str(docker) not in completed.stdout
    used = Path(first.split()[1])
    assert "temporary folder, removed when zr4 exits" in first and not used.exists()
    assert (docker.stat().st_ino, tree(docker)) == before
    assert list(tmp_path.iterdir()) == []


def test_build_without_an_engine_fails_at_once_and_writes_nothing(tmp_path: Path) -> None:
    docker = REPO / "docker"
    before = (docker.stat().st_ino, tree(docker))
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {**os.environ, "PATH": str(empty_path), "TMPDIR": str(tmp_path)}
    completed = zr4("build", "--profile", "4080super", cwd=tmp_path, env=env)
    assert_one_line_failure(completed)
    assert "no container engine found" in completed.stderr
    assert (docker.stat().st_ino, tree(docker)) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


def test_build_out_follows_renders_rules(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    assert render("4090", context).returncode == 0
    mine = add_user_files(context)
    completed = zr4("build", "--profile", "4090", "--out", str(context), "--engine", "buildah", "--dry-run")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"context: {context} (rendered from profile 4090, ")
    assert {relative: (context / relative).read_bytes() for relative in mine} == mine
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("mine\n")
    refused = zr4("build", "--profile", "4090", "--out", str(elsewhere), "--engine", "buildah", "--dry-run")
    assert_one_line_failure(refused)
    assert [p.name for p in elsewhere.iterdir()] == ["keep"]
