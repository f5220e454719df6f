"""zr4 installed from a wheel, without its checkout: what it can do, and a clear line where it cannot.

The wheel's layout is the one pyproject.toml's ``[tool.hatch.build.targets.wheel]`` makes: the
``zr4`` package with ``profiles/``, ``templates/`` and ``data/`` under ``zr4/_data/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "src" / "zr4", site / "zr4", ignore=shutil.ignore_patterns("__pycache__"))
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    for source, target in wheel["force-include"].items():
        shutil.copytree(ROOT / source, site / target)
    return site


def _zr4(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import sys; from zr4.cli.main import run; sys.argv[0] = 'zr4'; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_the_wheel_layout_reads_its_bundled_data(site: Path, tmp_path: Path) -> None:
    completed = _zr4(site, tmp_path, "profiles", "--names")
    assert completed.returncode == 0, completed.stderr
    assert "4080super" in completed.stdout.split()


def test_validate_profile_says_the_context_cannot_build_without_a_checkout(site: Path, tmp_path: Path) -> None:
    completed = _zr4(site, tmp_path, "validate", "--profile", "4080super", "--no-build")
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: zr4 is installed without its checkout")
    assert "--build-context zr4=<checkout>" in completed.stderr and completed.stderr.count("\n") == 1


def test_validate_profile_with_a_checkout_named_runs_the_checks(site: Path, tmp_path: Path) -> None:
    completed = _zr4(
        site, tmp_path, "validate", "--profile", "4080super", "--no-build", "--build-context", f"zr4={ROOT}"
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "all checks passed" in completed.stdout


def test_render_without_a_checkout_needs_out(site: Path, tmp_path: Path) -> None:
    completed = _zr4(site, tmp_path, "render", "--profile", "4080super")
    assert completed.returncode == 2
    assert completed.stderr == "error: zr4 is not running from a checkout: pass --out DIR for the build context\n"
    assert list(tmp_path.iterdir()) == []
