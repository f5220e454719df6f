"""ComfyUI's flag table (generated from comfy/cli_args.py) and merging COMFYUI_ARGS with the plan.

The cases are the ones seen against the real ComfyUI v0.7.0 on a machine without a GPU:
`COMFYUI_ARGS=--lowvram` replaced the planned `--cpu` (ComfyUI: "Found no NVIDIA driver");
`--use-sage-attention` without sageattention exited 255; `--user-directory` with a missing path
exited 2; the hand-typed table refused six flags v0.7.0 accepts and dropped `--async-offload`'s
value. tests/conformance/test_flags_live.py runs the same cases through the real argparse.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from zr4.core.comfy_flags import (
    FlagEnvironment,
    check_environment,
    flag_set,
    merge_args,
    package_finder,
    split_args,
)
from zr4.core.planner import GpuFacts, PlanRequest, plan
from zr4.paths import data_dir

FLAGS = flag_set("v0.7.0")
GENERATOR = data_dir() / "gen_comfyui_flags.py"
MEMORY_FLAGS = ("--lowvram", "--highvram", "--gpu-only", "--novram", "--normalvram")


# --- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        "--fast autotune",
        "--cache-ram",
        "--cache-ram 8",
        "--disable-async-offload",
        "--force-non-blocking",
        "--enable-manager",
        "--default-device 1",
        "--async-offload 2",
        "--async-offload",
    ],
)
def test_flags_v070_accepts_pass_with_their_values(args: str) -> None:
    split = split_args(args, FLAGS)
    assert split.rejected == ()
    assert " ".join(split.accepted) == args


def test_the_table_records_the_commit_it_came_from() -> None:
    assert FLAGS.commit == "f59f71cf34067d46713f6243312f7f0b360d061f"
    assert all(spec.source == "comfy/cli_args.py" for spec in FLAGS.flags.values())


def test_policy_applies_on_top_of_the_generated_facts() -> None:
    assert FLAGS.emittable == {
        "--cpu", "--disable-smart-memory", "--highvram", "--lowvram",
        "--use-flash-attention", "--use-pytorch-cross-attention", "--use-sage-attention",
    }  # fmt: skip
    assert FLAGS.flags["--use-sage-attention"].package == "sageattention"
    assert FLAGS.flags["--user-directory"].path == "directory"  # argparse type is_valid_directory
    assert FLAGS.flags["--extra-model-paths-config"].path == "file"
    assert {name for name, spec in FLAGS.flags.items() if spec.needs_gpu} == set(MEMORY_FLAGS)


CLI_ARGS = """
import argparse, enum
import comfy.options

class Feature(enum.Enum):
    A = "a"
    B = "b"

