"""The CLI imports only the command group it runs: boot-time commands must not pay for the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zr4.cli.main import COMMANDS

_PROBE = """
import json, sys
from zr4.cli.main import run
try:
    run(sys.argv[1:])
except SystemExit:
    pass
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""

# What the in-image boot commands must never import: the renderer, the validator, the profile models.
_HEAVY = ("jinja2", "zr4.render", "zr4.validate", "zr4.lock", "zr4.profile", "zr4.build")


def _modules_after(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60, check=False
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [("models", "download", "--help"), ("models", "plan", "--help"), ("sync", "once", "--help")],
)
def test_boot_commands_import_only_their_group(args: tuple[str, ...]) -> None:
    loaded = _modules_after(*args)
    assert f"zr4.cli.{args[0]}" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in _HEAVY or m.startswith(_HEAVY))
    assert heavy == []
    other_groups = {f"zr4.cli.{n}" for n in ("render", "validate", "lock", "build", "plan", "profiles")}
    assert not loaded & other_groups


def test_models_download_does_not_import_boto3() -> None:
    loaded = _modules_after("models", "download", "--help")
    assert "boto3" not in loaded and "botocore" not in loaded


def test_models_download_with_every_model_present_imports_no_http_client(tmp_path: Path) -> None:
    """A warm start checks sizes and the journal: no HTTP stack (http.client pulls in ssl and email)."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nfiles: []\n")
    loaded = _modules_after("models", "download", "--manifest", str(manifest), "--models-dir", str(tmp_path))
    assert "zr4.image.models.ensure" in loaded
    assert not {"http.client", "ssl", "huggingface_hub"} & loaded


def test_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    for name in [*COMMANDS, "version"]:
        assert f" {name} " in done.stdout, name
