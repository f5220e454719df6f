"""What ``zr4 sync run`` and ``zr4 sync once`` do, with no typer in between.

``zr4.cli.main.run`` calls these straight when the arguments are exactly ``sync run`` or
``sync once``: building the typer app and parsing through it (typer 0.29 coerces every parameter
with pydantic) cost ~70 ms of each run, and ``sync once`` runs at the end of every job, where a
few hundred outputs upload in ~1.5 s. ``zr4.cli.sync`` wraps the same functions for everything
else (options, ``--help``), so both paths print the same lines.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
from typing import NoReturn

from zr4.core.env import EnvError
from zr4.core.redact import configure_logging, redact
from zr4.errors import Zr4Error
from zr4.image.sync import SyncSettings, run_daemon, settings_from_env, sync_once
from zr4.image.sync.daemon import LOGGER_NAME
from zr4.image.sync.scanner import printable_path

DEFAULT_WAIT_S = 60.0


def load_settings(require_enabled: bool) -> SyncSettings:
    """The sync settings from the environment; a bad or missing one is the user's to fix."""
    try:
        settings = settings_from_env()
    except EnvError as error:
        raise Zr4Error(f"sync settings: {error}") from None
    if require_enabled and not settings.enabled:
        raise Zr4Error("ENABLE_R2_SYNC is not true: set ENABLE_R2_SYNC=true to run the sync daemon")
    return settings


def run_until_signal() -> NoReturn:
    """``zr4 sync run``: the daemon until SIGTERM/SIGINT, then exit with its code."""
    settings = load_settings(require_enabled=True)
    configure_logging(LOGGER_NAME, settings.secrets())
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


def once(wait: float = DEFAULT_WAIT_S) -> None:
    """``zr4 sync once``: one pass, a summary line, then a line per file left behind (exit 1 then)."""
    settings = load_settings(require_enabled=False)
    configure_logging(LOGGER_NAME, settings.secrets())
    report = sync_once(settings, wait_incomplete_s=wait)
    secrets = settings.secrets()
    print(
        f"uploaded {len(report.uploaded)} file(s) ({report.bytes_uploaded / 1e6:.1f} MB), "
        f"{len(report.already_present)} already in the bucket, in {report.seconds:.1f} s"
    )
    for rel in report.incomplete:
        print(f"still being written, not uploaded: {printable_path(rel)}")
    for rel, reason in report.failed.items():
        print(redact(f"not uploaded: {printable_path(rel)}: {reason}", secrets))
    if report.error:
        raise Zr4Error(redact(report.error, secrets))
    if not report.ok:
        raise Zr4Error(f"{len(report.failed) + len(report.incomplete)} file(s) not uploaded; run it again")
