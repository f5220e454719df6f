"""Output sync to Cloudflare R2 (any S3 API): durable journal, idempotent uploads, day index.

Entry points for the container start sequence:
``run_daemon(settings, stop_event)`` (what ``zr4 sync run`` runs), ``sync_once(settings) -> SyncReport``,
``run_probe(settings)`` (``zr4 sync test``) and ``daemon_is_alive(settings, max_age_s)`` for health.
"""

from zr4.image.sync.daemon import (
    SyncError,
    SyncReport,
    daemon_is_alive,
    read_heartbeat,
    run_daemon,
    sync_once,
)
from zr4.image.sync.metadata_index import read_day_index
from zr4.image.sync.probe import ProbeReport, format_probe, run_probe
from zr4.image.sync.settings import Secret, SyncConfigError, SyncSettings, settings_from_env

__all__ = [
    "ProbeReport",
    "Secret",
    "SyncConfigError",
    "SyncError",
    "SyncReport",
    "SyncSettings",
    "daemon_is_alive",
    "format_probe",
    "read_day_index",
    "read_heartbeat",
    "run_daemon",
    "run_probe",
    "settings_from_env",
    "sync_once",
]
