"""Generate ComfyUI's node definitions in ``data/comfyui/`` from a running ComfyUI at the pinned commit.

Two files come out, both facts about the pinned ComfyUI and node packs, never typed by hand:

- ``object_info-<version>.json.gz``: the body of ``GET /object_info`` (every node type, its inputs,
  defaults, ranges and choices) from ComfyUI started on the CPU in a scratch copy with no model
  files (so file-name choices are empty), gzipped deterministically (mtime 0, level 9);
- ``workflow-nodes-<version>.json``: the entries of that answer for the node types zr4's workflow
  builder can emit (``zr4.core.workflow.ui.workflow_node_types``), indented, for the UI-format
  workflow (``zr4.core.workflow.ui``), which `zr4 start` builds and so should not unpack 1 MB for.

Usage (from the repository root, with zr4 installed; DIR holds ``ComfyUI/`` with its
``custom_nodes/`` at the pinned commits, as ``bench/sources.py`` lays it out; PY is a python with
the image's lock installed)::

    python data/comfyui/gen_object_info.py --comfyui DIR/ComfyUI --python PY           # capture, write both
    python data/comfyui/gen_object_info.py --comfyui DIR/ComfyUI --python PY --check   # exit 1 if either differs
    python data/comfyui/gen_object_info.py --subset-only [--check]  # workflow-nodes from the committed .gz

The version is read from ``DIR/ComfyUI/comfyui_version.py``. ``--subset-only`` needs no ComfyUI:
it is what a change to the workflow builder (a new node type) needs, and what the unit tests run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_VERSION = "v0.7.0"
START_TIMEOUT_S = 600.0
# Folders ComfyUI writes at run time: a stale user folder or database must not shape the capture.
RUNTIME_ENTRIES = ("user", "output", "temp", "__pycache__")


def object_info_path(version: str) -> Path:
    return HERE / f"object_info-{version}.json.gz"


def workflow_nodes_path(version: str) -> Path:
    return HERE / f"workflow-nodes-{version}.json"


def comfyui_version(comfyui: Path) -> str:
    text = (comfyui / "comfyui_version.py").read_text(encoding="utf-8")
    match = re.search(r"__version__\s*=\s*[\"']([^\"']+)[\"']", text)
    if match is None:
        raise SystemExit(f"no __version__ in {comfyui / 'comfyui_version.py'}")
    return f"v{match.group(1)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capture_object_info(comfyui: Path, python: str) -> bytes:
    """``GET /object_info`` body of ``comfyui`` started with ``--cpu`` in a scratch copy."""
    with tempfile.TemporaryDirectory(prefix="zr4-object-info-") as scratch:
        tree = Path(scratch) / "ComfyUI"
        shutil.copytree(
            comfyui,
            tree,
            symlinks=True,
            ignore=lambda folder, names: [
                n
                for n in names
                if n == "__pycache__" or (Path(folder) == comfyui and (n in RUNTIME_ENTRIES or n.endswith(".db")))
            ],
        )
        port = _free_port()
        log = (Path(scratch) / "comfyui.log").open("wb")
        process = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)],
            cwd=tree,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Some node packs list a set (VideoHelperSuite's vhs_path_extensions): a fixed hash
            # seed makes their order, and so the capture, the same on every run.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    tail = (Path(scratch) / "comfyui.log").read_text(errors="replace")[-3000:]
                    raise SystemExit(f"ComfyUI exited with code {process.returncode}:\n{tail}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=120) as answer:
                        return bytes(answer.read())
                except (urllib.error.URLError, OSError):
                    time.sleep(1)
            raise SystemExit(f"ComfyUI did not serve within {START_TIMEOUT_S:.0f} s")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log.close()


def gzip_bytes(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=9, mtime=0)


def workflow_nodes_text(object_info: dict[str, Any]) -> str:
    from zr4.core.workflow.ui import node_subset, workflow_node_types

    return json.dumps(node_subset(object_info, workflow_node_types()), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _compare(path: Path, expected: bytes) -> bool:
    if path.is_file() and path.read_bytes() == expected:
        return True
    print(f"{path.name} differs from what {Path(__file__).name} makes from the source", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, help="ComfyUI folder (with custom_nodes/) at the pinned commits")
    parser.add_argument("--python", default=sys.executable, help="python with ComfyUI's requirements")
    parser.add_argument("--subset-only", action="store_true", help="only workflow-nodes, from the committed .gz")
    parser.add_argument("--version", default=None, help=f"with --subset-only (default {DEFAULT_VERSION})")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)

    if args.subset_only:
        version = args.version or DEFAULT_VERSION
        packed = object_info_path(version).read_bytes()
    else:
        if args.comfyui is None:
            parser.error("--comfyui is required unless --subset-only")
        version = comfyui_version(args.comfyui)
        packed = gzip_bytes(capture_object_info(args.comfyui, args.python))
    object_info = json.loads(gzip.decompress(packed))
    subset = workflow_nodes_text(object_info).encode("utf-8")

    outputs = [(workflow_nodes_path(version), subset)]
    if not args.subset_only:
        outputs.insert(0, (object_info_path(version), packed))
    if args.check:
        same = [_compare(path, content) for path, content in outputs]
        if all(same):
            print(f"{', '.join(path.name for path, _ in outputs)}: up to date ({len(object_info)} node types)")
        return 0 if all(same) else 1
    for path, content in outputs:
        path.write_bytes(content)
        print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
