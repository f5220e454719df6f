"""The command transcripts in the README and docs/, generated from the CLI and checked against it.

A fenced block that shows ``$ zr4 ...`` and its output is one of two kinds, named by an HTML comment
on the line right above it (invisible on GitHub):

``<!-- transcript: ID {options} -->``
    Generated. Every ``$ `` line of the block is a command; this module runs them, one after the
    other, as a user would (``bash -c``, in a copy of the checkout in a temporary folder, HOME a
    temporary folder, zr4 imported from that copy) and writes what they print (stdout and stderr
    together) under each. The options (a YAML mapping, on the comment's line or the lines after it)
    name the fixtures the commands need and how the output is shown: see ``OPTIONS``.

``<!-- excerpt: bench/results/FILE.md -->``
    A recorded run that cannot be repeated here (a GPU, a container engine, PyPI): the block's lines,
    but for ``...`` elisions, must appear in that record in the same order, and the text just above
    the comment must name the record, so a reader knows where the run comes from.

``python tests/support/doc_transcripts.py`` checks every transcript; ``--write`` rewrites the blocks
that differ; ``--only ID`` limits either to some transcripts. tests/test_docs_transcripts.py runs the
same check and fails naming the page and the first differing line.

Volatile values (timings, dates, disk space, the size of zr4's own wheel: ``VOLATILE``) are compared
as placeholders. ``--write`` keeps a block whose placeholders are all that differ, so a second run
changes nothing and every block shows the values of one real run; temporary paths and ports of the
local servers are shown as fixed stand-ins (``/home/you/zr4``, ``/workspace``, ``127.0.0.1:9000``).

This lives in tests/support/ because the fixtures are the test suite's own servers (``s3_server``,
``hub_server``, ``auth_stack`` with ``fake_comfyui``), and the test imports it like the other helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES_GLOB = ("README.md", "docs/**/*.md")
# What a copy of the checkout needs for every command (a fresh clone without tests/, bench/, docs/).
CHECKOUT_PARTS = ("src", "profiles", "templates", "data", "docker", "pyproject.toml", "README.md",
                  ".hadolint.yaml", ".dockerignore", ".gitignore")  # fmt: skip
# Left out: caches, zr4's wheel (a build artifact a fresh clone lacks), a developer's docker/.env (secrets).
CHECKOUT_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", "zr4-*.whl", "zr4-*.whl.sha256", ".env"
)
# Container engines are hidden from the commands: a transcript must not depend on the host having one.
HIDDEN_TOOLS = ("docker", "podman", "buildah")
DISPLAY_HOME = "/home/you"
DISPLAY_S3_PORT = "9000"
DISPLAY_HTTP_PORT = "8000"
DISPLAY_COMFYUI_PORT = "8188"
DISPLAY_HUB, DISPLAY_HUB_CDN = "127.0.0.1:7000", "127.0.0.1:7001"
ELISION = "..."
FAKE_HF_TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"  # token-shaped, split so no scanner takes it
NETWORK_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")

MARKER = re.compile(r"^<!-- (transcript|excerpt):(.*)$")
FENCE = re.compile(r"^(```+)(.*)$")
OPTIONS = {
    "s3": "moto | rclone: a local S3 server; R2_* and the sync folders under /workspace are set",
    "http": "true: a plain HTTP server that is not S3, at 127.0.0.1:8000",
    "hub": "true: the stand-in Hub with small files for every model; HF_ENDPOINT and MODELS_DIR set",
    "comfyui": "true: the stand-in ComfyUI behind zr4's auth proxy, at port 8188; ZR4_AUTH_TOKEN set",
    "sync_daemon": "true: `zr4 sync run` running (needs s3); action kill-sync-daemon kills it",
    "files": "{path: bytes | text}: files made before the first command (display paths)",
    "page_files": "[name]: files made from the page's own block whose first line is `# name`",
    "broken_context": "DIR: the default profile rendered into DIR with five classic mistakes put back",
    "setup": "[command]: commands run first, their output not shown",
    "env": "{NAME: value}: extra environment for every command",
    "actions": "{step: action}: an action before that command (1 = the first); see Session.act",
    "during": "{step: [[regex, action]]}: an action once a line matches (ctrl-c: SIGINT, shown as ^C)",
    "show": "[[first, last]]: only these line ranges (regexes; last ~: to the end) of each output",
    "mask": "[regex]: more volatile values for this transcript",
    "unordered": "[regex]: consecutive lines matching it are compared in any order (concurrent work)",
    "requires": "[tool | no-gpu]: skipped without these",
    "slow": "true: takes more than a few seconds",
    "timeout": "seconds per command (default 60)",
}
# (what, pattern): compared as a placeholder. Narrow on purpose: everything else must match exactly.
VOLATILE = (
    ("seconds", r" *\b\d+\.\d+ ?s\b"),  # leading spaces too: right-aligned columns
    ("milliseconds", r" *\b\d+ ms\b"),
    ("rate", r" *\b\d+(\.\d+)? [KMG]?B/s\b"),
    ("eta", r"\beta \d+s\b"),
    ("clock offset", r"(?<=server clock offset )[+-]\d+ s\b"),
    ("timestamp", r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\b"),
    ("date", r"\b20\d\d-\d\d-\d\d\b"),
    ("wheel size", r"(?<=\.whl  )[\d,]+(?= bytes)"),
    ("free space", r"(?<=: )\d+(\.\d+)? [KMGT]B(?=$)"),
)


class TranscriptError(Exception):
    """A transcript that cannot run as written (a bad marker, a fixture that failed)."""


@dataclass
class Block:
    """A marked fenced block of a page: lines ``[open_line+1, close_line)`` are its body."""

    page: Path
    kind: str
    name: str  # transcript id, or the excerpt's record path
    options: dict[str, Any]
    marker_line: int
    open_line: int
    close_line: int
    body: list[str]

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.open_line + 1}"

    @property
    def commands(self) -> list[str]:
        return [line[2:] for line in self.body if line.startswith("$ ")]


def shown(path: Path) -> str:
    """A page's path as messages name it: relative to the checkout when it lies there."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pages() -> list[Path]:
    found: set[Path] = set()
    for pattern in PAGES_GLOB:
        found.update(ROOT.glob(pattern))
    return sorted(found)


