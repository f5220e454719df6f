"""Sync settings from the environment (docs/reference/environment.md names plus R2 credentials).

Documented names: ``ENABLE_R2_SYNC`` (default false), ``R2_ENDPOINT``, ``R2_BUCKET`` (default ``runpod``).
Added here: ``R2_ACCOUNT_ID`` (endpoint built as ``https://<id>.r2.cloudflarestorage.com``, developers.cloudflare.com/r2/api/s3/api/),
``R2_ACCESS_KEY_ID`` / ``R2_SECRET_ACCESS_KEY`` (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` also
work), ``R2_PREFIX`` (default ``outputs``), ``R2_DELETE_AFTER_UPLOAD`` (default false) and the
``R2_SYNC_*`` tuning knobs below. Credentials are held in :class:`Secret`, whose ``repr``/``str`` never
show the value.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from zr4.core import image_layout
from zr4.core.baked_profile import baked_profile_path, read_baked_profile
from zr4.core.env import EnvError, env_bool, env_float, env_int, env_str
from zr4.core.redact import redact_url

DEFAULT_BUCKET = "runpod"
DEFAULT_PREFIX = "outputs"
# The image sets OUTPUT_DIR (ComfyUI's --output-directory); R2_SYNC_OUTPUT_DIR overrides it for sync alone.
DEFAULT_OUTPUT_DIR = image_layout.OUTPUT_DIR
# /workspace is RunPod's persistent volume (docs.runpod.io/pods/storage/types): the journal must outlive the
# container disk.
DEFAULT_STATE_DIR = image_layout.SYNC_STATE_DIR
MIB = 1024 * 1024
# S3/R2 multipart limits: parts of 5 MiB to 5 GiB, all but the last equal, at most 10,000 (docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
MIN_PART_BYTES = 5 * MIB
MAX_PARTS = 10_000


class SyncConfigError(EnvError):
    """The sync settings cannot work (missing endpoint, credentials, bad numbers)."""


class Secret:
    """A credential: compares and hashes by value, prints as ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class SyncSettings:
    """Everything the sync needs; build with :func:`settings_from_env` or directly in tests."""

    endpoint_url: str
    access_key_id: Secret
    secret_access_key: Secret
    output_dir: Path
    state_dir: Path
    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX
    enabled: bool = True
    delete_after_upload: bool = False
    # A file is complete once its size and mtime have not changed for this long.
    stable_seconds: float = 1.0
    # A quiet file still held open for writing by a process (openfiles.py) waits for its close,
    # at most this long since its last write (a writer that never closes must not block it for ever).
    open_grace_seconds: float = 600.0
    # Polling fallback interval; with inotify, the interval of the safety rescan is rescan_seconds.
    poll_seconds: float = 0.5
    rescan_seconds: float = 30.0
    # After a permanent error (403, missing bucket) the daemon re-tries this often.
    permanent_retry_seconds: float = 30.0
    # Longest back-off between retries of one file after transient errors.
    max_backoff_seconds: float = 60.0
    # SIGTERM: in-flight uploads get this long to finish.
    shutdown_seconds: float = 20.0
    file_concurrency: int = 8
    request_concurrency: int = 8
    part_size_bytes: int = 16 * MIB
    pod_id: str = field(default_factory=socket.gethostname)
    profile_name: str = ""
    # botocore's per-request timeouts and attempts (standard retry mode).
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_attempts: int = 5

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite"

    @property
    def heartbeat_path(self) -> Path:
        return self.state_dir / "heartbeat.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "daemon.lock"

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be printed (for :func:`zr4.core.redact.redact`)."""
        return tuple(v for v in (self.secret_access_key.reveal(), self.access_key_id.reveal()) if v)

    def with_(self, **changes: object) -> SyncSettings:
        return replace(self, **changes)  # type: ignore[arg-type]


def endpoint_from(endpoint: str | None, account_id: str | None) -> str | None:
    """``R2_ENDPOINT`` wins; otherwise the account's R2 endpoint; ``None`` when neither is set.

    Only the syntax is normalised here (scheme added, trailing slash dropped); :func:`parse_endpoint`
    checks it.
    """
    if endpoint:
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        return endpoint.rstrip("/")
    if account_id:
        return f"https://{account_id}.r2.cloudflarestorage.com"
    return None


def parse_endpoint(endpoint: str, name: str = "R2_ENDPOINT") -> tuple[str, str | None]:
    """(endpoint without a path, bucket named in its path or None); SyncConfigError says what is wrong.

    R2's dashboard shows the S3 API address with the bucket appended
    (``https://<account>.r2.cloudflarestorage.com/<bucket>``); boto3 would then send every request
    to ``/<bucket>/<bucket>/...`` and fail for ever, so the path is split off here.
    """
    shown = redact_url(endpoint)  # the message names the variable; its user-info stays masked
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    if any(c.isspace() for c in endpoint):
        raise SyncConfigError(f"{name}={shown!r} contains a space: remove it")
    try:
        parts = urllib.parse.urlsplit(endpoint)
        port = parts.port
    except ValueError as error:
        if "port" in str(error).lower():
            raise SyncConfigError(
                f"{name}={shown!r}: the port must be a number from 1 to 65535 ({error})"
            ) from None
        raise SyncConfigError(f"{name}={shown!r} is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise SyncConfigError(
            f"{name}={shown!r}: the scheme must be https:// (or http:// for a local server), not {parts.scheme}://"
        )
    if not parts.hostname:
        raise SyncConfigError(
            f"{name}={shown!r} has no host name: use https://<account id>.r2.cloudflarestorage.com"
        )
    if parts.username or parts.password:
        raise SyncConfigError(
            f"{name}={shown!r} holds credentials: remove them, set R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY"
        )
    if port == 0:
        raise SyncConfigError(f"{name}={shown!r}: port 0 is not a valid port (1-65535)")
    if parts.query or parts.fragment:
        raise SyncConfigError(f"{name}={shown!r}: remove the ?query / #fragment part")
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) > 1:
        raise SyncConfigError(
            f"{name}={shown!r} has a path ({parts.path}): set it to {parts.scheme}://{parts.netloc} "
            "and the bucket in R2_BUCKET"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    return base, (urllib.parse.unquote(segments[0]) if segments else None)


# Bucket names as S3 defines them for general purpose buckets
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html): 3 to 63 characters
# of lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit, no two
# dots in a row, not formatted as an IP address. R2's names are a subset ("Bucket names can only
# contain lowercase letters (a-z), numbers (0-9), and hyphens (-)",
# https://developers.cloudflare.com/r2/buckets/create-buckets/, read at
# cloudflare/cloudflare-docs@12de1227:src/content/docs/r2/buckets/create-buckets.mdx), so every R2
# bucket passes, and so does a dotted bucket on another S3 server.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
BUCKET_RULE = (
    "use 3 to 63 lower-case letters (a-z), digits (0-9) and hyphens (-), beginning and ending with a "
    "letter or digit (other S3 servers also allow single dots; R2 does not)"
)


def check_bucket_name(bucket: str, shown: str | None = None) -> str:
    """``bucket`` when it follows the naming rule above; else SyncConfigError saying where it came
    from (``shown``, default ``R2_BUCKET='…'``) and the rule.

    Checked before any request: botocore refuses some bad names only when it sends one
    (ParamValidationError), others reach the server, and neither is a reason to retry.
    """
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        where = shown or f"R2_BUCKET={bucket!r}"
        raise SyncConfigError(f"{where} is not a valid bucket name: {BUCKET_RULE}")
    return bucket


def profile_name_from(environ: Mapping[str, str]) -> str:
    """``ZR4_PROFILE_NAME``, else the ``name`` of the baked profile JSON (``ZR4_PROFILE`` path)."""
    explicit = env_str("ZR4_PROFILE_NAME", None, environ)
    if explicit:
        return explicit
    try:
        data = read_baked_profile(baked_profile_path(environ), SyncConfigError, missing_ok=True)
    except SyncConfigError:
        return ""  # metadata without a profile name; the boot itself reports a broken profile
    name = (data or {}).get("name")
    return name if isinstance(name, str) else ""


def settings_from_env(environ: Mapping[str, str] | None = None) -> SyncSettings:
    """Read the sync settings; raise :class:`SyncConfigError` naming the variable that is wrong."""
    env = os.environ if environ is None else environ
    raw_endpoint = env_str("R2_ENDPOINT", None, env)
    endpoint = endpoint_from(None, env_str("R2_ACCOUNT_ID", None, env))
    if raw_endpoint is None and endpoint is None:
        raise SyncConfigError("set R2_ENDPOINT (https://<account>.r2.cloudflarestorage.com) or R2_ACCOUNT_ID")
    name = "R2_ENDPOINT" if raw_endpoint is not None else "R2_ACCOUNT_ID"
    endpoint, path_bucket = parse_endpoint(raw_endpoint or endpoint or "", name)
    bucket = env_str("R2_BUCKET", None, env)
    if path_bucket is not None and bucket is not None and bucket != path_bucket:
        raise SyncConfigError(
            f"R2_ENDPOINT ends in bucket {path_bucket!r} but R2_BUCKET={bucket!r}: set "
            f"R2_ENDPOINT={endpoint} (without /{path_bucket}) and keep R2_BUCKET, or make them agree"
        )
    if bucket is not None:
        check_bucket_name(bucket)
    elif path_bucket is not None:
        check_bucket_name(path_bucket, f"the bucket {path_bucket!r} at the end of {name}")
    bucket = bucket or path_bucket or DEFAULT_BUCKET
    key_id = env_str("R2_ACCESS_KEY_ID", None, env) or env_str("AWS_ACCESS_KEY_ID", None, env)
    secret = env_str("R2_SECRET_ACCESS_KEY", None, env) or env_str("AWS_SECRET_ACCESS_KEY", None, env)
    if not key_id or not secret:
        raise SyncConfigError(
            "set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    part_mib = env_int("R2_SYNC_PART_SIZE_MIB", 16, env, minimum=5, error=SyncConfigError)
    return SyncSettings(
        endpoint_url=endpoint,
        access_key_id=Secret(key_id),
        secret_access_key=Secret(secret),
        bucket=bucket,
        prefix=(env_str("R2_PREFIX", DEFAULT_PREFIX, env) or "").strip("/"),
        enabled=env_bool("ENABLE_R2_SYNC", False, env),
        delete_after_upload=env_bool("R2_DELETE_AFTER_UPLOAD", False, env),
        output_dir=Path(
            env_str("R2_SYNC_OUTPUT_DIR", None, env)
            or env_str("OUTPUT_DIR", DEFAULT_OUTPUT_DIR, env)
            or DEFAULT_OUTPUT_DIR
        ),
        state_dir=Path(env_str("R2_SYNC_STATE_DIR", DEFAULT_STATE_DIR, env) or DEFAULT_STATE_DIR),
        stable_seconds=env_float("R2_SYNC_STABLE_SECONDS", 1.0, env, error=SyncConfigError),
        open_grace_seconds=env_float("R2_SYNC_OPEN_GRACE_SECONDS", 600.0, env, error=SyncConfigError),
        poll_seconds=max(0.05, env_float("R2_SYNC_POLL_SECONDS", 0.5, env, error=SyncConfigError)),
        rescan_seconds=max(1.0, env_float("R2_SYNC_RESCAN_SECONDS", 30.0, env, error=SyncConfigError)),
        permanent_retry_seconds=env_float(
            "R2_SYNC_PERMANENT_RETRY_SECONDS", 30.0, env, error=SyncConfigError
        ),
        max_backoff_seconds=env_float("R2_SYNC_MAX_BACKOFF_SECONDS", 60.0, env, error=SyncConfigError),
        shutdown_seconds=env_float("R2_SYNC_SHUTDOWN_SECONDS", 20.0, env, error=SyncConfigError),
        file_concurrency=env_int("R2_SYNC_FILE_CONCURRENCY", 8, env, minimum=1, error=SyncConfigError),
        request_concurrency=env_int("R2_SYNC_REQUEST_CONCURRENCY", 8, env, minimum=1, error=SyncConfigError),
        part_size_bytes=part_mib * MIB,
        pod_id=env_str("RUNPOD_POD_ID", None, env) or socket.gethostname(),
        profile_name=profile_name_from(env),
        max_attempts=env_int("R2_SYNC_MAX_ATTEMPTS", 5, env, minimum=1, error=SyncConfigError),
    )
