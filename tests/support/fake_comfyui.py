"""A stand-in for ComfyUI v0.7.0's ``main.py``, for the start-sequence and doctor tests.

It parses the same command-line flags (a subset of v0.7.0's comfy/cli_args.py, with ComfyUI's
mutually exclusive VRAM and attention groups, so an unknown flag or a clash exits 2 like argparse
in ComfyUI does), then behaves like ComfyUI seen from outside:

- loads ``custom_nodes/*`` from the folder it lives in and prints ComfyUI's "Import times for
  custom nodes:" block (``(IMPORT FAILED)`` for a pack whose ``__init__.py`` raises);
- with ``--quick-test-for-ci`` exits 0 right there;
- otherwise serves HTTP on ``--listen``/``--port``: ``GET /system_stats`` (JSON) and ``GET /``;
- writes one output file (``ComfyUI_00001_.png``) into ``--output-directory``;
- on SIGTERM/SIGINT writes ``sigterm`` into ``$FAKE_COMFYUI_STATE`` and exits 0.

``$FAKE_COMFYUI_STATE`` (a folder) also receives ``argv.json`` (the arguments and the start time).
``$FAKE_COMFYUI_EXIT_AFTER`` (seconds) and ``$FAKE_COMFYUI_EXIT_CODE`` make it exit by itself.
Standard library only: it runs under whichever interpreter plays ``$COMFYUI_PYTHON``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

VERSION = "0.7.0"
OUTPUT_NAME = "ComfyUI_00001_.png"
# A 1x1 PNG: enough to be a real image file.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def build_parser(exclude: frozenset[str] = frozenset()) -> argparse.ArgumentParser:
    """Part of v0.7.0's flag set with ComfyUI's arities and exclusive groups (comfy/cli_args.py).

    ``exclude`` leaves flags out, to play an older ComfyUI that lacks them.
    """
    parser = argparse.ArgumentParser(prog="main.py")

    def add(target: Any, flag: str, **options: Any) -> None:
        if flag not in exclude:
            target.add_argument(flag, **options)

    add(parser, "--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0,::")
    add(parser, "--port", type=int, default=8188)
    add(parser, "--output-directory", type=str, default=None)
    # Also taken by ComfyUI v0.7.0 (data/comfyui_flags.yaml); `zr4 doctor` passes them.
    add(parser, "--temp-directory", type=str, default=None)
    add(parser, "--user-directory", type=str, default=None)
    add(parser, "--database-url", type=str, default=None)
    add(parser, "--extra-model-paths-config", type=str, default=None, nargs="+", action="append")
    add(parser, "--disable-auto-launch", action="store_true")
    add(parser, "--preview-method", type=str, default="none", choices=["none", "auto", "latent2rgb", "taesd"])
    add(parser, "--reserve-vram", type=float, default=None)
    for flag in ("--cpu-vae", "--force-fp16", "--disable-smart-memory", "--async-offload"):
        add(parser, flag, action="store_true")
    add(parser, "--disable-pinned-memory", action="store_true")
    add(parser, "--fast", nargs="*", default=None)
    add(parser, "--quick-test-for-ci", action="store_true")
    vram = parser.add_mutually_exclusive_group()
    for flag in ("--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"):
        add(vram, flag, action="store_true")
    attention = parser.add_mutually_exclusive_group()
    for flag in ("--use-pytorch-cross-attention", "--use-sage-attention", "--use-flash-attention"):
        add(attention, flag, action="store_true")
    return parser


def load_custom_nodes(root: Path) -> list[tuple[str, bool, float]]:
    results = []
    for pack in sorted((root / "custom_nodes").glob("*")):
        init = pack / "__init__.py"
        if not init.is_file():
            continue
        started = time.perf_counter()
        try:
            spec = importlib.util.spec_from_file_location(pack.name.replace("-", "_"), init)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            ok = True
        except Exception as error:
            print(f"Cannot import {pack} module for custom nodes: {error}", flush=True)
            ok = False
        results.append((str(pack), ok, time.perf_counter() - started))
    print("\nImport times for custom nodes:")
    for path, ok, seconds in results:
        print(f"{seconds:6.1f} seconds{'' if ok else ' (IMPORT FAILED)'}: {path}")
    print(flush=True)
    return results


def _handler(output_dir: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/system_stats":
                body = json.dumps(
                    {"system": {"comfyui_version": VERSION, "python_version": sys.version}, "devices": []}
                ).encode()
                kind = "application/json"
            elif self.path == "/":
                body = b"<!doctype html><title>ComfyUI</title>"
                kind = "text/html"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The handler goes in before argv.json is written: tests send SIGTERM as soon as they see that
    # file, and a signal before the handler would kill the process with no "sigterm" record.
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state = Path(os.environ["FAKE_COMFYUI_STATE"]) if os.environ.get("FAKE_COMFYUI_STATE") else None
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        record = {
            "argv": sys.argv[1:] if argv is None else argv,
            "started_at": time.time(),
            "pid": os.getpid(),
        }
        partial = state / "argv.json.part"  # renamed into place: a reader never sees half a file
        partial.write_text(json.dumps(record))
        os.replace(partial, state / "argv.json")
    load_custom_nodes(Path(__file__).resolve().parent)
    if args.quick_test_for_ci:
        return 0

    output_dir = Path(args.output_directory or "output")
    output_dir.mkdir(parents=True, exist_ok=True)
    host = (args.listen or "127.0.0.1").split(",")[0]
    server = ThreadingHTTPServer((host, args.port), _handler(output_dir))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    print(f"To see the GUI go to: http://{host}:{args.port}", flush=True)

    # A finished "job": written under a temporary name, then renamed, as ComfyUI's savers end up.
    partial = output_dir / f".{OUTPUT_NAME}.part"
    partial.write_bytes(PNG_BYTES)
    os.replace(partial, output_dir / OUTPUT_NAME)

    exit_after = float(os.environ.get("FAKE_COMFYUI_EXIT_AFTER", "0") or 0)
    stop.wait(exit_after if exit_after > 0 else None)
    server.shutdown()
    server.server_close()
    if stopped_by:
        if state is not None:
            (state / "sigterm").write_text(str(stopped_by[0]))
        print(f"received signal {stopped_by[0]}, exiting", flush=True)
        return 0
    return int(os.environ.get("FAKE_COMFYUI_EXIT_CODE", "0"))


if __name__ == "__main__":
    sys.exit(main())
