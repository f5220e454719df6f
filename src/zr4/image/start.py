"""`zr4 start`: what the container's start.sh execs. Five steps, each logged with its duration.

1. detect the GPUs and plan VRAM (the `zr4 tune` logic) and decide ComfyUI's flags: the plan's,
   merged with ``COMFYUI_ARGS`` and the command line's, checked against ComfyUI's environment;
   print the plan's summary;
2. ensure the models of the current settings (``SKIP_MODEL_DOWNLOAD=true`` skips); a failure stops
   the start with the model manager's reason (its GGUF -> fp8 fallback is the one fallback);
3. write ComfyUI's ``extra_model_paths.yaml`` when ``MODELS_DIR`` is outside ComfyUI's models
   folder, and the SteadyDancer workflow for this boot's files into ComfyUI's workflow browser;
4. with ``ENABLE_R2_SYNC=true``, run ``zr4 sync run`` as a supervised child (restarted if it dies);
5. run ComfyUI with the flags of step 1, forwarding
   SIGTERM/SIGINT/SIGHUP; when it exits, stop the daemon, run the final ``zr4 sync once``, and
   exit with ComfyUI's code.

Before anything is written (the token, models, outputs, ComfyUI's files), the start checks that
ComfyUI and its interpreter are there: without them it would fail at step 5 only after writing.
Authentication (:mod:`zr4.image.auth`, on unless ``ZR4_AUTH=off``) is settled before step 1: the
token is read or created, ComfyUI is given a loopback-only port, and the auth proxy takes the
public port from step 5 until ComfyUI exits.

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
from typing import Any

from zr4.core import image_layout
from zr4.core.baked_profile import baked_profile_path, read_baked_profile
from zr4.core.env import EnvError, env_bool, env_str
from zr4.errors import Zr4Error

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


@dataclass
class ModelsOutcome:
    variant: str
    targets: list[object]  # FileTarget of every resolved file (for the workflow)
    lines: list[str]


def ensure_step(env: Mapping[str, str], config: StartConfig, log: Log) -> ModelsOutcome:
    from zr4.core.sizes import human_bytes
    from zr4.image.models import Progress, ensure_models, load_manifest, settings_from_env

    settings = settings_from_env(env, models_dir=config.models_dir)
    manifest = load_manifest(config.manifest_path)
    if not settings.enable_steadydancer:
        return ModelsOutcome(settings.variant, [], ["ENABLE_STEADYDANCER=false: no models needed"])
    if config.skip_model_download:
        targets, variant = local_targets(settings, manifest)
        return ModelsOutcome(variant, targets, ["SKIP_MODEL_DOWNLOAD=true: not checked or downloaded"])
    result = ensure_models(settings, manifest=manifest, progress=Progress(log_interval_s=10.0), log=log)
    plan = result.plan
    lines = [f"{len(plan.files)} files verified in {plan.models_root} ({plan.variant})"]
    if result.fetched:
        lines.append(f"fetched {len(result.fetched)} file(s), {human_bytes(result.fetched_bytes)}")
    lines += [f"WARNING: {warning}" for warning in result.warnings]
    return ModelsOutcome(plan.variant, [planned.target for planned in plan.files], lines)


def local_targets(settings, manifest):  # type: ignore[no-untyped-def]
    """The files of this boot as found on disk, without the network (for SKIP_MODEL_DOWNLOAD)."""
    from zr4.core.model_files.selection import (
        normalize_gguf_level,
        pick_gguf_file,
        select_entries,
        target_for,
    )

    targets = []
    for entry in select_entries(manifest, settings):
        if entry.pick == "gguf_level":
            level = normalize_gguf_level(settings.gguf_level, manifest)
            folder = settings.models_dir / entry.folder
            listing = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
            chosen = pick_gguf_file(listing, level, entry.avoid)
            if chosen is not None:
                targets.append(target_for(entry, path=chosen, level=level))
        else:
            targets.append(target_for(entry))
    return targets, settings.variant


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
        spec = workflow_spec_for_boot(profile, models.targets, models.variant, block_swap, planned)  # type: ignore[arg-type]
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


def run_start(
    environ: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    log: Log = _say,
    planner: Callable[[Mapping[str, str], Mapping[str, Any]], BootPlan] = plan_boot,
) -> int:
    """The whole start sequence; returns ComfyUI's exit code (128+N when a signal N ended it)."""
    from zr4.core.comfy_flags import tokenize
    from zr4.core.comfy_launch import ForwardingSignals, comfyui_command, exit_code_of
    from zr4.image.auth.front import plan_front
    from zr4.image.instances import launch_instances, plan_instances, serverless

    env = dict(os.environ if environ is None else environ)
    if extra_args:  # decided in step 1 with the variable's, as the user's flags
        env["COMFYUI_ARGS"] = shlex.join([*tokenize(env.get("COMFYUI_ARGS")), *extra_args])
    report = StartReport()
    config = StartConfig.from_env(env)
    profile = read_profile_data(config.profile_path)
    check_comfyui(config, env)  # before anything is written
    comfyui_version = str(profile["comfyui"]["version"])
    log(f"profile {profile['name']}, ComfyUI {comfyui_version} in {config.comfyui_dir}")

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
    with _step(report, 2, "models", log):
        models = ensure_step(env, config, log)
        for line in models.lines:
            log(f"  {line}")
    with _step(report, 3, "ComfyUI model paths + workflow", log):
        config.output_dir.mkdir(parents=True, exist_ok=True)
        files_step(config, profile, models, plan.block_swap, log, plan.env)
    with _step(report, 4, "R2 sync", log):
        supervisor = sync_step(env, config, log)

    def address(public_port: int) -> tuple[str, int]:
        return ("127.0.0.1", public_port) if front is None else front.comfyui_address(public_port)

    listen, port = address(config.port)
    launch_plan = comfyui_command(
        python=config.comfyui_python,
        comfyui_dir=config.comfyui_dir,
        output_dir=config.output_dir,
        flags=plan.flags,
        listen=listen,
        port=port,
    )

    process: Any = None  # the ComfyUI processes (one per GPU) as one InstanceGroup
    forward = ForwardingSignals(
        lambda: process, on_signal=lambda n: log(f"signal {n}: passing it to ComfyUI")
    )
    try:
        with forward:
            if front is not None:
                front.start(env, log)
            report.ready_s = process_age_s()
            log(f"step 5/5 ComfyUI: {launch_plan.describe()}")
            log(f"ready to launch {report.ready_s:.2f} s after the process started")
            try:
                process = launch_instances(launch_plan, env, instances, address, log)
            except OSError as error:
                raise StartError(
                    f"zr4 start stopped at step 5 (ComfyUI): cannot run {config.comfyui_python}: {error.strerror}"
                ) from None
            if forward.received:  # a signal that came while ComfyUI was being spawned
                process.send_signal(forward.received[-1])
            returncode = process.wait()
    finally:
        if front is not None:
            front.stop()
        if supervisor is not None:
            report.sync_restarts = supervisor.restarts
            supervisor.stop(SYNC_STOP_TIMEOUT_S)
    code = exit_code_of(returncode)
    report.comfyui_exit = code
    log(f"ComfyUI exited with code {code}")
    if supervisor is not None:
        final_sync(env, config, log)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zr4.image.start [COMFYUI FLAGS]``: the same as ``zr4 start``, without Typer."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    try:
        return run_start(extra_args=list(sys.argv[1:] if argv is None else argv))
    except Zr4Error as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