def parse_page(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = MARKER.match(lines[index])
        if not match:
            index += 1
            continue
        kind, text = match.group(1), match.group(2)
        start = index
        while "-->" not in lines[index]:
            index += 1
            if index == len(lines):
                raise TranscriptError(f"{shown(page)}:{start + 1}: the comment never ends (-->)")
            text += "\n" + lines[index]
        text = text[: text.rindex("-->")].strip()
        index += 1
        fence = FENCE.match(lines[index]) if index < len(lines) else None
        if fence is None:
            raise TranscriptError(f"{shown(page)}:{start + 1}: no fenced block right after the comment")
        close = index + 1
        while close < len(lines) and lines[close] != fence.group(1):
            close += 1
        if close == len(lines):
            raise TranscriptError(f"{shown(page)}:{index + 1}: the fenced block never closes")
        if kind == "transcript":
            head = re.match(r"(\S+)(.*)", text, re.DOTALL)
            name, rest = (head.group(1), head.group(2)) if head else ("", "")
        else:
            name, rest = text, ""
        if not name:
            raise TranscriptError(f"{shown(page)}:{start + 1}: the comment names no transcript id or record")
        options = yaml.safe_load(rest) if rest.strip() else {}
        if not isinstance(options, dict):
            raise TranscriptError(f"{shown(page)}:{start + 1}: options must be a YAML mapping")
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TranscriptError(f"{shown(page)}:{start + 1}: unknown options {unknown}")
        blocks.append(Block(page, kind, name, options, start, index, close, lines[index + 1 : close]))
        index = close + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in parse_page(page)]


