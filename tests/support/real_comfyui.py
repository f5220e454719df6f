"""The real ComfyUI as a test component: find the pinned sources, copy them, start, query, stop.

Why: zr4's workflows, flags and start sequence are claims about ComfyUI v0.7.0 and its node packs;
only the real program can confirm them. The pinned sources are laid out by ``bench/sources.py``
(``ComfyUI/`` with ``custom_nodes/``, plus ``SOURCES.json`` naming the commits) and run with the
python of a venv holding the image's lock (``docker/requirements.lock``). Two environment variables
point at them:

- ``ZR4_COMFYUI_SOURCES``: the folder holding ``ComfyUI/`` (``bench/sources.py --out``);
- ``ZR4_COMFYUI_PYTHON``: that venv's python.

When either is missing, :func:`sources_or_skip_reason` says what to set, and the conformance
suite skips with that reason. ComfyUI writes into its own folder (``user/``, ``models/``, the
database), so every test session works on a private copy (:func:`copy_comfyui`).

Typical use (see ``tests/conformance/conftest.py`` for the fixtures built on it)::

    sources = find_sources()                       # or skip with sources_or_skip_reason()
    comfy = copy_comfyui(sources, tmp / "tree")    # tmp/tree/ComfyUI
    place_placeholder_models(comfy / "models", ["vae/x.safetensors"])
    with start_comfyui(comfy, sources.python) as server:
        info = server.object_info()
        status, body = server.post_json("/prompt", {"prompt": workflow})
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES_ENV = "ZR4_COMFYUI_SOURCES"
PYTHON_ENV = "ZR4_COMFYUI_PYTHON"
# ComfyUI v0.7.0 with the five node packs takes ~45 s to serve on 2 loaded CPU cores.
START_TIMEOUT_S = 300.0
# Written by ComfyUI at run time; never copied from the sources (a stale database or user folder
# would make a test depend on whoever ran ComfyUI there before).
_RUNTIME_DIRS = ("user", "output", "temp", "__pycache__")


class SourcesMissing(RuntimeError):
    """The pinned ComfyUI sources or the lock's python are not available; str() says what to do."""


@dataclass(frozen=True)
class ComfySources:
    """Where the pinned ComfyUI tree and the python to run it are."""

    root: Path  # holds ComfyUI/ (and SOURCES.json when bench/sources.py wrote it)
    python: Path

    @property
    def comfyui(self) -> Path:
        return self.root / "ComfyUI"

    def commits(self) -> dict[str, str]:
        """Repository name -> commit of every tree laid out (from SOURCES.json; empty if absent)."""
        manifest = self.root / "SOURCES.json"
        if not manifest.is_file():
            return {}
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return {name: str(entry.get("commit", "")) for name, entry in data.items() if isinstance(entry, dict)}


def find_sources(environ: Mapping[str, str] | None = None) -> ComfySources:
    """The sources named by ``ZR4_COMFYUI_SOURCES`` / ``ZR4_COMFYUI_PYTHON``; raises SourcesMissing."""
    env = os.environ if environ is None else environ
    root_text, python_text = env.get(SOURCES_ENV, ""), env.get(PYTHON_ENV, "")
    if not root_text or not python_text:
        raise SourcesMissing(
            f"needs the pinned ComfyUI: set {SOURCES_ENV} (the folder holding ComfyUI/, "
            f"made by `python bench/sources.py --mirror DIR --out DIR`) and {PYTHON_ENV} "
            "(python of a venv with docker/requirements.lock installed)"
        )
    root, python = Path(root_text), Path(python_text)
    if not (root / "ComfyUI" / "main.py").is_file():
        raise SourcesMissing(f"{SOURCES_ENV}={root} holds no ComfyUI/main.py: run bench/sources.py")
    if not python.is_file() or not os.access(python, os.X_OK):
        raise SourcesMissing(f"{PYTHON_ENV}={python} is not an executable python")
    return ComfySources(root=root, python=python)


def sources_or_skip_reason(environ: Mapping[str, str] | None = None) -> tuple[ComfySources | None, str]:
    """(sources, "") when available, else (None, the reason a test should skip with)."""
    try:
        return find_sources(environ), ""
    except SourcesMissing as missing:
        return None, str(missing)


def copy_comfyui(sources: ComfySources, dest: Path) -> Path:
    """A private, writable copy of the ComfyUI tree at ``dest/ComfyUI``; returns that folder."""
    target = dest / "ComfyUI"
    shutil.copytree(
        sources.comfyui,
        target,
        ignore=lambda folder, names: (
            [n for n in names if n in _RUNTIME_DIRS or n.endswith(".db")]
            if Path(folder) == sources.comfyui
            else [n for n in names if n == "__pycache__"]
        ),
        symlinks=True,
    )
    return target


