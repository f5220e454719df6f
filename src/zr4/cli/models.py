"""`zr4 models plan` and `zr4 models download`: thin layers over zr4.image.models."""

from __future__ import annotations

from pathlib import Path

import typer

from zr4.core.sizes import human_bytes
from zr4.image.models import (
    DownloadOptions,
    Progress,
    describe_plan,
    ensure_models,
    load_manifest,
    plan_models,
    settings_from_env,
)

app = typer.Typer(no_args_is_help=True, help="Plan and download the models of the current settings.")

_MODELS_DIR = typer.Option(
    None, "--models-dir", help="Models root (default: $MODELS_DIR or /workspace/models)."
)
_MANIFEST = typer.Option(
    None, "--manifest", help="Model manifest YAML (default: the bundled data/models.yaml)."
)
_STRICT = typer.Option(
    False, "--strict", help="A GGUF level missing upstream is an error, not an fp8 fallback."
)


@app.command("plan")
def plan_command(
    models_dir: Path | None = _MODELS_DIR, manifest: Path | None = _MANIFEST, strict: bool = _STRICT
) -> None:
    """Show what `download` would fetch for the current settings, bytes to fetch and free disk; changes nothing."""
    settings = settings_from_env(strict=strict, models_dir=models_dir)
    plan = plan_models(settings, manifest=load_manifest(manifest))
    for line in describe_plan(plan):
        typer.echo(line)


@app.command("download")
def download_command(
    models_dir: Path | None = _MODELS_DIR,
    manifest: Path | None = _MANIFEST,
    strict: bool = _STRICT,
    jobs: int = typer.Option(3, "--jobs", "-j", min=1, max=16, help="Files fetched at once."),
    retries: int = typer.Option(
        6, "--retries", min=1, help="Failed attempts in a row before giving up on a file."
    ),
    stall_timeout: float = typer.Option(
        60.0, "--stall-timeout", min=1.0, help="Seconds without a byte before reconnecting."
    ),
    log_interval: float = typer.Option(
        10.0, "--log-interval", min=0.1, help="Seconds between progress lines when not on a terminal."
    ),
    connections: int = typer.Option(
        8, "--connections", min=1, max=32, help="Connections per large file (parallel byte ranges)."
    ),
    margin_mib: int = typer.Option(
        2048, "--margin-mib", min=0, help="Free space (MiB) to keep on the volume beyond the downloads."
    ),
) -> None:
    """Fetch what is missing (resuming partial files), verify sha256, move into place. DRY_RUN=true only plans."""
    settings = settings_from_env(strict=strict, models_dir=models_dir)
    loaded = load_manifest(manifest)
    if settings.dry_run:
        for line in describe_plan(plan_models(settings, manifest=loaded)):
            typer.echo(line)
        typer.echo("DRY_RUN=true: nothing downloaded")
        return
    progress = Progress(log_interval_s=log_interval)
    result = ensure_models(
        settings,
        manifest=loaded,
        jobs=jobs,
        options=DownloadOptions(retries=retries, stall_timeout_s=stall_timeout, connections=connections),
        progress=progress,
        margin_bytes=margin_mib << 20,
    )
    plan = result.plan
    if not settings.enable_steadydancer:
        typer.echo("[SteadyDancer] disabled (ENABLE_STEADYDANCER=false): no models needed")
        return
    for warning in result.warnings:
        typer.secho(f"WARNING: {warning}", fg=typer.colors.YELLOW, err=True)
    parts = [f"{len(plan.files)} files verified in {plan.models_root}"]
    if result.fetched:
        parts.append(f"fetched {len(result.fetched)} ({human_bytes(result.fetched_bytes)})")
    if result.adopted:
        parts.append(f"adopted {len(result.adopted)} already on disk")
    parts.append(f"{result.elapsed_s:.2f}s")
    typer.echo("models ready: " + ", ".join(parts))
    if plan.diffusion_model:
        typer.echo(f"diffusion model: {plan.variant} diffusion_models/{plan.diffusion_model}")


def main() -> None:
    """``python -m zr4.cli.models``: the same commands without loading zr4's other command groups."""
    import sys

    from zr4.core.redact import redact_process_output
    from zr4.errors import Zr4Error

    redact_process_output()

    try:
        app(standalone_mode=False)
    except Zr4Error as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
