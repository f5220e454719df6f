"""`zr4 sync run|once|test`: parse, call one function of ``zr4.runtime.sync``, print."""

from __future__ import annotations

import os
import signal
import sys
import threading
import types

import typer

from zr4.errors import Zr4Error
from zr4.runtime.env import EnvError
from zr4.runtime.sync import (
    SyncSettings,
    format_probe,
    run_daemon,
    run_probe,
    settings_from_env,
    sync_once,
)
from zr4.runtime.sync.redact import configure_logging, redact
from zr4.runtime.sync.scanner import printable_path

app = typer.Typer(no_args_is_help=True, help="Upload ComfyUI outputs to Cloudflare R2 (any S3 API).")


def _settings(require_enabled: bool) -> SyncSettings:
    try:
        settings = settings_from_env()
    except EnvError as error:
        raise Zr4Error(f"sync settings: {error}") from None
    if require_enabled and not settings.enabled:
        raise Zr4Error("ENABLE_R2_SYNC is not true: set ENABLE_R2_SYNC=true to run the sync daemon")
    return settings


@app.command("run")
def run_command() -> None:
    """Watch the output folder and upload each finished file (runs until SIGTERM/SIGINT)."""
    settings = _settings(require_enabled=True)
    configure_logging(settings.secrets())
    stop = threading.Event()

    def _stop(signum: int, _frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = run_daemon(settings, stop)
    # Uploads still stuck in network retries past the deadline must not hold the exit: their state
    # is in the journal, exactly as after a kill, and they resume at the next start.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command("once")
def once_command(
    wait: float = typer.Option(60.0, help="Seconds to wait for files that are still being written."),
) -> None:
    """Upload every finished output once, update metadata.json, then exit (end of a job)."""
    settings = _settings(require_enabled=False)
    configure_logging(settings.secrets())
    report = sync_once(settings, wait_incomplete_s=wait)
    secrets = settings.secrets()
    typer.echo(
        f"uploaded {len(report.uploaded)} file(s) ({report.bytes_uploaded / 1e6:.1f} MB), "
        f"{len(report.already_present)} already in the bucket, in {report.seconds:.1f} s"
    )
    for rel in report.incomplete:
        typer.echo(f"still being written, not uploaded: {printable_path(rel)}")
    for rel, reason in report.failed.items():
        typer.echo(redact(f"not uploaded: {printable_path(rel)}: {reason}", secrets))
    if report.error:
        raise Zr4Error(redact(report.error, secrets))
    if not report.ok:
        raise Zr4Error(f"{len(report.failed) + len(report.incomplete)} file(s) not uploaded; run it again")


@app.command("test")
def test_command() -> None:
    """Put, head, get and delete a probe object; report each step."""
    settings = _settings(require_enabled=False)
    report = run_probe(settings)
    for line in format_probe(report):
        typer.echo(line)
    if not report.ok:
        raise Zr4Error("sync test failed: see the FAIL line above")
