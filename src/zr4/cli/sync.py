"""`zr4 sync run|once|test`: parse, call one function of ``zr4.image.sync``, print."""

from __future__ import annotations

import typer

from zr4.cli.sync_core import DEFAULT_WAIT_S, load_settings, once, run_until_signal
from zr4.errors import Zr4Error
from zr4.image.sync import format_probe, run_probe

app = typer.Typer(no_args_is_help=True, help="Upload ComfyUI outputs to Cloudflare R2 (any S3 API).")


@app.command("run")
def run_command() -> None:
    """Watch the output folder and upload each finished file (runs until SIGTERM/SIGINT)."""
    run_until_signal()


@app.command("once")
def once_command(
    wait: float = typer.Option(
        DEFAULT_WAIT_S, help="Seconds to wait for files that are still being written."
    ),
) -> None:
    """Upload every finished output once, update metadata.json, then exit (end of a job)."""
    once(wait)


@app.command("test")
def test_command() -> None:
    """Put, head, get and delete a probe object; report each step."""
    settings = load_settings(require_enabled=False)
    report = run_probe(settings)
    for line in format_probe(report):
        typer.echo(line)
    if not report.ok:
        raise Zr4Error("sync test failed: see the FAIL line above")
