"""``zr4 sync test``: put, head, get and delete a probe object, one line per step.

An ``upload_to_r2.py --test`` equivalent, with a distinct message for each way it usually fails:
unreachable endpoint, refused credentials, missing bucket, wrong clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zr4.core.redact import redact
from zr4.image.sync.client import (
    Classified,
    ErrorKind,
    classify,
    explain,
    make_s3_client,
    server_clock_offset,
)
from zr4.image.sync.metadata_index import supports_conditional_writes
from zr4.image.sync.settings import SyncSettings


@dataclass(frozen=True)
class ProbeStep:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class ProbeReport:
    endpoint: str
    bucket: str
    key: str
    steps: list[ProbeStep] = field(default_factory=list)
    error_kind: ErrorKind | None = None
    clock_offset_s: float | None = None
    conditional_writes: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and all(step.ok for step in self.steps)


def _probe_classify(error: BaseException) -> Classified:
    found = classify(error)
    # A plain HTTP status without an S3 error document: something answered, but not S3.
    if (
        found.kind in (ErrorKind.TRANSIENT, ErrorKind.OTHER)
        and found.code.isdigit()
        and found.status not in (404,)
    ):
        return Classified(ErrorKind.NOT_S3, found.code, found.status)
    return found


def run_probe(settings: SyncSettings, client: Any | None = None) -> ProbeReport:
    """Run the four steps against ``settings.bucket``; stops at the first failure."""
    quick = settings.with_(max_attempts=2, connect_timeout_seconds=min(settings.connect_timeout_seconds, 5.0))
    client = client if client is not None else make_s3_client(quick)
    key = f"{settings.prefix.strip('/')}/.zr4-probe/{settings.pod_id}-{uuid.uuid4().hex[:12]}.txt".lstrip("/")
    body = f"zr4 sync test {time.time():.0f}\n".encode()
    report = ProbeReport(settings.endpoint_url, settings.bucket, key)
    secrets = settings.secrets()

    def step(name: str, action: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = action()
        except Exception as error:
            found = _probe_classify(error)
            report.error_kind = found.kind
            response = getattr(error, "response", None)
            if isinstance(response, dict):
                report.clock_offset_s = server_clock_offset(response)
            text = redact(explain(found, settings), secrets)
            report.steps.append(ProbeStep(name, False, time.monotonic() - started, text))
            return False
        report.steps.append(ProbeStep(name, True, time.monotonic() - started, redact(detail, secrets)))
        return True

    def put() -> str:
        response = client.put_object(Bucket=settings.bucket, Key=key, Body=body, ContentType="text/plain")
        report.clock_offset_s = server_clock_offset(response)
        return f"{len(body)} bytes"

    def head() -> str:
        response = client.head_object(Bucket=settings.bucket, Key=key)
        size = int(response.get("ContentLength", -1))
        if size != len(body):
            raise RuntimeError(f"HEAD says {size} bytes, expected {len(body)}")
        return f"size {size} matches"

    def get() -> str:
        data = client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        if data != body:
            raise RuntimeError("GET returned different bytes")
        return "content matches"

    def delete() -> str:
        client.delete_object(Bucket=settings.bucket, Key=key)
        return "removed"

    for name, action in (("put", put), ("head", head), ("get", get), ("delete", delete)):
        if not step(name, action):
            break
    if report.ok:
        try:
            report.conditional_writes = supports_conditional_writes(
                client, settings.bucket, settings.prefix, settings.pod_id
            )
        except Exception:
            report.conditional_writes = None
    return report


def format_probe(report: ProbeReport) -> list[str]:
    """The lines ``zr4 sync test`` prints."""
    lines = [f"endpoint {report.endpoint}  bucket {report.bucket}"]
    for step in report.steps:
        mark = "ok  " if step.ok else "FAIL"
        lines.append(f"  {mark} {step.name:<6} {step.seconds * 1000:7.0f} ms  {step.detail}")
    if report.clock_offset_s is not None:
        lines.append(f"  server clock offset {report.clock_offset_s:+.0f} s")
    if report.conditional_writes is not None:
        how = "conditional writes" if report.conditional_writes else "per-pod fragments + verify"
        lines.append(f"  metadata.json merging: {how}")
    lines.append("sync test passed" if report.ok else "sync test FAILED")
    return lines
