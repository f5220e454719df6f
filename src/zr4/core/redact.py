"""Keep credentials out of everything zr4 prints, logs or writes: the one place secrets are masked.

What counts as a secret:

* the value of each variable in :data:`SECRET_VARIABLES` (every credential zr4 or a library it
  runs reads from the environment) and of any variable whose name ends like a credential's
  (:data:`SECRET_SUFFIXES`, e.g. ``GITHUB_TOKEN``);
* the user-info of any URL (``https://user:password@host``), in any text and in any variable's
  value (``R2_ENDPOINT``, ``HF_ENDPOINT``, ``HTTPS_PROXY`` …);
* SigV4 ``Credential=`` / ``Signature=`` fields (signed headers and presigned URLs);
* values a command learns at run time and registers (:func:`register_secret`: the auth token
  generated into a file).

:func:`redact` masks all of them in one string. The entry points wrap ``sys.stdout`` and
``sys.stderr`` in :class:`RedactingStream` (:func:`redact_process_output`), so every message, log
line, JSON result and traceback passes through it; code that writes a file (the sync heartbeat,
a JSON report) calls :func:`redact` itself.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

MASK = "***"

# Variables holding a credential, and who reads each one:
# zr4.core.model_files.settings (HF_TOKEN; huggingface_hub 2.5.0 utils/_auth.py also reads
# HUGGING_FACE_HUB_TOKEN), zr4.image.auth (ZR4_AUTH_TOKEN), zr4.image.sync.settings (the R2 and
# AWS key pairs; botocore credentials.py reads AWS_SESSION_TOKEN / AWS_SECURITY_TOKEN), and the
# runpod SDK 1.12.0 the serverless worker runs (serverless/modules/rp_ping.py: RUNPOD_AI_API_KEY).
SECRET_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "ZR4_AUTH_TOKEN",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "RUNPOD_AI_API_KEY",
)
# Any other variable named like a credential is one too, but only with a value long enough to be
# one: ``SOME_TOKEN=false`` must not turn every "false" of a JSON document into "***".
SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_PASSWD", "_API_KEY", "_SECRET_KEY", "_ACCESS_KEY")
_GUESSED_MIN_LENGTH = 8
# A secret this short also occurs inside ordinary words ("a" in "bucket runpod was"): mask it only
# where it stands alone, or masking it would mangle the whole message.
_SHORT_SECRET = 8

# scheme://user-info@ : the user-info runs to the last "@" before the host's end (urllib.parse
# takes the last "@" of the netloc too). Quotes and spaces end it: they are not URL characters.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")
# SigV4 headers and presigned URLs name the access key id: "Credential=AKID/20260101/auto/s3/...".
_CREDENTIAL_FIELD = re.compile(r"(Credential=)[^/\s,&\"']+")
_SIGNATURE_FIELD = re.compile(r"(Signature=)[0-9a-fA-F]+")

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` from now on in this process (a credential that is in no variable)."""
    if value and value.strip():
        _registered.add(value.strip())


def _userinfo_secrets(text: str) -> list[str]:
    """The user-info (whole, password alone, and as decoded) of every URL in ``text``."""
    found: list[str] = []
    for match in _URL_USERINFO.finditer(text):
        userinfo = match.group("userinfo")
        if not userinfo:
            continue
        password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
        for value in (userinfo, password):
            if value:
                found += [value, urllib.parse.unquote(value)]
    return found


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value the environment holds (see the module docstring for what counts)."""
    env = os.environ if environ is None else environ
    values: list[str] = []
    for name, raw in env.items():
        value = raw.strip()
        if not value:
            continue
        upper = name.upper()
        if upper in SECRET_VARIABLES or (
            upper.endswith(SECRET_SUFFIXES) and len(value) >= _GUESSED_MIN_LENGTH
        ):
            values.append(value)
        if "@" in value:
            values += _userinfo_secrets(value)
    return values


def redact(text: str, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret masked: ``secrets``, the environment's, the registered ones, any
    URL user-info and SigV4 credential/signature fields."""
    if not text:
        return text
    candidates = {s for s in (*secrets, *environment_secrets(environ), *_registered) if s}
    for secret in sorted(candidates, key=len, reverse=True):
        if secret not in text:
            continue
        if len(secret) >= _SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:
            alone = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
            text = alone.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _CREDENTIAL_FIELD.sub(r"\1" + MASK, text)
    return _SIGNATURE_FIELD.sub(r"\1" + MASK, text)


def redact_url(url: str) -> str:
    """``url`` with its user-info masked (for messages that must show which URL was wrong)."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)


class RedactingStream(io.TextIOBase):
    """A text stream that writes everything through :func:`redact` to the stream it wraps.

    Each ``write`` is masked as a whole: print(), logging, click and rich each write a message in
    one call, so a secret never straddles two writes. Everything else (``isatty``, ``fileno``,
    ``encoding`` …) is the wrapped stream's, so colour and terminal detection are unchanged.
    """

    def __init__(self, stream: TextIO, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._stream = stream
        self._secrets = tuple(secrets)

    @property
    def wrapped(self) -> TextIO:
        return self._stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        # At exit the interpreter flushes sys.stdout even when what it wraps was closed first.
        if not getattr(self._stream, "closed", False):
            self._stream.flush()

    def close(self) -> None:
        """Flush only: the wrapped stream belongs to whoever opened it."""
        self.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", "utf-8"))

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def redact_process_output() -> None:
    """Route this process's ``sys.stdout`` and ``sys.stderr`` through :func:`redact` (idempotent).

    Called first by every entry point (``zr4``, ``python -m zr4.image.…``), before anything prints.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then masks the secrets (tracebacks included)."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None, prefix: str = "sync") -> None:
        super().__init__(fmt or f"%(asctime)s {prefix}: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def configure_logging(
    logger_name: str, secrets: Iterable[str] = (), stream: TextIO | None = None, prefix: str = "sync"
) -> logging.Logger:
    """One redacting stderr handler on ``logger_name`` (idempotent)."""
    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        if getattr(handler, "_zr4_redacting", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets, prefix=prefix))
    handler._zr4_redacting = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
