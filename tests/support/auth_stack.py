"""A ComfyUI (the stand-in, or the real one) behind zr4's auth proxy, each in its own process.

``ComfyBehindProxy`` starts ComfyUI on a loopback port and ``python -m zr4.image.auth.proxy`` on a
public one, waits for both, and stops both (SIGTERM, then SIGKILL) on exit. ``AuthProxy`` starts only
the proxy, in front of a backend someone else runs. Both keep the proxy's state folder
(``ZR4_AUTH_DIR``: revoked sessions) under the test's own folder.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from support.s3_server import free_port

SUPPORT = Path(__file__).resolve().parent
TOKEN = "test-token-0123456789abcdef"


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    """Until ``url`` answers any HTTP status (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not answer {url} within {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fake_comfyui_command(root: Path, port: int) -> tuple[list[str], Path]:
    """The stand-in ComfyUI as ``<root>/ComfyUI/main.py`` (it loads custom_nodes next to itself)."""
    comfy = root / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True, exist_ok=True)
    shutil.copy(SUPPORT / "fake_comfyui.py", comfy / "main.py")
    output = root / "output"
    argv = [sys.executable, str(comfy / "main.py"), "--listen", "127.0.0.1", "--port", str(port)]
    return [*argv, "--output-directory", str(output)], output


def open_file_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers the child's open-file limit (soft and hard) to ``limit``."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


class AuthProxy:
    """Only the proxy, in front of a ComfyUI someone else runs on 127.0.0.1:``backend_port``.

    ``extra_env`` adds to (or, with ``None`` values, removes from) the proxy's environment;
    ``open_files`` lowers its open-file limit; ``public_port`` reuses a port (a restart).
    """

    def __init__(
        self,
        root: Path,
        backend_port: int,
        token: str = TOKEN,
        listen: str = "127.0.0.1",
        *,
        extra_env: Mapping[str, str | None] | None = None,
        open_files: int | None = None,
        public_port: int | None = None,
    ) -> None:
        self.root = root
        self.token = token
        self.public_port = public_port or free_port()
        self.backend_port = backend_port
        self.open_files = open_files
        self.env = {
            **os.environ,
            "ZR4_AUTH_TOKEN": token,
            "ZR4_AUTH_DIR": str(root / "auth"),
            "ZR4_PROXY_ROUTES": f"{self.public_port}={backend_port}",
            "ZR4_PROXY_LISTEN": listen,
        }
        self.env.pop("RUNPOD_POD_ID", None)
        self.env.pop("ZR4_AUTH_TRUST_FORWARDED", None)
        for name, value in (extra_env or {}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.log_path = root / "proxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.public_port

    def __enter__(self) -> AuthProxy:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zr4.image.auth.proxy"],
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=None if self.open_files is None else open_file_limit(self.open_files),
        )
        try:
            wait_http(self.url + "/zr4/login", self.process, 20, "the auth proxy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class ComfyBehindProxy:
    def __init__(
        self,
        root: Path,
        comfyui_argv: Sequence[str] | None = None,
        *,
        backend_port: int | None = None,
        token: str = TOKEN,
        listen: str = "0.0.0.0",
        extra_env: dict[str, str] | None = None,
        comfyui_cwd: Path | None = None,
        comfyui_timeout_s: float = 60,
    ) -> None:
        self.root = root
        self.token = token
        self.public_port = free_port()
        self.backend_port = backend_port or free_port()
        if comfyui_argv is None:
            comfyui_argv, self.output_dir = fake_comfyui_command(root, self.backend_port)
        else:
            self.output_dir = root / "output"
        self.comfyui_argv = list(comfyui_argv)
        self.comfyui_cwd = comfyui_cwd
        self.comfyui_timeout_s = comfyui_timeout_s
        self.listen = listen
        self.env = {
            **os.environ,
            "ZR4_AUTH_TOKEN": token,
            "ZR4_AUTH_DIR": str(root / "auth"),
            "ZR4_PROXY_ROUTES": f"{self.public_port}={self.backend_port}",
            "ZR4_PROXY_LISTEN": listen,
            "FAKE_COMFYUI_INPUT": str(root / "input"),
            "FAKE_COMFYUI_REQUEST_LOG": str(root / "comfyui-requests.jsonl"),
        }
        self.env.pop("RUNPOD_POD_ID", None)
        self.env.pop("ZR4_AUTH_TRUST_FORWARDED", None)
        self.env.update(extra_env or {})
        self.comfyui: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_log = root / "proxy.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    def __enter__(self) -> ComfyBehindProxy:
        self.root.mkdir(parents=True, exist_ok=True)
        self.comfyui = subprocess.Popen(
            self.comfyui_argv,
            env=self.env,
            cwd=self.comfyui_cwd,
            stdout=(self.root / "comfyui.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "zr4.image.auth.proxy"],
            env=self.env,
            stdout=self.proxy_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(self.backend_url + "/system_stats", self.comfyui, self.comfyui_timeout_s, "ComfyUI")
            wait_http(self.url + "/zr4/login", self.proxy, 20, "the auth proxy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in (self.proxy, self.comfyui):
            if process is not None:
                stop_process(process)

    def proxy_output(self) -> str:
        return self.proxy_log.read_text(errors="replace")

    def comfyui_requests(self) -> list[dict[str, str]]:
        """What reached the stand-in ComfyUI: ``{"method", "target", "origin"}`` per request."""
        path = Path(self.env["FAKE_COMFYUI_REQUEST_LOG"])
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