def place_placeholder_models(models_dir: Path, rel_paths: Iterable[str], size: int = 16) -> list[Path]:
    """Create small placeholder files (``folder/name``) so loaders list them as choices.

    ComfyUI lists model files by name only (folder_paths.get_filename_list); the bytes are never
    read unless a workflow runs, so a few bytes are enough for ``/object_info`` and ``/prompt``.
    """
    written = []
    for rel in sorted(set(rel_paths)):
        path = models_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(b"\0" * size)
        written.append(path)
    return written


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ComfyUIServer:
    """A running ComfyUI process and its HTTP API. Stop it with ``stop()`` or a ``with`` block."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    _object_info: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """Everything ComfyUI printed so far (stdout and stderr together)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, timeout_s: float = 60.0) -> tuple[int, bytes]:
        """(HTTP status, body) of one request; an HTTP error status is returned, not raised."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} answered HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        status, answer = self.request("POST", path, body)
        try:
            return status, json.loads(answer)
        except ValueError:
            return status, answer.decode("utf-8", errors="replace")

    def object_info(self) -> dict[str, Any]:
        """``GET /object_info`` (every node type's inputs and choices), fetched once."""
        if self._object_info is None:
            self._object_info = self.get_json("/object_info")
        return self._object_info

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until ``/system_stats`` answers; raise with the log's tail if ComfyUI exits or hangs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"ComfyUI exited with code {self.process.returncode} before serving:\n{self.log()[-4000:]}"
                )
            try:
                if self.request("GET", "/system_stats", timeout_s=5.0)[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not serve within {timeout_s:.0f} s:\n{self.log()[-4000:]}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM the process group, then SIGKILL after ``timeout_s``; returns the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> ComfyUIServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def spawn(
    argv: Sequence[str],
    cwd: Path,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> ComfyUIServer:
    """Run ``argv`` (anything that ends up serving ComfyUI on ``port``, e.g. ``zr4 start``) in its
    own process group with output to ``log_path``, and wait until it serves."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            env=dict(os.environ if env is None else env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stop() ends ComfyUI and anything it started
        )
    server = ComfyUIServer(process=process, port=port, log_path=log_path)
    try:
        server.wait_ready(timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def start_comfyui(
    comfyui_dir: Path,
    python: Path | str,
    args: Sequence[str] = ("--cpu",),
    *,
    port: int | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> ComfyUIServer:
    """Start ``python main.py --listen 127.0.0.1 --port PORT *args`` in ``comfyui_dir`` and wait
    until it serves (``--cpu`` by default: no GPU is needed to load every node and validate)."""
    port = port or free_port()
    argv = [str(python), "main.py", "--listen", "127.0.0.1", "--port", str(port), *args]
    return spawn(
        argv, comfyui_dir, port, log_path or comfyui_dir / f"comfyui-{port}.log", env=env, timeout_s=timeout_s
    )


def parse_args_with_real_argparse(
    sources: ComfySources, args: Sequence[str], timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Parse ``args`` with the pinned ``comfy/cli_args.py`` exactly as ``main.py`` does (parsing
    enabled, same module), without starting ComfyUI. Exit status 0 means argparse accepted them."""
    code = (
        "import sys; import comfy.options; comfy.options.enable_args_parsing(); "
        "sys.argv = ['main.py', *sys.argv[1:]]; import comfy.cli_args"
    )
    return subprocess.run(
        [str(sources.python), "-c", code, *args],
        cwd=str(sources.comfyui),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


_PARSE_MANY = """
import contextlib, io, json, sys
import comfy.cli_args
results = []
for vector in json.loads(sys.stdin.read()):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            comfy.cli_args.parser.parse_args(vector)
        results.append(None)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        results.append(lines[-1] if lines else "rejected")
print(json.dumps(results))
"""


def parse_many_with_real_argparse(
    sources: ComfySources, vectors: Sequence[Sequence[str]], cwd: Path | None = None
) -> list[str | None]:
    """Each vector parsed by the pinned ComfyUI's own parser (one interpreter for all of them):
    None where argparse accepts it, else argparse's error line. ``cwd`` is where relative
    directory values are looked up (default: the sources' ComfyUI folder)."""
    result = subprocess.run(
        [str(sources.python), "-c", _PARSE_MANY],
        input=json.dumps([list(v) for v in vectors]),
        cwd=str(cwd or sources.comfyui),
        env={**os.environ, "PYTHONPATH": str(sources.comfyui)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing with ComfyUI's argparse failed: {result.stderr[-2000:]}")
    answers: list[str | None] = json.loads(result.stdout.strip().splitlines()[-1])
    return answers


def start_instances(
    comfyui_dir: Path, python: Path | str, state_root: Path, outputs: Path, count: int = 2
) -> list[ComfyUIServer]:
    """``count`` ComfyUI from one tree sharing one output folder, each with its own temp folder and
    database, as `zr4 start` runs one per GPU (``zr4.image.instances.instance_argv``); started
    side by side, returned once all serve. Stop them with ``stop()``."""
    import threading

    started: dict[int, ComfyUIServer | BaseException] = {}

    def start(index: int) -> None:
        own = state_root / f"comfyui-{index}"
        own.mkdir(parents=True, exist_ok=True)
        args = (
            "--cpu", "--output-directory", str(outputs), "--temp-directory", str(own),
            "--database-url", f"sqlite:///{own / 'comfyui.db'}",
        )  # fmt: skip
        try:
            started[index] = start_comfyui(
                comfyui_dir, python, args, log_path=state_root / f"comfyui-{index}.log"
            )
        except BaseException as error:  # re-raised below, in the caller's thread
            started[index] = error

    threads = [threading.Thread(target=start, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    servers = [started[i] for i in range(count) if isinstance(started[i], ComfyUIServer)]
    failures = [started[i] for i in range(count) if isinstance(started[i], BaseException)]
    if failures:
        for server in servers:
            server.stop()  # type: ignore[union-attr]
        raise failures[0]  # type: ignore[misc]
    return servers  # type: ignore[return-value]
