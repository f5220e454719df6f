"""Keep credentials out of every line the sync prints or raises."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO

MASK = "***"
# SigV4 headers and presigned URLs name the access key id: "Credential=AKID/20260101/auto/s3/...".
_CREDENTIAL_FIELD = re.compile(r"(Credential=)[^/\s,&\"']+")
_SIGNATURE_FIELD = re.compile(r"(Signature=)[0-9a-fA-F]+")


# A secret this short also occurs inside ordinary words ("a" in "bucket runpod was"): mask it only
# where it stands alone, or masking it would mangle the whole message.
_SHORT_SECRET = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value and every SigV4 credential/signature field masked."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) >= _SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:
            alone = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
            text = alone.sub(MASK, text)
    text = _CREDENTIAL_FIELD.sub(r"\1" + MASK, text)
    return _SIGNATURE_FIELD.sub(r"\1" + MASK, text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then masks the secrets (tracebacks included)."""

    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt or "%(asctime)s sync: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


LOGGER_NAME = "zr4.sync"


def configure_logging(secrets: Iterable[str], stream: TextIO | None = None) -> logging.Logger:
    """One redacting stderr handler on the ``zr4.sync`` logger (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_zr4_sync", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    handler._zr4_sync = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