def is_valid_directory(path): return path

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--listen", type=str, nargs="?", const="0.0.0.0")
parser.add_argument("--fast", nargs="*", type=Feature)
parser.add_argument("--root", type=is_valid_directory)
parser.add_argument("--paths", nargs="+", action="append")
parser.add_argument("--level", nargs="?", choices=["X", "Y"])
mem_group = parser.add_mutually_exclusive_group()
mem_group.add_argument("--low", action="store_true")
mem_group.add_argument("--ram", nargs="?", const=4.0, type=float)
args = parser.parse_args() if comfy.options.args_parsing else parser.parse_args([])
"""


def test_generator_reads_arity_types_choices_and_groups(tmp_path: Path) -> None:
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "comfy").mkdir(parents=True)
    (comfyui / "comfy" / "cli_args.py").write_text(CLI_ARGS)
    (comfyui / "comfyui_version.py").write_text('__version__ = "9.8.7"\n')
    table = tmp_path / "flags.yaml"
    run = [sys.executable, str(GENERATOR), "--comfyui", str(comfyui), "--table", str(table)]
    assert subprocess.run([*run, "--commit", "abc123"], capture_output=True, timeout=60).returncode == 0
    generated = flag_set("v9.8.7", table)
    assert generated.commit == "abc123"
    got = {name: (s.takes, s.value_type, s.choices, s.group) for name, s in generated.flags.items()}
    assert got == {
        "--port": ("one", "int", (), None),
        "--listen": ("optional", None, (), None),
        "--fast": ("any", None, ("a", "b"), None),
        "--root": ("one", "directory", (), None),
        "--paths": ("many", None, (), None),
        "--level": ("optional", None, ("X", "Y"), None),
        "--low": ("none", None, (), "mem"),
        "--ram": ("optional", "float", (), "mem"),
    }
    check = subprocess.run(
        [*run, "--commit", "abc123", "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout
    table.write_text(table.read_text().replace("--low: {takes: none", "--low: {takes: one"))
    check = subprocess.run(
        [*run, "--commit", "abc123", "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1 and "+      --low: {takes: none, group: mem}" in check.stdout


# --- a memory flag never removes --cpu where there is no GPU ---------------------------------------


@pytest.mark.parametrize("flag", MEMORY_FLAGS)
def test_memory_flag_without_gpu_keeps_cpu(flag: str) -> None:
    final, user, dropped = merge_args(["--cpu"], f"{flag} --preview-method auto", FLAGS)
    assert final == ("--cpu", "--preview-method", "auto")
    assert dropped == ()
    assert [r.tokens for r in user.rejected] == [(flag,)]
    assert "needs an NVIDIA GPU" in user.rejected[0].reason


@pytest.mark.parametrize("flag", MEMORY_FLAGS)
def test_cpu_plan_keeps_cpu_against_comfyui_args(flag: str) -> None:
    result = plan(PlanRequest(gpu=None, user_comfyui_args=flag))
    assert result.comfyui_args == ("--cpu",)
    assert any(flag in warning and "NVIDIA GPU" in warning for warning in result.warnings)


def test_with_a_gpu_the_users_memory_flag_still_wins() -> None:
    final, _user, dropped = merge_args(["--highvram"], "--lowvram", FLAGS)
    assert final == ("--lowvram",) and dropped == ("--highvram",)


# --- packages and paths on the machine ComfyUI runs on -------------------------------------------


def fake_venv(root: Path, packages: tuple[str, ...]) -> Path:
    """A venv layout on disk (pyvenv.cfg, site-packages with the given package folders)."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name in packages:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("")
    python = root / "bin" / "python"
    python.write_text("")
    return python


def test_package_finder_reads_the_venv_of_comfyuis_python(tmp_path: Path) -> None:
    with_sage = package_finder(fake_venv(tmp_path / "a", ("sageattention",)))
    without = package_finder(fake_venv(tmp_path / "b", ("torch",)))
    assert with_sage("sageattention") and not without("sageattention") and without("torch")


def test_package_finder_asks_a_plain_interpreter() -> None:
    # The interpreter this venv was made from: no pyvenv.cfg, so it is asked with find_spec.
    has = package_finder(getattr(sys, "_base_executable", sys.executable))
    assert has("json") and not has("surely_not_a_package_zr4")


ATTENTION_PACKAGES = [("--use-sage-attention", "sageattention"), ("--use-flash-attention", "flash_attn")]


@pytest.mark.parametrize(("flag", "package"), ATTENTION_PACKAGES)
def test_attention_flag_without_its_package_is_dropped_naming_it(
    tmp_path: Path, flag: str, package: str
) -> None:
    bare = FlagEnvironment.for_python(fake_venv(tmp_path / "bare", ("torch",)), tmp_path)
    kept, rejected = check_environment(["--cpu", flag], FLAGS, bare)
    assert kept == ("--cpu",)
    assert rejected[0].tokens == (flag,) and repr(package) in rejected[0].reason
    full = FlagEnvironment.for_python(fake_venv(tmp_path / "full", (package,)), tmp_path)
    assert check_environment(["--cpu", flag], FLAGS, full) == (("--cpu", flag), ())


