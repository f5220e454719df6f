"""`zr4 start`, `zr4 health`, `zr4 doctor`: the container's own commands (thin layers over zr4.image).

Register in cli/main.py with::

    app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(start_cli.start)
    app.command("health")(start_cli.health)
    app.command("doctor")(start_cli.doctor)
"""

from __future__ import annotations

from pathlib import Path

import typer


def start(ctx: typer.Context) -> None:
    """Run the container's start sequence: plan VRAM, the status page, models fetched while ComfyUI starts.

    Extra arguments are passed to ComfyUI (checked like COMFYUI_ARGS). Exits with ComfyUI's code.
    """
    from zr4.image.start import exit_now, run_start

    raise typer.Exit(exit_now(run_start(extra_args=list(ctx.args))))


def health(
    timeout: float = typer.Option(5.0, "--timeout", min=0.5, help="Seconds to wait for ComfyUI's answer."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the checks and the boot's status (the model download) as JSON."
    ),
) -> None:
    """Exit 0 when ComfyUI answers, the model download has not failed and (with ENABLE_R2_SYNC=true)
    the sync daemon is alive."""
    from zr4.image.health import check_health, format_checks, health_json

    checks = check_health(timeout_s=timeout)
    if as_json:
        typer.echo(health_json(checks))
    else:
        for line in format_checks(checks):
            typer.echo(line)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


def doctor(
    build_time: bool = typer.Option(
        False, "--build-time", help="Versions, compiled ops, providers, imports and flags (no GPU needed)."
    ),
    gpu: bool = typer.Option(False, "--gpu", help="CUDA, compute capability, and kernels run on the GPU."),
    profile_json: Path | None = typer.Option(
        None, "--profile-json", help="Resolved profile (default $ZR4_PROFILE)."
    ),
    lock: Path | None = typer.Option(None, "--lock", help="Lock to compare with (default: the profile's)."),
    comfyui_dir: Path | None = typer.Option(None, "--comfyui-dir", help="Default $COMFYUI_DIR."),
    python: str | None = typer.Option(
        None, "--python", help="ComfyUI's interpreter (default $COMFYUI_PYTHON)."
    ),
) -> None:
    """Check the installed stack against the profile and its lock; print check / expected / found."""
    from zr4.image.doctor import format_table, run_doctor, settings_from_env
    from zr4.image.start import load_profile_json

    default_profile, default_python, default_dir = settings_from_env()
    profile = load_profile_json(profile_json or default_profile)
    rows = run_doctor(
        profile,
        python=python or default_python,
        comfyui_dir=comfyui_dir or default_dir,
        lock_path=lock,
        build_time=build_time or not gpu,
        gpu=gpu,
    )
    for line in format_table(rows):
        typer.echo(line)
    if any(row.status == "FAIL" for row in rows):
        raise typer.Exit(1)
