"""`zr4 start`: what the container's start.sh execs. Five steps, each logged with its duration.

1. detect the GPUs and plan VRAM (the `zr4 tune` logic) and decide ComfyUI's flags: the plan's,
   merged with ``COMFYUI_ARGS`` and the command line's, checked against ComfyUI's environment;
   print the plan's summary. Then authentication is settled and the auth proxy takes the public
   port: from here it answers, behind its login, with the boot's status page;
2. plan the models of the current settings and fetch the missing ones on a thread of their own,
   in the order a job first uses them (:mod:`zr4.image.boot_models`); the start waits only for
   the plan (``SKIP_MODEL_DOWNLOAD=true`` skips). A failure is reported with its fix (the status
   page, `zr4 health`, the log) and does not stop the start;
3. write ComfyUI's ``extra_model_paths.yaml`` when ``MODELS_DIR`` is outside ComfyUI's models
   folder, and the SteadyDancer workflow for this boot's files into ComfyUI's workflow browser;
4. with ``ENABLE_R2_SYNC=true``, run ``zr4 sync run`` as a supervised child (restarted if it dies);
5. run ComfyUI with the flags of step 1 while the models arrive, forwarding SIGTERM/SIGINT/SIGHUP;
   when it exits, stop the download (the next start resumes it), the proxy and the daemon, run the
   final ``zr4 sync once``, and exit with ComfyUI's code.

The boot's status file (:mod:`zr4.core.boot_status`, written by :mod:`zr4.image.boot_report`) says
all along what the boot is doing; the status page turns into ComfyUI once ComfyUI answers and the
models are in place. Before anything is written (the token, models, outputs, ComfyUI's files), the
start checks that ComfyUI and its interpreter are there: without them it would fail at step 5 only
after writing.

With the models present, steps 1-4 do no network I/O and read no model bytes (the model
manager's journal answers with ``stat`` calls), which keeps them well under a second.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zr4.core import image_layout
from zr4.core.baked_profile import baked_profile_path, read_baked_profile
from zr4.core.env import EnvError, env_bool, env_str
from zr4.errors import Zr4Error

if TYPE_CHECKING:
    from zr4.image.boot_models import ModelDownload, ModelsOutcome
    from zr4.image.boot_report import BootReport

Log = Callable[[str], None]

# Paths of the image (the Dockerfile's ENV); a developer machine sets these variables itself.
DEFAULT_COMFYUI_DIR = image_layout.COMFYUI_DIR
DEFAULT_COMFYUI_PYTHON = image_layout.COMFYUI_PYTHON
DEFAULT_OUTPUT_DIR = image_layout.OUTPUT_DIR
DEFAULT_MODELS_DIR = image_layout.MODELS_DIR
SYNC_STOP_TIMEOUT_S = image_layout.SYNC_STOP_TIMEOUT_S
FINAL_SYNC_TIMEOUT_S = image_layout.FINAL_SYNC_TIMEOUT_S


class StartError(Zr4Error):
    """A step of the start sequence failed; the message names the step and the reason."""


@dataclass(frozen=True)
class StartConfig:
    """The start sequence's own settings (the model manager and sync read theirs from the env)."""

    comfyui_dir: Path
    comfyui_python: str
    output_dir: Path
    models_dir: Path
    profile_path: Path
    manifest_path: Path | None
    port: int
    skip_model_download: bool
    enable_r2_sync: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StartConfig:
        from zr4.image.health import comfyui_port

        try:
            manifest = env_str("ZR4_MODEL_MANIFEST", None, env)
            return cls(
                comfyui_dir=Path(env_str("COMFYUI_DIR", DEFAULT_COMFYUI_DIR, env) or DEFAULT_COMFYUI_DIR),
                comfyui_python=env_str("COMFYUI_PYTHON", DEFAULT_COMFYUI_PYTHON, env)
                or DEFAULT_COMFYUI_PYTHON,
                output_dir=Path(env_str("OUTPUT_DIR", DEFAULT_OUTPUT_DIR, env) or DEFAULT_OUTPUT_DIR),
                models_dir=Path(env_str("MODELS_DIR", DEFAULT_MODELS_DIR, env) or DEFAULT_MODELS_DIR),
                profile_path=baked_profile_path(env),
                manifest_path=Path(manifest) if manifest else None,
                port=comfyui_port(env),
                skip_model_download=env_bool("SKIP_MODEL_DOWNLOAD", False, env),
                enable_r2_sync=env_bool("ENABLE_R2_SYNC", False, env),
            )
        except EnvError as error:
            raise StartError(f"zr4 start: {error}") from None