def unmarked_command_blocks(page: Path) -> list[int]:
    """Lines (1-based) of fenced blocks that show a ``$ `` command but carry no marker."""
    lines = page.read_text(encoding="utf-8").split("\n")
    marked = {block.open_line for block in parse_page(page)}
    found: list[int] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        close = index + 1
        while close < len(lines) and lines[close] != fence.group(1):
            close += 1
        if index not in marked and any(line.lstrip().startswith("$ ") for line in lines[index + 1 : close]):
            found.append(index + 1)
        index = close + 1
    return found


# --- masks and aliases ---------------------------------------------------------------------------
def masked(line: str, extra: list[str] | tuple[str, ...] = ()) -> str:
    for what, pattern in VOLATILE:
        line = re.sub(pattern, f"<{what}>", line)
    for pattern in extra:
        line = re.sub(pattern, "<masked>", line)
    return line


def _replace_all(text: str, mapping: dict[str, str]) -> str:
    """Every key of ``mapping`` replaced in one pass (longest first), so no replacement is rewritten."""
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("(?:" + "|".join(re.escape(key) for key in keys) + r")(?![A-Za-z0-9_])")
    return pattern.sub(lambda match: mapping[match.group(0)], text)


@dataclass
class Aliases:
    """Real values of this run (temporary paths, ports) and the stand-ins the page shows for them."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, real: str, display: str) -> None:
        self.pairs.append((real, display))

    def to_display(self, text: str) -> str:
        return _replace_all(text, dict(self.pairs))

    def to_real(self, text: str) -> str:
        """A command or path as the page shows it, with this run's real values (the first alias wins)."""
        mapping: dict[str, str] = {}
        for real, display in self.pairs:
            mapping.setdefault(display, real)
        return _replace_all(text, mapping)


# --- the environment the commands run in ---------------------------------------------------------
_TOOL_DIRS: list[str] = []


def _tool_path(scratch: Path) -> str:
    """PATH for the commands: this Python's bin folder first (zr4, hadolint, ...), no container engine."""
    if not _TOOL_DIRS:
        farm = Path(tempfile.mkdtemp(prefix="zr4-doc-path-", dir=scratch))
        dirs = [str(Path(sys.executable).parent)]
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry and entry not in dirs and "/shims" not in entry and Path(entry).is_dir():
                dirs.append(entry)
        for position, folder in enumerate(list(dirs)):
            if not any((Path(folder) / tool).exists() for tool in HIDDEN_TOOLS):
                continue
            shadow = farm / str(position)
            shadow.mkdir()
            for item in Path(folder).iterdir():
                if item.name not in HIDDEN_TOOLS:
                    (shadow / item.name).symlink_to(item)
            dirs[position] = str(shadow)
        _TOOL_DIRS.extend(dirs)
    return os.pathsep.join(_TOOL_DIRS)


def has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def missing_requirements(block: Block) -> list[str]:
    missing = []
    for need in block.options.get("requires", []):
        if need == "no-gpu":
            if has_nvidia_gpu():
                missing.append("a machine without an NVIDIA GPU")
        elif shutil.which(need) is None:
            missing.append(need)
    return missing


