"""An S3 client that R2 accepts, a transfer manager with bounded concurrency, and error classes.

R2 rejects the checksum trailers boto3 >= 1.36 sends by default (boto/boto3#4392,
cloudflare-docs#19236), so checksums are computed only when an operation requires them.

Over HTTPS the request bodies are not SHA-256 signed (``UNSIGNED-PAYLOAD``): without a checksum
header botocore's S3 signer would hash every byte of every part once more for the signature
(botocore/auth.py ``S3SigV4Auth._should_sha256_sign_payload``), on top of the sha256 zr4 computes
for its own index: half the client's CPU for a large file. TLS already authenticates the bytes in
transit; Cloudflare's own R2 example uploads with payload signing off (``DisablePayloadSigning =
true``, cloudflare/cloudflare-docs@9f60b2f3:src/content/docs/r2/examples/aws/aws-sdk-net.mdx).
Over plain HTTP the body stays signed: there the signature is the only integrity check.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config
from botocore.utils import determine_content_length
from s3transfer.manager import TransferConfig, TransferManager

from zr4.image.sync.settings import MIN_PART_BYTES, SyncSettings

# PutObject bodies up to this size go out without waiting for "100 Continue" (see below).
SMALL_BODY_BYTES = 1024 * 1024

# A server clock further than this from ours means signatures will be refused (S3 allows 15 min).
SKEW_LIMIT_SECONDS = 15 * 60


def _is_https(endpoint_url: str) -> bool:
    return endpoint_url.lower().startswith("https://")


def make_s3_client(settings: SyncSettings) -> Any:
    """boto3 S3 client for ``settings.endpoint_url`` with R2's required options."""
    config = Config(
        region_name="auto",
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        max_pool_connections=max(10, settings.request_concurrency + settings.file_concurrency * 2),
        s3={"addressing_style": "path", "payload_signing_enabled": not _is_https(settings.endpoint_url)},
    )
    core = botocore.session.get_session()
    # Timestamps stay the server's strings: nothing here reads them, and botocore parses each one with
    # dateutil (~0.5 ms): a LIST of 1,000 keys cost 0.5 s of CPU. aws-cli does the same
    # (awscli/customizations/scalarparse.py); the hook is ResponseParserFactory.set_parser_defaults.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    client = boto3.session.Session(botocore_session=core).client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id.reveal(),
        aws_secret_access_key=settings.secret_access_key.reveal(),
        config=config,
    )
    client.meta.events.register("request-created.s3.PutObject", _small_body_without_expect)
    return client


def _small_body_without_expect(request: Any, **_: Any) -> None:
    """Send a small PutObject body with its headers instead of after a ``100 Continue``.

    botocore asks for ``Expect: 100-continue`` on every PutObject (``add_expect_header`` in
    botocore/handlers.py), so each small output waited one round trip before its body went out:
    on the benchmark's 300 x 1 MB that was 3 % of the time, against R2 one RTT per file. The
    handshake only pays off when a rejected body would be expensive to send; below about one
    bandwidth-delay product it costs more than it saves. A server that rejects such a body early
    may close before reading it; urllib3 then still reads the response (it swallows the broken
    pipe): `rclone serve s3` over TLS, refusing a wrong signature, gave a clean S3 error up to
    2 MiB and a broken TLS connection from 4 MiB (bench/results/sync.md), hence the 1 MiB bound
    (tests/image/test_sync_expect.py keeps it clean).
    """
    length = determine_content_length(request.body)
    if length is not None and length <= SMALL_BODY_BYTES:
        del request.headers["Expect"]


def make_transfer_manager(client: Any, settings: SyncSettings) -> TransferManager:
    """Multipart above one part size; at most ``request_concurrency`` requests in flight.

    Parts are equal (the last one shorter) and at least 5 MiB; s3transfer raises the part size
    when a file would need more than 10,000 parts (``ChunksizeAdjuster`` in s3transfer/utils.py).
    """
    part = max(settings.part_size_bytes, MIN_PART_BYTES)
    config = TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_request_concurrency=settings.request_concurrency,
        max_submission_concurrency=max(2, settings.file_concurrency),
        max_in_memory_upload_chunks=max(4, settings.request_concurrency),
    )
    return TransferManager(client, config)


class ErrorKind(enum.Enum):
    TRANSIENT = "transient"  # retry with back-off: network, 5xx, throttling, lost multipart upload
    UNREACHABLE = "unreachable"  # endpoint does not answer (also retried by the daemon)
    AUTH = "auth"  # 401/403: wrong key id or secret, or no permission
    NO_BUCKET = "no_bucket"
    CLOCK_SKEW = "clock_skew"
    NOT_S3 = "not_s3"  # something answered, but not an S3 API
    TLS = "tls"  # the server's certificate was refused
    INVALID = "invalid"  # botocore refused the request before sending it (ParamValidationError)
    OTHER = "other"  # a permanent error of another kind

    @property
    def permanent(self) -> bool:
        return self in {
            ErrorKind.AUTH,
            ErrorKind.NO_BUCKET,
            ErrorKind.CLOCK_SKEW,
            ErrorKind.NOT_S3,
            ErrorKind.TLS,
            ErrorKind.INVALID,
        }