@dataclass(frozen=True)
class BootPlan:
    """What step 1 hands on: ComfyUI flags, the block swap for the workflow, lines to print, and the
    variables (variant, GGUF level, memory mode ...) the later steps read."""

    flags: tuple[str, ...]
    block_swap: int
    summary: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    gpu_indices: tuple[int, ...] = ()  # the detected GPUs: one ComfyUI each (zr4.image.instances)


@dataclass
class StartReport:
    """Durations of the steps (seconds), for the log and the tests."""

    steps: dict[str, float] = field(default_factory=dict)
    ready_s: float = 0.0  # process start -> ComfyUI spawned
    comfyui_exit: int | None = None
    sync_restarts: int = 0


def _say(message: str) -> None:
    print(f"[zr4 start] {message}", flush=True)


def process_age_s() -> float:
    """Seconds since this process started (from /proc), or 0 where that is not readable."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(stat[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def _step(report: StartReport, number: int, title: str, log: Log) -> Iterator[None]:
    started = time.perf_counter()
    log(f"step {number}/5 {title} ...")
    try:
        yield
    except Zr4Error as error:
        elapsed = time.perf_counter() - started
        raise StartError(
            f"zr4 start stopped at step {number} ({title}) after {elapsed:.2f} s: {error}"
        ) from error
    except PermissionError as error:
        # The image runs as a non-root user; a volume mounted root-owned is the usual cause.
        raise StartError(
            f"zr4 start stopped at step {number} ({title}): cannot write {error.filename}: permission denied. "
            f"Make the volume writable by uid {os.getuid()} (e.g. `chown -R {os.getuid()} /workspace` once) "
            "or run the container as root"
        ) from error
    elapsed = time.perf_counter() - started
    report.steps[title] = elapsed
    log(f"step {number}/5 {title}: done in {elapsed:.2f} s")


def load_profile_json(path: Path):  # type: ignore[no-untyped-def]  # -> Profile (pydantic import kept local)
    """The baked profile as a validated ``Profile`` (for `zr4 doctor`; the start reads plain JSON)."""
    from zr4.profile.models import Profile

    data = read_baked_profile(path, StartError, f"the baked profile {path} (ZR4_PROFILE)")
    try:
        return Profile.model_validate(data)
    except ValueError as error:
        raise StartError(f"the baked profile {path} is not a valid profile: {error}") from None


def read_profile_data(path: Path) -> dict[str, Any]:
    """The baked resolved profile as JSON data. It was validated when the image was built; reading
    it without Pydantic keeps a warm start fast (Pydantic's import alone is ~0.1-0.2 s)."""
    data = read_baked_profile(path, StartError, f"the baked profile {path} (ZR4_PROFILE)")
    try:
        data["name"], data["comfyui"]["version"], data["workload"]["width"], data["features"]["attention"]
    except (TypeError, KeyError) as error:
        raise StartError(
            f"the baked profile {path} lacks {error}: rebuild the image with `zr4 build`"
        ) from None
    return dict(data)


def check_comfyui(config: StartConfig, env: Mapping[str, str]) -> None:
    """ComfyUI's ``main.py`` and an interpreter to run it exist (as step 5 will look the interpreter up)."""
    main = config.comfyui_dir / "main.py"
    if not main.is_file():
        raise StartError(f"zr4 start: no ComfyUI in {config.comfyui_dir}: {main} is missing (COMFYUI_DIR)")
    search = os.pathsep.join(os.get_exec_path(dict(env)))
    if shutil.which(config.comfyui_python, path=search) is None:
        raise StartError(
            f"zr4 start: cannot run {config.comfyui_python} (COMFYUI_PYTHON): no such executable file"
        )


# --- step 1 ------------------------------------------------------------------------------------


def plan_boot(env: Mapping[str, str], profile: Mapping[str, Any]) -> BootPlan:
    """Detect the GPUs and plan VRAM with the `zr4 tune` logic. The plan's flags are final (COMFYUI_ARGS
    merged in, what ComfyUI's environment cannot honour left out), so the summary shows what runs."""
    from zr4.core.comfy_flags import FlagEnvironment
    from zr4.core.gpu import detect
    from zr4.core.tune import tune

    config = StartConfig.from_env(env)
    comfyui = FlagEnvironment.for_python(config.comfyui_python, config.comfyui_dir)
    result = tune(profile, env, detect(env), comfyui)
    plan = result.plan
    gpu = result.detection.primary
    level = f" {plan.gguf_level}" if plan.gguf_level else ""
    lines = [
        f"GPU: {gpu.name}, {gpu.total_mib:,} MiB, compute capability {gpu.compute_capability or '?'} "
        f"({result.detection.source}, {result.detection.gpu_count} GPU(s))"
        if gpu is not None
        else f"GPU: none found ({result.detection.source}); ComfyUI runs on the CPU",
        f"plan: {plan.variant}{level}, memory mode {plan.memory_mode}, block swap {plan.block_swap}, "
        f"attention {plan.attention}, peak {plan.peak_mib:,} of {plan.usable_mib:,} MiB ({plan.peak_phase}), tier {plan.tier}",
        f"ComfyUI flags: {' '.join(plan.comfyui_args) or '(none)'}",
    ]
    lines += [f"WARNING: {w}" for w in (*result.detection.warnings, *result.warnings, *plan.warnings)]
    if plan.error:
        lines.append(f"WARNING: the plan does not fit: {plan.error}")
    gpus = tuple(g.index for g in result.detection.gpus)
    return BootPlan(tuple(plan.comfyui_args), plan.block_swap, tuple(lines), result.env(), gpus)


# --- step 2 ------------------------------------------------------------------------------------


def models_step(
    env: Mapping[str, str], config: StartConfig, boot: BootReport, log: Log, interrupted: Callable[[], bool]
) -> tuple[ModelsOutcome, ModelDownload | None]:
    """Plan the boot's models and start fetching them in the background (zr4.image.boot_models).

    Returns the files once planned, and the running download (None when nothing is fetched). A
    failure goes to the status page and the log; it does not stop the start.
    """
    from zr4.image.boot_models import ModelDownload, ModelsOutcome, models_without_download

    try:
        settled = models_without_download(
            env, config.models_dir, config.manifest_path, boot, skip=config.skip_model_download
        )
    except Zr4Error as error:
        reason, fix = boot.models_failed(error)
        return ModelsOutcome("", [], [f"ERROR: models: {reason}", f"ERROR: models: fix: {fix}"]), None
    if settled is not None:
        return settled, None
    download = ModelDownload(env, config.models_dir, config.manifest_path, boot, log)
    download.start()
    return download.wait_for_plan(interrupted), download


# --- step 3 ------------------------------------------------------------------------------------


def files_step(
    config: StartConfig,
    profile: Mapping[str, Any],
    models: ModelsOutcome,
    block_swap: int,
    log: Log,
    plan_env: Mapping[str, str] | None = None,
) -> None:
    from zr4.image.extra_paths import sync_extra_model_paths
    from zr4.image.models import load_manifest, model_folders

    folders = model_folders(load_manifest(config.manifest_path))
    log(sync_extra_model_paths(config.comfyui_dir, config.models_dir, folders))
    if not models.targets:
        log("workflow: no model files resolved, the image's default workflow stays")
        return
    from zr4.core.workflow.install import PlannedSettings, install_workflow, workflow_spec_for_boot

    try:
        planned = PlannedSettings.from_plan_env(plan_env or {})
        spec = workflow_spec_for_boot(profile, models.targets, models.variant, block_swap, planned)
        path = install_workflow(config.comfyui_dir, spec)
    except (Zr4Error, ValueError, OSError) as error:  # a convenience: ComfyUI runs without it
        log(f"WARNING: workflow not written: {error}")
        return
    log(
        f"workflow {path} ({spec.variant}, {spec.diffusion_model_file}, block swap {block_swap}, "
        f"text encoder on {spec.text_encoder_device}, pose on {spec.onnx_device}, "
        f"VAE tiling {'on' if spec.vae_tiling else 'off'})"
    )


# --- step 4 ------------------------------------------------------------------------------------


def sync_env(env: Mapping[str, str], config: StartConfig) -> dict[str, str]:
    """The daemon's environment: it watches ComfyUI's output folder unless told otherwise; it never
    calls ComfyUI, so it does not get the proxy's token."""
    from zr4.core.auth_settings import without_token

    child = without_token(env)
    child.setdefault("R2_SYNC_OUTPUT_DIR", str(config.output_dir))
    return child


def zr4_command(*args: str) -> list[str]:
    """Run a zr4 subcommand with this interpreter (the image's /opt/zr4 venv)."""
    return [sys.executable, "-m", "zr4.cli.main", *args]


def sync_step(env: Mapping[str, str], config: StartConfig, log: Log):  # type: ignore[no-untyped-def]
    if not config.enable_r2_sync:
        log("R2 sync off (ENABLE_R2_SYNC is not true)")
        return None
    from zr4.image.supervise import Supervisor
    from zr4.image.sync.settings import settings_from_env as sync_settings

    child_env = sync_env(env, config)
    try:
        settings = sync_settings(child_env)
    except EnvError as error:
        # Outputs stay on the volume; `zr4 health` reports the sync as down.
        log(f"WARNING: R2 sync enabled but not started: {error}")
        return None
    supervisor = Supervisor("r2-sync", zr4_command("sync", "run"), child_env, log)
    supervisor.start()
    log(
        f"R2 sync daemon started: {settings.output_dir} -> bucket {settings.bucket!r} at {settings.endpoint_url}"
    )
    return supervisor


# --- step 5 and the end ------------------------------------------------------------------------


def final_sync(env: Mapping[str, str], config: StartConfig, log: Log) -> None:
    started = time.perf_counter()
    try:
        result = subprocess.run(
            zr4_command("sync", "once", "--wait", "10"),
            env=sync_env(env, config),
            timeout=FINAL_SYNC_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"final sync pass did not finish in {FINAL_SYNC_TIMEOUT_S:.0f} s; the next start resumes it")
        return
    state = "done" if result.returncode == 0 else f"ended with code {result.returncode}"
    log(f"final sync pass {state} in {time.perf_counter() - started:.1f} s")


def open_boot_report(env: dict[str, str]) -> BootReport:
    """The boot's status file, written from now on; its path goes to the children in ``env``."""
    from zr4.core import boot_status
    from zr4.image.boot_report import BootReport

    path = boot_status.status_path(env)
    env[boot_status.VARIABLE] = str(path)
    boot = BootReport(path, process_started=time.time() - process_age_s())
    boot.start()
    return boot


def run_start(
    environ: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    log: Log = _say,
    planner: Callable[[Mapping[str, str], Mapping[str, Any]], BootPlan] = plan_boot,
) -> int:
    """The whole start sequence; returns ComfyUI's exit code (128+N when a signal N ended it)."""
    from zr4.core.comfy_flags import tokenize

    env = dict(os.environ if environ is None else environ)
    if extra_args:  # decided in step 1 with the variable's, as the user's flags
        env["COMFYUI_ARGS"] = shlex.join([*tokenize(env.get("COMFYUI_ARGS")), *extra_args])
    config = StartConfig.from_env(env)
    profile = read_profile_data(config.profile_path)
    check_comfyui(config, env)  # before anything is written
    log(f"profile {profile['name']}, ComfyUI {profile['comfyui']['version']} in {config.comfyui_dir}")
    boot = open_boot_report(env)
    try:
        return _boot(env, config, profile, boot, log, planner)
    finally:
        boot.close()


def _boot(
    env: dict[str, str],
    config: StartConfig,
    profile: Mapping[str, Any],
    boot: BootReport,
    log: Log,
    planner: Callable[[Mapping[str, str], Mapping[str, Any]], BootPlan],
) -> int:
    from zr4.core.comfy_launch import ForwardingSignals, comfyui_command, exit_code_of
    from zr4.image.auth.front import plan_front
    from zr4.image.auth.pages import LOGIN_PATH
    from zr4.image.instances import launch_instances, plan_instances, serverless
    from zr4.image.readiness import Probe, ReadinessWatch

    report = StartReport()
    with _step(report, 1, "detect GPU + plan VRAM", log):
        plan = planner(env, profile)
        for line in plan.summary:
            log(f"  {line}")
        try:  # one ComfyUI per GPU, each on its own public port (the proxy fronts them all)
            instances = plan_instances(plan.gpu_indices, config.port, env)
            private = serverless(env)
        except EnvError as error:
            raise StartError(f"zr4 start: {error}") from None
    # A serverless worker keeps ComfyUI on loopback and talks to it directly: no proxy, no public port.
    front = None if private else plan_front(env, [instance.port for instance in instances], log)
    # The planned variant, GGUF level and memory mode are what the model manager fetches.
    env.update(plan.env)
    boot.set_ports([instance.port for instance in instances])

    def address(public_port: int) -> tuple[str, int]:
        return ("127.0.0.1", public_port) if front is None else front.comfyui_address(public_port)

    process: Any = None  # the ComfyUI processes (one per GPU) as one InstanceGroup
    forward = ForwardingSignals(
        lambda: process, on_signal=lambda n: log(f"signal {n}: passing it to ComfyUI")
    )
    watch = ReadinessWatch([], log, process_age_s)
    download = supervisor = None
    try:
        with forward:
            if front is not None and front.enabled:
                # From here the public port answers, behind the login: the status page until ComfyUI is ready.
                front.start(env, log)
                port = instances[0].port
                watch.add(
                    [
                        Probe(
                            f"the status page on port {port}",
                            f"http://127.0.0.1:{port}{LOGIN_PATH}",
                            boot.proxy_answers,
                        )
                    ]
                )
            elif front is not None:
                log(
                    "no status page with ZR4_AUTH=off: the port answers once ComfyUI does; `zr4 health --json` shows the download"
                )
            watch.start()
            with _step(report, 2, "models", log):
                models, download = models_step(env, config, boot, log, lambda: bool(forward.received))
                for line in models.lines:
                    log(f"  {line}")
            if not forward.received:
                with _step(report, 3, "ComfyUI model paths + workflow", log):
                    config.output_dir.mkdir(parents=True, exist_ok=True)
                    files_step(config, profile, models, plan.block_swap, log, plan.env)
            if not forward.received:
                with _step(report, 4, "R2 sync", log):
                    supervisor = sync_step(env, config, log)
            if forward.received:  # stopped before ComfyUI was started
                signum = forward.received[-1]
                log(f"signal {signum} before ComfyUI started: not starting it")
                code = 128 + signum
            else:
                listen, port = address(config.port)
                launch_plan = comfyui_command(
                    python=config.comfyui_python,
                    comfyui_dir=config.comfyui_dir,
                    output_dir=config.output_dir,
                    flags=plan.flags,
                    listen=listen,
                    port=port,
                )
                report.ready_s = process_age_s()
                log(f"step 5/5 ComfyUI: {launch_plan.describe()}")
                log(f"ready to launch {report.ready_s:.2f} s after the process started")
                try:
                    process = launch_instances(launch_plan, env, instances, address, log)
                except OSError as error:
                    raise StartError(
                        f"zr4 start stopped at step 5 (ComfyUI): cannot run {config.comfyui_python}: {error.strerror}"
                    ) from None
                boot.comfyui_launched()
                watch.add([_comfyui_probe(instance.port, address, boot) for instance in instances])
                if forward.received:  # a signal that came while ComfyUI was being spawned
                    process.send_signal(forward.received[-1])
                code = exit_code_of(process.wait())
    finally:
        watch.stop()
        if download is not None and not download.stop():
            log("models: the download is still stopping; the next start resumes it")
        if front is not None:
            front.stop()
        if supervisor is not None:
            report.sync_restarts = supervisor.restarts
            supervisor.stop(SYNC_STOP_TIMEOUT_S)
    report.comfyui_exit = code
    boot.comfyui_exited(code)
    log(f"ComfyUI exited with code {code}")
    if supervisor is not None:
        final_sync(env, config, log)
    return code


def _comfyui_probe(public_port: int, address: Callable[[int], tuple[str, int]], boot: BootReport) -> Any:
    from zr4.image.readiness import Probe

    listen, port = address(public_port)
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
    return Probe(
        f"ComfyUI on {host}:{port}",
        f"http://{host}:{port}/system_stats",
        lambda: boot.comfyui_answers(public_port),
    )


def exit_now(code: int) -> int:
    """``code``, after making sure no model download holds the exit: its threads (``zr4-dl_*``, the
    model manager's) are not daemons, and one stuck in a socket read (up to its stall timeout) would
    keep the container from stopping. Everything else of the start is done by now, and a partial
    download is kill-safe (its span log), so the process may end at once."""
    import threading

    if any(thread.name.startswith("zr4-dl") and thread.is_alive() for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zr4.image.start [COMFYUI FLAGS]``: the same as ``zr4 start``, without Typer."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    try:
        return exit_now(run_start(extra_args=list(sys.argv[1:] if argv is None else argv)))
    except Zr4Error as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