def test_path_values_are_checked_from_comfyuis_folder(tmp_path: Path) -> None:
    env = FlagEnvironment(has_package=lambda _name: True, cwd=tmp_path)
    (tmp_path / "users").mkdir()
    (tmp_path / "extra.yaml").write_text("a: {}\n")
    args = [
        "--user-directory", "users",
        "--front-end-root", "/nonexistent/frontend",
        "--extra-model-paths-config", "extra.yaml", "missing.yaml",
        "--extra-model-paths-config", str(tmp_path / "extra.yaml"),
        "--user-directory=missing",
    ]  # fmt: skip
    kept, rejected = check_environment(args, FLAGS, env)
    assert kept == ("--user-directory", "users", "--extra-model-paths-config", str(tmp_path / "extra.yaml"))
    reasons = {" ".join(r.tokens): r.reason for r in rejected}
    assert reasons == {
        "--front-end-root /nonexistent/frontend": "--front-end-root /nonexistent/frontend: no such directory (ComfyUI would exit at start)",
        "--extra-model-paths-config extra.yaml missing.yaml": "--extra-model-paths-config missing.yaml: no such file (ComfyUI would exit at start)",
        "--user-directory=missing": "--user-directory missing: no such directory (ComfyUI would exit at start)",
    }


CARD_16G = GpuFacts("NVIDIA GeForce RTX 4080 SUPER", 16376, compute_capability="8.9")


@pytest.mark.parametrize(("flag", "package"), ATTENTION_PACKAGES)
def test_a_users_attention_flag_without_its_package_keeps_the_planned_one(
    tmp_path: Path, flag: str, package: str
) -> None:
    bare = FlagEnvironment.for_python(fake_venv(tmp_path / "bare", ("torch",)), tmp_path)
    final, user, dropped = merge_args(["--use-pytorch-cross-attention"], flag, FLAGS, environment=bare)
    assert final == ("--use-pytorch-cross-attention",) and dropped == ()
    assert [r.tokens for r in user.rejected] == [(flag,)] and repr(package) in user.rejected[0].reason
    # With the package there the user's flag still wins.
    full = FlagEnvironment.for_python(fake_venv(tmp_path / "full", (package,)), tmp_path)
    final, user, dropped = merge_args(["--use-pytorch-cross-attention"], flag, FLAGS, environment=full)
    assert final == (flag,) and dropped == ("--use-pytorch-cross-attention",) and user.rejected == ()


@pytest.mark.parametrize(("flag", "package"), ATTENTION_PACKAGES)
def test_the_gpu_plan_keeps_its_attention_flag_when_the_users_cannot_run(
    tmp_path: Path, flag: str, package: str
) -> None:
    bare = FlagEnvironment.for_python(fake_venv(tmp_path / "bare", ("torch",)), tmp_path)
    result = plan(
        PlanRequest(gpu=CARD_16G, user_comfyui_args=f"{flag} --preview-method auto", flag_environment=bare)
    )
    assert "--use-pytorch-cross-attention" in result.comfyui_args and flag not in result.comfyui_args
    assert result.comfyui_args[-2:] == ("--preview-method", "auto")
    assert [r.tokens for r in result.rejected_args] == [(flag,)]
    assert any(
        w.startswith(f"COMFYUI_ARGS: not passed to ComfyUI: {flag}:") and package in w
        for w in result.warnings
    )
    assert not any("overrides the planned" in w for w in result.warnings), result.warnings
    # Planned away from the machine (no environment to check), the user's flag replaces the planned one.
    offline = plan(PlanRequest(gpu=CARD_16G, user_comfyui_args=flag))
    assert flag in offline.comfyui_args and "--use-pytorch-cross-attention" not in offline.comfyui_args


def test_the_plan_leaves_out_what_the_machine_cannot_honour(tmp_path: Path) -> None:
    h100 = GpuFacts("NVIDIA H100 80GB HBM3", 81559, compute_capability="9.0")
    bare = FlagEnvironment.for_python(fake_venv(tmp_path / "venv", ("torch",)), tmp_path)
    request = PlanRequest(
        gpu=h100,
        attention="flash_attn_2",
        user_comfyui_args="--user-directory /nonexistent",
        flag_environment=bare,
    )
    result = plan(request)
    assert (
        "--use-flash-attention" not in result.comfyui_args and "--user-directory" not in result.comfyui_args
    )
    assert any(
        w.startswith("planned flag not passed to ComfyUI: --use-flash-attention:") for w in result.warnings
    )
    assert any(
        w.startswith("COMFYUI_ARGS: not passed to ComfyUI: --user-directory /nonexistent:")
        for w in result.warnings
    )
    assert "--use-flash-attention" in plan(replace(request, flag_environment=None)).comfyui_args
