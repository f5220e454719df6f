"""One ComfyUI per visible GPU, and the serverless worker beside them: step 5 of `zr4 start`.

ComfyUI runs a prompt on one device, so a machine with N GPUs serves N jobs at once only with N
ComfyUI processes. With more than one GPU, instance *i* gets ``CUDA_VISIBLE_DEVICES`` = the *i*-th
visible GPU, port ``COMFYUI_PORT + i`` (8188, 8189, …) and its own temp folder and database (both
are per-process state in ComfyUI v0.7.0: ``--temp-directory`` is emptied at start, the SQLite file
of ``--database-url`` is migrated at start); the models folder, ``extra_model_paths.yaml``, the
output folder and the installed workflow are shared. ``ZR4_COMFYUI_PER_GPU=false`` keeps one
ComfyUI that sees every GPU.

``ZR4_MODE=serverless`` listens on 127.0.0.1 only (no UI exposed) and runs the RunPod worker
(``python -m zr4.image.serverless``) as a supervised child, told the instance URLs in
``ZR4_COMFYUI_URLS``. `zr4 dance` and the worker spread jobs over the URLs (least busy first).
A `zr4 dance` typed in the container's terminal finds them in :data:`URLS_FILE`, written while the
instances run and removed when they end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zr4.core import image_layout
from zr4.core.comfy_launch import LaunchPlan
from zr4.core.env import EnvError, env_bool, env_str

Log = Callable[[str], None]
MODES = ("pod", "serverless")
WORKER_STOP_TIMEOUT_S = 30.0
STATE_ROOT = Path(image_layout.INSTANCES_STATE_DIR)
URLS_FILE = Path(image_layout.INSTANCE_URLS_FILE)


@dataclass(frozen=True)
class Instance:
    index: int
    port: int
    cuda_visible_devices: str | None  # None: leave the variable as it is (one instance)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def run_mode(environ: Mapping[str, str]) -> str:
    """``ZR4_MODE``: ``pod`` (default: the UI on 0.0.0.0) or ``serverless``."""
    mode = (env_str("ZR4_MODE", "pod", environ) or "pod").lower()
    if mode not in MODES:
        raise EnvError(f"ZR4_MODE={mode!r} is not one of: {', '.join(MODES)}")
    return mode


def serverless(environ: Mapping[str, str]) -> bool:
    """``ZR4_MODE=serverless``: ComfyUI stays on loopback (no UI exposed, no auth proxy) and the
    RunPod worker runs beside it."""
    return run_mode(environ) == "serverless"


def plan_instances(gpu_indices: Sequence[int], base_port: int, environ: Mapping[str, str]) -> list[Instance]:
    """The ComfyUI processes for these GPUs (pure).

    ``gpu_indices`` are the detected GPUs (NVML order, which is the order of
    ``CUDA_VISIBLE_DEVICES`` when that is set: NVML ignores it, so the visible list is mapped here).
    """
    visible = env_str("CUDA_VISIBLE_DEVICES", None, environ)
    devices = (
        [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in gpu_indices]
    )
    devices = devices[: len(gpu_indices)] if gpu_indices else []
    if len(devices) <= 1 or not env_bool("ZR4_COMFYUI_PER_GPU", True, environ):
        return [Instance(0, base_port, None)]
    if base_port + len(devices) - 1 > 65535:
        raise EnvError(f"COMFYUI_PORT={base_port} leaves no room for {len(devices)} ComfyUI ports")
    return [Instance(i, base_port + i, device) for i, device in enumerate(devices)]


def instance_argv(
    plan: LaunchPlan, listen: str, port: int, instance: Instance, state_root: Path, count: int
) -> tuple[str, ...]:
    """The argv of one instance: its address, and with several instances its own temp folder and database."""
    argv = list(plan.argv)
    for flag, value in (("--listen", listen), ("--port", str(port))):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    if count > 1:
        own = state_root / f"comfyui-{instance.index}"
        own.mkdir(parents=True, exist_ok=True)
        argv += ["--temp-directory", str(own), "--database-url", f"sqlite:///{own / 'comfyui.db'}"]
    return tuple(argv)


def instance_env(environ: Mapping[str, str], instance: Instance) -> dict[str, str]:
    """One ComfyUI's environment: its GPU, and not the proxy's token (custom nodes run in there)."""
    from zr4.core.auth_settings import without_token

    env = without_token(environ)
    if instance.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = instance.cuda_visible_devices
    return env


class InstanceGroup:
    """The ComfyUI processes (and the worker) as one: signals go to each ComfyUI; :meth:`wait` returns
    when one ComfyUI ends (the others are stopped, so the container restarts as a whole)."""

    def __init__(
        self,
        processes: list[subprocess.Popen[bytes]],
        worker: object | None,
        log: Log,
        urls_file: Path | None = None,
    ) -> None:
        self.processes = processes
        self.worker = worker
        self._log = log
        self._urls_file = urls_file

    @property
    def pid(self) -> int:
        return self.processes[0].pid

    def poll(self) -> int | None:
        codes = [p.poll() for p in self.processes]
        return next((code for code in codes if code is not None), None)

    def send_signal(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def wait(self) -> int:
        while True:
            for index, process in enumerate(self.processes):
                code = process.poll()
                if code is not None:
                    self._stop_rest(index)
                    if self._urls_file is not None:
                        self._urls_file.unlink(missing_ok=True)
                    return code
            time.sleep(0.2)

    def _stop_rest(self, ended: int) -> None:
        others = [p for i, p in enumerate(self.processes) if i != ended and p.poll() is None]
        if others:
            self._log(f"ComfyUI {ended} ended; stopping the other {len(others)}")
        for process in others:
            process.send_signal(signal.SIGTERM)
        for process in others:
            try:
                process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.worker is not None:
            self.worker.stop(WORKER_STOP_TIMEOUT_S)  # type: ignore[attr-defined]


def launch_instances(
    plan: LaunchPlan,
    environ: Mapping[str, str],
    instances: Sequence[Instance],
    address: Callable[[int], tuple[str, int]],
    log: Log,
    state_root: Path | None = None,
) -> InstanceGroup:
    """Start each ComfyUI (``address(public port) -> (listen, port)``: behind the auth proxy ComfyUI
    takes a loopback backend port), then the serverless worker when ``ZR4_MODE=serverless``."""
    root = state_root or STATE_ROOT
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for instance in instances:
            listen, port = address(instance.port)
            argv = instance_argv(plan, listen, port, instance, root, len(instances))
            if len(instances) > 1:
                log(
                    f"ComfyUI {instance.index} on GPU {instance.cuda_visible_devices}, port {instance.port}"
                    + (f" (ComfyUI itself on {listen}:{port})" if port != instance.port else "")
                )
            processes.append(
                subprocess.Popen(list(argv), cwd=str(plan.cwd), env=instance_env(environ, instance))
            )
    except OSError:
        for process in processes:
            process.kill()
        raise
    urls_file = root / URLS_FILE.name
    if len(instances) > 1:
        from zr4.core.atomic import write_text_atomically

        write_text_atomically(urls_file, ",".join(instance.url for instance in instances) + "\n")
    worker = None
    if serverless(environ):
        from zr4.image.supervise import Supervisor

        urls = ",".join(instance.url for instance in instances)
        worker_env = {**environ, "ZR4_COMFYUI_URLS": urls}
        worker = Supervisor(
            "serverless-worker", [sys.executable, "-m", "zr4.image.serverless"], worker_env, log
        )
        worker.start()
        log(f"serverless worker started for {urls}")
    return InstanceGroup(processes, worker, log, urls_file if len(instances) > 1 else None)