_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "Unauthorized",
    "InvalidToken",
    "401",
    "403",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "NoSuchUpload",
    "429",
    "500",
    "502",
    "503",
    "504",
}


@dataclass(frozen=True)
class Classified:
    kind: ErrorKind
    code: str
    status: int | None


def server_clock_offset(response: dict[str, Any]) -> float | None:
    """Seconds the server's ``Date`` header is ahead of our clock, if the response has one."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    date = headers.get("date")
    if not date:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None
    # The clock botocore signs with (datetime), so the offset is the one the server judges.
    return server - dt.datetime.now(dt.UTC).timestamp()


def classify(error: BaseException) -> Classified:
    """Sort an exception from boto3/s3transfer into what the daemon should do about it."""
    if isinstance(error, botocore.exceptions.SSLError):
        return Classified(ErrorKind.TLS, "SSLError", None)
    if isinstance(
        error,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ProxyConnectionError,
    ):
        return Classified(ErrorKind.UNREACHABLE, type(error).__name__, None)
    if isinstance(error, botocore.exceptions.ClientError):
        response: dict[str, Any] = error.response or {}
        code = str(response.get("Error", {}).get("Code", ""))
        message = str(response.get("Error", {}).get("Message", "")).lower()
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        offset = server_clock_offset(response)
        if (
            code == "RequestTimeTooSkewed"
            or ("time" in message and ("skew" in message or "difference" in message))
            or (status in (400, 403) and offset is not None and abs(offset) > SKEW_LIMIT_SECONDS)
        ):
            return Classified(ErrorKind.CLOCK_SKEW, code or "RequestTimeTooSkewed", status)
        if code in {"NoSuchBucket"}:
            return Classified(ErrorKind.NO_BUCKET, code, status)
        if code in _AUTH_CODES or status in (401, 403):
            return Classified(ErrorKind.AUTH, code, status)
        if code in _TRANSIENT_CODES or (isinstance(status, int) and (status >= 500 or status == 429)):
            return Classified(ErrorKind.TRANSIENT, code, status)
        return Classified(ErrorKind.OTHER, code, status)
    if isinstance(error, botocore.exceptions.ParamValidationError):
        # The same request is refused the same way every time: no reason to retry it.
        return Classified(ErrorKind.INVALID, "ParamValidationError", None)
    if isinstance(error, botocore.exceptions.BotoCoreError | ConnectionError | TimeoutError | OSError):
        # ReadTimeout, ConnectionClosed, IncompleteRead, a response that is not XML...
        return Classified(ErrorKind.TRANSIENT, type(error).__name__, None)
    return Classified(ErrorKind.OTHER, type(error).__name__, None)


def explain(classified: Classified, settings: SyncSettings) -> str:
    """One line a user can act on; never contains credentials."""
    kind = classified.kind
    if kind is ErrorKind.UNREACHABLE:
        return (
            f"cannot reach the endpoint {settings.endpoint_url}: check R2_ENDPOINT / R2_ACCOUNT_ID "
            "and the network"
        )
    if kind is ErrorKind.AUTH:
        return (
            f"the endpoint refused the credentials ({classified.code or classified.status}): check "
            "R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY and that the token may write to bucket "
            f"{settings.bucket!r}"
        )
    if kind is ErrorKind.NO_BUCKET:
        return f"bucket {settings.bucket!r} does not exist at {settings.endpoint_url}: create it or set R2_BUCKET"
    if kind is ErrorKind.CLOCK_SKEW:
        return "this machine's clock differs too much from the server's: the request signature is refused; fix the clock (NTP)"
    if kind is ErrorKind.TLS:
        return (
            f"the TLS certificate of {settings.endpoint_url} was not accepted: check R2_ENDPOINT "
            "(a private CA goes in AWS_CA_BUNDLE)"
        )
    if kind is ErrorKind.NOT_S3:
        return f"{settings.endpoint_url} answered, but not as an S3 API: check R2_ENDPOINT"
    if kind is ErrorKind.INVALID:
        return (
            f"botocore refused to send the request ({classified.code}): check R2_BUCKET ({settings.bucket!r}) "
            f"and R2_PREFIX ({settings.prefix!r})"
        )
    if kind is ErrorKind.TRANSIENT:
        return f"temporary server error ({classified.code or classified.status}); retrying"
    return f"request failed ({classified.code or classified.status})"
