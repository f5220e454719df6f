"""Every module the image runs imports without Jinja2 or Typer, as the boot needs.

import-linter (``lint-imports``, contracts in pyproject.toml) checks zr4's own import statements; this
test imports the modules for real, in a fresh interpreter, so it also sees what a third-party package
pulls in at import time. Jinja2 is the renderer's; Typer and Click are the CLI layer that
``python -m zr4.image.start`` skips to keep a warm boot under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import importlib, json, pkgutil, sys
import zr4.client, zr4.core, zr4.image
names = [
    m.name
    for package in (zr4.core, zr4.image, zr4.client)
    for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
]
for name in names:
    importlib.import_module(name)
print(json.dumps({"names": names, "loaded": sorted(sys.modules)}))
"""


def test_the_container_runtime_imports_neither_jinja2_nor_typer() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"zr4.image.start", "zr4.image.serverless", "zr4.client.dance", "zr4.core.planner"} <= set(
        result["names"]
    )
    loaded = {name.split(".")[0] for name in result["loaded"]}
    assert sorted(loaded & {"jinja2", "typer", "click"}) == []
