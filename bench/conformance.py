"""Run the conformance suite against the real, pinned ComfyUI and record it in bench/results/comfyui.md.

Why a script: the suite (``tests/conformance/``) skips in CI, which has no fetched ComfyUI; a
developer runs it when a pin changes, and the record says which commits, frontend and browser it
ran against and what pytest printed, with the screenshot of the UI workflow opened from the
Workflows sidebar (``bench/results/comfyui-ui-workflow.png``).

Usage (repository root; the two variables as ``tests/support/real_comfyui.py`` describes)::

    ZR4_COMFYUI_SOURCES=DIR ZR4_COMFYUI_PYTHON=PY python bench/conformance.py [pytest args...]
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
RECORD = RESULTS / "comfyui.md"
SCREENSHOT = "comfyui-ui-workflow.png"


def _version_of(python: str, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "not installed"


def _chromium() -> str:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from support.browser import find_chromium

    binary = find_chromium()
    if binary is None:
        return "none found"
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or binary


def main(argv: list[str]) -> int:
    sources, python = os.environ.get("ZR4_COMFYUI_SOURCES"), os.environ.get("ZR4_COMFYUI_PYTHON")
    if not sources or not python:
        print(
            "set ZR4_COMFYUI_SOURCES and ZR4_COMFYUI_PYTHON (see tests/support/real_comfyui.py)",
            file=sys.stderr,
        )
        return 2
    manifest = Path(sources) / "SOURCES.json"
    commits = {
        name: entry.get("commit", "")
        for name, entry in (json.loads(manifest.read_text()) if manifest.is_file() else {}).items()
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/conformance",
        "-v",
        "-rs",
        "-p",
        "no:cacheprovider",
        *argv,
    ]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zr4-conformance-") as out:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "ZR4_CONFORMANCE_OUT": out},
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - began
        if (Path(out) / SCREENSHOT).is_file():
            shutil.copy(Path(out) / SCREENSHOT, RESULTS / SCREENSHOT)
        kept = {
            p.stem.removeprefix("conformance-"): p.read_text() for p in Path(out).glob("conformance-*.txt")
        }

    def public(text: str) -> str:  # no machine paths in the record
        text = text.replace(str(REPO_ROOT) + "/", "").replace(sources, "<sources>")
        return text.replace(str(Path(python).parent.parent), "<venv>")

    output = public(result.stdout + result.stderr)
    lines = [
        line
        for line in output.splitlines()
        if "::" in line or line.startswith(("SKIPPED", "FAILED")) or (line.startswith("=") and " in " in line)
    ]
    pinned = "\n".join(f"| {name} | `{commit}` |" for name, commit in sorted(commits.items()))
    RECORD.write_text(
        f"""# Conformance suite against the real ComfyUI

`tests/conformance/` run against the pinned ComfyUI and node packs on the CPU (no GPU), on
{datetime.date.today().isoformat()}, {elapsed:.0f} s wall, exit status {result.returncode}. Command
(repository root; the sources laid out by `bench/sources.py`, the venv installed from
`docker/requirements.lock`):

```
ZR4_COMFYUI_SOURCES=<sources> ZR4_COMFYUI_PYTHON=<venv>/bin/python python bench/conformance.py
```

| source | commit |
|---|---|
{pinned}

Frontend: comfyui-frontend-package {_version_of(python, "comfyui-frontend-package")}; torch
{_version_of(python, "torch")}; browser: {_chromium()} (headless, over the DevTools protocol).

What it checks: every workflow every bundled profile renders against the live `/object_info`
(placeholder model files, so file-name choices are real) and `POST /prompt` (no `node_errors`);
the UI-format workflows opened by clicking them in the Workflows sidebar (every node, link and
group; no alert; the frontend's `graphToPrompt` equals the API twin) and the API format alone
refused there with the Zod error once reported; `zr4 start` booting the real ComfyUI to healthy
with the planned flags despite `COMFYUI_ARGS="--lowvram --use-sage-attention"`, its installed
workflow opened from the sidebar and its prompt accepted; `zr4 doctor --build-time` passing; the
flag table equal to what `data/gen_comfyui_flags.py` makes from `comfy/cli_args.py` and every flag
zr4 can emit accepted by the real argparse; the node definitions in `data/comfyui/` equal to what
`data/comfyui/gen_object_info.py` captures; the auth proxy in front of the real frontend.

Screenshot (4080super's workflow, opened from the sidebar): `{SCREENSHOT}`.

`zr4 start` (its own log lines; ComfyUI's are left out), with no GPU and
`COMFYUI_ARGS="--lowvram --use-sage-attention"`:

```
{public(kept.get("start", "(not run)"))}
```

`zr4 doctor --build-time` (profile 3090 with `features.flash_attn=false`: the venv has no
flash-attn or mmcv, which need CUDA compilers to build):

```
{public(kept.get("doctor", "(not run)")).rstrip()}
```

```
{chr(10).join(lines)}
```
""",
        encoding="utf-8",
    )
    print(output[-3000:])
    print(f"wrote {RECORD.relative_to(REPO_ROOT)}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