class Session:
    """One transcript's world: a temporary folder with HOME, a checkout copy, /workspace, servers."""

    def __init__(self, block: Block, scratch: Path) -> None:
        self.block = block
        self.root = Path(tempfile.mkdtemp(prefix="zr4-doc-", dir=scratch)).resolve()
        self.home = self.root / "home"
        self.checkout = self.home / "zr4"
        self.workspace = self.root / "workspace"
        self.tmp = self.root / "tmp"
        self.aliases = Aliases()
        self.actions: dict[str, Callable[[], None]] = {}
        self.stack = contextlib.ExitStack()
        self.env: dict[str, str] = {}

    def __enter__(self) -> Session:
        try:
            self._prepare()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stack.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _prepare(self) -> None:
        options = self.block.options
        for folder in (self.home, self.workspace, self.tmp):
            folder.mkdir(parents=True)
        for part in CHECKOUT_PARTS:
            source = ROOT / part
            if source.is_dir():
                shutil.copytree(source, self.checkout / part, ignore=CHECKOUT_IGNORE, symlinks=True)
            elif source.is_file():
                self.checkout.mkdir(exist_ok=True)
                shutil.copy2(source, self.checkout / part)
        for real, display in ((self.checkout, f"{DISPLAY_HOME}/zr4"), (self.home, DISPLAY_HOME),
                              (self.workspace, "/workspace"), (self.tmp, "/tmp"), (ROOT, f"{DISPLAY_HOME}/zr4")):  # fmt: skip
            self.aliases.add(str(real), display)
        self.env = {
            "PATH": _tool_path(self.root.parent),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "PYTHONPATH": str(self.checkout / "src"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "COLUMNS": "100",
        }
        if options.get("network"):  # only for --run: this machine's CA settings (a TLS-inspecting proxy)
            self.env.update({name: os.environ[name] for name in NETWORK_ENV if name in os.environ})
        if options.get("s3"):
            self._s3(str(options["s3"]))
        if options.get("http"):
            self._http()
        if options.get("hub"):
            self._hub()
        if options.get("comfyui"):
            self._comfyui()
        if options.get("sync_daemon"):
            self._sync_daemon()
        self.env.update(
            {name: self.aliases.to_real(str(value)) for name, value in options.get("env", {}).items()}
        )
        for path, content in options.get("files", {}).items():
            self._make_file(path, content)
        for name in options.get("page_files", []):
            self._page_file(name)
        if options.get("broken_context"):
            self._broken_context(str(options["broken_context"]))
        for command in options.get("setup", []):
            lines, code = self.run(command)
            if code != 0:
                tail = "\n".join(lines[-10:])
                raise TranscriptError(f"{self.block.where}: setup command `{command}` exited {code}:\n{tail}")

    # --- fixtures -----------------------------------------------------------------------------
    def _s3(self, kind: str) -> None:
        from support.s3_server import MotoS3, RcloneS3

        server: MotoS3 | RcloneS3
        if kind == "moto":
            server = MotoS3(log_path=self.root / "moto.log")
        elif kind == "rclone":
            server = RcloneS3(self.root / "s3" / "data")
        else:
            raise TranscriptError(f"{self.block.where}: s3 is moto or rclone, not {kind!r}")
        server.start()
        self.stack.callback(server.stop)
        self.aliases.add(f"127.0.0.1:{server.port}", f"127.0.0.1:{DISPLAY_S3_PORT}")
        self.env.update(
            {
                "R2_ENDPOINT": server.endpoint,
                "R2_ACCESS_KEY_ID": server.access_key,
                "R2_SECRET_ACCESS_KEY": server.secret_key,
                "OUTPUT_DIR": str(self.workspace / "outputs"),
                "R2_SYNC_STATE_DIR": str(self.workspace / ".zr4" / "sync"),
                "RUNPOD_POD_ID": "abc123xyz",
            }
        )
        (self.workspace / "outputs").mkdir(exist_ok=True)

    def _http(self) -> None:
        served = self.root / "http"  # an empty folder: the server answers, but holds nothing
        served.mkdir()

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(served), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.stack.callback(server.server_close)
        self.stack.callback(server.shutdown)
        self.aliases.add(f"127.0.0.1:{server.server_address[1]}", f"127.0.0.1:{DISPLAY_HTTP_PORT}")

    def _hub(self) -> None:
        from support.hub_server import FakeHub, deterministic_bytes
        from zr4.image.models import load_manifest

        hub = FakeHub()
        sparse = self.root / "hub"
        sparse.mkdir()
        for entry in load_manifest().entries:
            if entry.repo and entry.path and entry.size is None:
                hub.add_file(entry.repo, entry.path, deterministic_bytes(3_000_000, entry.path))
            elif entry.repo and entry.path and entry.size is not None:
                # A file the manifest pins by size: a sparse file of that size, for plans (never downloaded).
                stand_in = sparse / entry.id
                with stand_in.open("wb") as handle:
                    handle.truncate(entry.size)
                digest = entry.sha256 or hashlib.sha256(entry.path.encode()).hexdigest()
                hub.add_file(entry.repo, entry.path, file=stand_in, sha256=digest)
        for level, size in (("Q4_K_M", 9_000_000), ("Q5_K_M", 10_000_000)):  # the real repository's names
            name = f"Wan21_I2V_SteadyDancer_fp16-{level}_fix_5d_tensor.gguf"
            hub.add_file("MCG-NJU/SteadyDancer-GGUF", name, deterministic_bytes(size, name))
        hub.start()
        self.stack.callback(hub.stop)
        for endpoint, display in ((hub.endpoint, DISPLAY_HUB), (hub.cdn_endpoint, DISPLAY_HUB_CDN)):
            self.aliases.add(endpoint.removeprefix("http://"), display)
        profile = self.checkout / "docker" / "profile.json"  # what the image has at /opt/zr4/profile.json
        self.env.update(
            {
                "HF_ENDPOINT": hub.endpoint,
                "MODELS_DIR": str(self.workspace / "models"),
                "ZR4_PROFILE": str(profile),
            }
        )

    def _comfyui(self) -> None:
        from support.auth_stack import TOKEN, ComfyBehindProxy

        stack = ComfyBehindProxy(self.root / "comfyui", extra_env=self.env, listen="127.0.0.1")
        self.stack.enter_context(stack)
        self.aliases.add(f"port {stack.public_port}", f"port {DISPLAY_COMFYUI_PORT}")
        self.aliases.add(f"127.0.0.1:{stack.public_port}", f"127.0.0.1:{DISPLAY_COMFYUI_PORT}")
        self.env.update({"COMFYUI_PORT": str(stack.public_port), "ZR4_AUTH_TOKEN": TOKEN})

    def _sync_daemon(self) -> None:
        if "R2_ENDPOINT" not in self.env:
            raise TranscriptError(f"{self.block.where}: sync_daemon needs s3")
        env = {**self.env, "ENABLE_R2_SYNC": "true"}
        log = (self.root / "sync-daemon.log").open("wb")
        self.stack.callback(log.close)
        daemon = subprocess.Popen(["zr4", "sync", "run"], env=env, cwd=self.checkout, stdout=log, stderr=log)
        self.stack.callback(_stop, daemon)
        heartbeat = self.workspace / ".zr4" / "sync" / "heartbeat.json"
        deadline = time.monotonic() + 30
        while not heartbeat.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise TranscriptError(f"{self.block.where}: `zr4 sync run` wrote no heartbeat")
            time.sleep(0.05)
        self.env["ENABLE_R2_SYNC"] = "true"

        def kill() -> None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)

        self.actions["kill-sync-daemon"] = kill

    def _target(self, display_path: str) -> Path:
        real = Path(self.aliases.to_real(display_path))
        return real if real.is_absolute() else self.checkout / real

    def _make_file(self, display_path: str, content: int | str) -> None:
        from support.hub_server import deterministic_bytes

        target = self._target(display_path)
        if not target.resolve().is_relative_to(self.root):
            raise TranscriptError(f"{self.block.where}: {display_path} is outside the temporary folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = deterministic_bytes(content, display_path) if isinstance(content, int) else content.encode()
        target.write_bytes(data)

    def _page_file(self, name: str) -> None:
        lines = self.block.page.read_text(encoding="utf-8").split("\n")
        for index, line in enumerate(lines):
            fence = FENCE.match(line)
            if fence and index + 1 < len(lines) and lines[index + 1] == f"# {name}":
                close = lines.index(fence.group(1), index + 1)
                self._make_file(name, "\n".join(lines[index + 1 : close]) + "\n")
                return
        raise TranscriptError(f"{self.block.where}: no block starting with `# {name}` on the page")

    def _broken_context(self, folder: str) -> None:
        """The mistakes docs/reference/render-validate.md lists, put back into a fresh render."""
        target = self._target(folder)
        _, code = self.run(f"zr4 render --profile 4080super --out {folder}")
        if code != 0:
            raise TranscriptError(f"{self.block.where}: rendering {folder} failed")
        ignore = target / ".dockerignore"
        ignore.write_text(ignore.read_text() + "workflows/\n")
        dockerfile = target / "Dockerfile"
        text, found = re.subn(
            r"^FROM nvidia/cuda:\S+ AS runtime$",
            "FROM nvidia/cuda:12.4-devel-ubuntu22.04 AS runtime\n"
            f"ENV HF_TOKEN={FAKE_HF_TOKEN}\n"
            'RUN pip install xformers>=0.0.28 2>/dev/null || echo "xformers failed"',
            dockerfile.read_text(),
            flags=re.MULTILINE,
        )
        start = target / "start.sh"
        script, set_lines = re.subn(
            r"^set -euo pipefail$",
            'set -euo pipefail\nexport COMFYUI_ARGS="--medvram --cpu-text-encoder"',
            start.read_text(),
            flags=re.MULTILINE,
        )
        if found != 1 or set_lines != 1:
            raise TranscriptError(f"{self.block.where}: the rendered Dockerfile/start.sh changed shape")
        dockerfile.write_text(text)
        start.write_text(script)

    # --- running -----------------------------------------------------------------------------
    def act(self, action: str) -> None:
        """A named action: ``write PATH BYTES`` (a new file), or one a fixture offers."""
        words = action.split()
        if words[0] == "write" and len(words) == 3:
            self._make_file(words[1], int(words[2]))
        elif action in self.actions:
            self.actions[action]()
        else:
            raise TranscriptError(f"{self.block.where}: no action {action!r} in this transcript")

    def run(
        self, command: str, previous_code: int = 0, during: list[list[str]] | None = None
    ) -> tuple[list[str], int]:
        """Run one command line with bash; stdout and stderr together, as a terminal shows them.

        ``during``: (regex, action) pairs, in order: once a line matches, the action runs (``ctrl-c``
        sends SIGINT and shows ``^C``, as a terminal does).
        """
        pending = [(str(regex), str(action)) for regex, action in (during or [])]
        real = self.aliases.to_real(command)
        script = f"(exit {previous_code}); {real}" if previous_code else real
        timeout = float(self.block.options.get("timeout", 60))
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=self.checkout,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(process)

        timer = threading.Timer(timeout, expire)
        timer.start()
        lines: list[str] = []
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                lines.append(line)
                while pending and re.search(pending[0][0], line):
                    action = pending.pop(0)[1]
                    if action == "ctrl-c":
                        lines.append("^C")
                        os.killpg(process.pid, signal.SIGINT)
                    else:
                        self.act(action)
            code = process.wait()
            if pending:
                tail = "\n".join(lines[-10:])
                raise TranscriptError(
                    f"{self.block.where}: `{command}` printed no line matching {pending[0][0]!r}; it ended with:\n{tail}"
                )
        finally:
            timer.cancel()
            _kill_group(process)
        if expired.is_set():
            raise TranscriptError(f"{self.block.where}: `{command}` ran past {timeout:.0f} s")
        return lines, code


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def select(lines: list[str], ranges: list[list[str | None]]) -> list[str]:
    """The lines of each (first, last) regex range in turn, with ``...`` where lines were left out.

    ``last`` None (``~`` in YAML) runs to the end of the output.
    """
    if not ranges:
        return lines
    shown: list[str] = []
    position = 0
    for first, last in ranges:
        start = next((i for i in range(position, len(lines)) if re.search(str(first), lines[i])), None)
        if start is None:
            raise TranscriptError(f"no line matches {first!r} in the output")
        end = (
            len(lines) - 1
            if last is None
            else next((i for i in range(start, len(lines)) if re.search(last, lines[i])), None)
        )
        if end is None:
            raise TranscriptError(f"no line matches {last!r} after {first!r}")
        if start > position:
            shown.append(ELISION)
        shown.extend(lines[start : end + 1])
        position = end + 1
    if position < len(lines):
        shown.append(ELISION)
    return shown


def generate(block: Block, scratch: Path) -> list[str]:
    """Run the block's commands and return its new body: each ``$`` line followed by what it printed."""
    commands = block.commands
    if not commands:
        raise TranscriptError(f"{block.where}: transcript {block.name} has no `$ ` command line")
    actions = {int(step): name for step, name in block.options.get("actions", {}).items()}
    during = {int(step): pairs for step, pairs in block.options.get("during", {}).items()}
    body: list[str] = []
    with Session(block, scratch) as session:
        code = 0
        for step, command in enumerate(commands, 1):
            if step in actions:
                session.act(actions[step])
            lines, code = session.run(command, code, during.get(step))
            lines = [session.aliases.to_display(_strip_ansi(line)).rstrip() for line in lines]
            try:
                lines = select(lines, block.options.get("show", []))
            except TranscriptError as error:
                raise TranscriptError(f"{block.where}: `{command}`: {error}") from None
            bad = [line for line in lines if line.startswith("$ ")]
            if bad:
                raise TranscriptError(f"{block.where}: output line {bad[0]!r} would read as a command")
            body.append(f"$ {command}")
            body.extend(lines)
    return body


def _strip_ansi(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)


def normalised(block: Block, lines: list[str]) -> list[str]:
    """Lines as compared: volatile values masked, each run of ``unordered`` lines sorted."""
    result = [masked(line, block.options.get("mask", [])) for line in lines]
    for pattern in block.options.get("unordered", []):
        index = 0
        while index < len(result):
            end = index
            while end < len(result) and re.search(pattern, result[end]):
                end += 1
            result[index:end] = sorted(result[index:end])
            index = max(end, index + 1)
    return result


def first_difference(block: Block, generated: list[str]) -> str | None:
    """None when the page's block matches the program's output, else a message naming the line."""
    page, fresh = normalised(block, block.body), normalised(block, generated)
    if page == fresh:
        return None
    where = f"{shown(block.page)}:{{line}}: transcript {block.name}"
    for offset, (old, new) in enumerate(zip(page, fresh, strict=False)):
        if old != new:
            return (
                where.format(line=block.open_line + 2 + offset) + " differs from the program's output:\n"
                f"  page:    {block.body[offset]}\n  program: {generated[offset]}"
            )
    offset = min(len(page), len(fresh))
    if len(page) > len(fresh):
        return where.format(line=block.open_line + 2 + offset) + (
            f": the program printed nothing more, the page goes on with: {block.body[offset]}"
        )
    return where.format(line=block.open_line + 2 + offset) + (
        f": the page ends, the program goes on with: {generated[offset]}"
    )


def merged(block: Block, generated: list[str]) -> list[str]:
    """The new body for ``--write``: the page's own block when only volatile values differ.

    Whole blocks, never single lines, so a block always shows the values of one real run.
    """
    return block.body if first_difference(block, generated) is None else generated


def excerpt_problems(block: Block) -> list[str]:
    """What is wrong with an excerpt: a record that does not exist, lines it lacks, no label."""
    record = ROOT / block.name
    where = block.where
    if not record.is_file() or not record.is_relative_to(ROOT / "bench" / "results"):
        return [f"{where}: excerpt names {block.name}, which is not a file in bench/results/"]
    problems = []
    lines = block.page.read_text(encoding="utf-8").split("\n")
    above = "\n".join(lines[max(0, block.marker_line - 4) : block.marker_line])
    if record.name not in above:
        problems.append(f"{where}: the text above the excerpt must name its record ({record.name})")
    recorded = record.read_text(encoding="utf-8").split("\n")
    position = 0
    for offset, line in enumerate(block.body):
        if line.strip() == ELISION:
            continue
        try:
            position = recorded.index(line, position) + 1
        except ValueError:
            problems.append(
                f"{shown(block.page)}:{block.open_line + 2 + offset}: excerpt line not in "
                f"{block.name} (in this order): {line}"
            )
            break
    return problems


def rewrite(page: Path, bodies: dict[int, list[str]]) -> bool:
    """Replace the bodies of the blocks (by opening line) of one page; True when the file changed."""
    lines = page.read_text(encoding="utf-8").split("\n")
    for block in sorted(parse_page(page), key=lambda b: -b.open_line):
        if block.open_line in bodies:
            lines[block.open_line + 1 : block.close_line] = bodies[block.open_line]
    text = "\n".join(lines)
    if text == page.read_text(encoding="utf-8"):
        return False
    page.write_text(text, encoding="utf-8")
    return True


def print_run(commands: list[str]) -> int:
    """A transcript of ad-hoc commands (no fixture), e.g. ones that need the network, for a record."""
    page = ROOT / "README.md"
    block = Block(
        page, "transcript", "run", {"timeout": 600, "network": True}, 0, 0, 0, [f"$ {c}" for c in commands]
    )
    with tempfile.TemporaryDirectory(prefix="zr4-doc-transcripts-") as scratch:
        for line in generate(block, Path(scratch)):
            print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the blocks that differ")
    parser.add_argument("--only", action="append", default=[], help="transcript id (repeatable)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="with --write: rewrite every block, also where only volatile values differ",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="COMMAND",
        help="print the transcript of these commands (repeatable) run the same way, for a record in bench/results/",
    )
    args = parser.parse_args(argv)
    if args.run:
        return print_run(args.run)
    blocks = all_blocks()
    chosen = [b for b in blocks if b.kind == "transcript" and (not args.only or b.name in args.only)]
    unknown = set(args.only) - {b.name for b in chosen}
    if unknown:
        print(f"error: no transcript {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    failures = 0
    for problem in (p for b in blocks if b.kind == "excerpt" for p in excerpt_problems(b)):
        print(problem)
        failures += 1
    with tempfile.TemporaryDirectory(prefix="zr4-doc-transcripts-") as scratch:
        for page in sorted({b.page for b in chosen}):
            bodies: dict[int, list[str]] = {}
            for block in (b for b in chosen if b.page == page):
                missing = missing_requirements(block)
                if missing:
                    print(f"skip {block.name} ({block.where}): needs {', '.join(missing)}")
                    continue
                started = time.monotonic()
                try:
                    generated = generate(block, Path(scratch))
                except TranscriptError as error:
                    print(f"error: {error}")
                    failures += 1
                    continue
                difference = first_difference(block, generated)
                took = time.monotonic() - started
                if args.write and args.fresh and generated != block.body:
                    bodies[block.open_line] = generated
                    print(f"new  {block.name} ({block.where}, {took:.1f} s)")
                elif difference is None:
                    print(f"ok   {block.name} ({block.where}, {took:.1f} s)")
                elif args.write:
                    bodies[block.open_line] = merged(block, generated)
                    print(f"new  {block.name} ({block.where}, {took:.1f} s)")
                else:
                    print(difference)
                    failures += 1
            if bodies and rewrite(page, bodies):
                print(f"wrote {shown(page)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]
    sys.exit(main())
