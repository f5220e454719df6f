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
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, site / target)
        else:
            shutil.copy2(ROOT / source, site / target)
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


def test_validate_profile_passes_without_a_checkout(site: Path, tmp_path: Path) -> None:
    # The context is self-contained (zr4's wheel is rendered into it) and hadolint's config is bundled.
    completed = _zr4(site, tmp_path, "validate", "--profile", "4080super", "--no-build")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "all checks passed" in completed.stdout
    assert "4  hadolint    PASS" in completed.stdout


def test_the_rendered_zr4_wheel_is_the_same_from_a_wheel_install_and_a_checkout(
    site: Path, tmp_path: Path
) -> None:
    from zr4.render.wheel import WHEEL_NAME

    completed = _zr4(site, tmp_path, "render", "--profile", "4080super", "--out", str(tmp_path / "w"))
    assert completed.returncode == 0, completed.stderr
    checkout = _zr4(ROOT / "src", tmp_path, "render", "--profile", "4080super", "--out", str(tmp_path / "c"))
    assert checkout.returncode == 0, checkout.stderr
    assert (tmp_path / "w" / WHEEL_NAME).read_bytes() == (tmp_path / "c" / WHEEL_NAME).read_bytes()


def test_render_without_a_checkout_needs_out(site: Path, tmp_path: Path) -> None:
    completed = _zr4(site, tmp_path, "render", "--profile", "4080super")
    assert completed.returncode == 2
    assert (
        completed.stderr
        == "error: zr4 is not running from a checkout: pass --out DIR for the build context\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_render_from_inside_a_checkout_writes_its_docker_folder(site: Path, tmp_path: Path) -> None:
    # `pip install .` (not editable): zr4 runs from site-packages while its user works in the checkout,
    # so the README's `zr4 render --profile 4080super` renders into that checkout's docker/.
    checkout = tmp_path / "zr4-checkout"
    (checkout / "src" / "zr4").mkdir(parents=True)
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "docs").mkdir()
    completed = _zr4(site, checkout / "docs", "render", "--profile", "4080super")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"rendered profile 4080super into {checkout / 'docker'}/")
    assert (checkout / "docker" / "Dockerfile").is_file() and list((checkout / "docs").iterdir()) == []
    # Another project's pyproject.toml is not a zr4 checkout.
    other = tmp_path / "other"
    (other / "src" / "zr4").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "not-zr4"\n')
    refused = _zr4(site, other, "render", "--profile", "4080super")
    assert refused.returncode == 2 and "pass --out DIR" in refused.stderr
