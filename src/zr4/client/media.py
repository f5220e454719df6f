"""The photo and the dance clip of a job: read from a path, an http(s) URL or base64, and checked.

A file is accepted by what its first bytes say, not by its name: ComfyUI's LoadImage opens images
with Pillow, and VideoHelperSuite's VHS_LoadVideo lists only ``webm, mp4, mkv, gif, mov`` files
(``videohelpersuite/load_video_nodes.py``, ``video_extensions``). Refusing a wrong file here gives
one clear line instead of a node error deep in the run.
"""

from __future__ import annotations

import base64
import binascii
import errno
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zr4.errors import Zr4Error

Kind = Literal["image", "video"]
MAX_DOWNLOAD_BYTES = 2 * 1024**3
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]*)(;[\w=.-]+)*;base64,(?P<data>.*)$", re.S)


class MediaError(Zr4Error):
    """An input is missing, unreadable, or not the kind of file it must be."""


@dataclass(frozen=True)
class Media:
    """One input file's bytes, the name it gets in ComfyUI's ``input/`` folder, and its format."""

    data: bytes
    filename: str
    format: str  # png, jpeg, webp, mp4, webm, ...
    source: str  # what the user gave, for messages (base64 shortened)


def sniff(data: bytes) -> tuple[Kind, str] | None:
    """(kind, format) from the magic bytes, or None when neither an image nor a video."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head.startswith(b"BM"):
        return "image", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "video", "gif"  # VHS loads GIFs as clips; LoadImage takes their first frame
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"qt"):
            return "video", "mov"
        if brand in (b"avif", b"avis"):
            return "image", "avif"
        return "video", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm" if b"webm" in data[:256] else "mkv"
    return None


_EXTENSIONS = {"jpeg": "jpg", "tiff": "tif"}


def _short(source: str) -> str:
    return source if len(source) <= 80 else source[:60] + "…"


def _download(url: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "zr4"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise MediaError(f"cannot download {_short(url)}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise MediaError(f"cannot download {_short(url)}: {getattr(error, 'reason', error)}") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise MediaError(f"{_short(url)} is larger than {MAX_DOWNLOAD_BYTES // 1024**3} GiB")
    return bytes(data)


def _decode_base64(text: str) -> bytes | None:
    match = _DATA_URL.match(text.strip())
    payload = match.group("data") if match else text
    compact = re.sub(r"\s+", "", payload)
    if len(compact) < 16 or not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", compact):
        return None
    try:
        return base64.b64decode(
            compact + "=" * (-len(compact) % 4), altchars=b"-_" if "-" in compact or "_" in compact else None
        )
    except (binascii.Error, ValueError):
        return None


def _named(source: str, label: str | None) -> str:
    """How a message names an input: the path or URL the user gave, or (``label``, a job's field such
    as ``input.video``) the field, with its URL but never its base64 text."""
    if label is None:
        return _short(source)
    if urllib.parse.urlsplit(source.strip()).scheme.lower() in ("http", "https"):
        return f"{label} ({_short(source.strip())})"
    return label


def read_source(
    source: str, *, allow_base64: bool, timeout_s: float = 120.0, label: str | None = None
) -> tuple[bytes, str]:
    """The bytes of ``source`` and a base name for it (without extension).

    ``allow_base64``: the input came over the network, so it is an http(s) URL or base64 (plain or a
    ``data:`` URL); without it (`zr4 dance`), a file path or an http(s) URL. ``label`` names the
    input in messages instead of its text (see :func:`_named`).
    """
    text = source.strip()
    if not text:
        raise MediaError("an input is empty: give a file path or an http(s) URL")
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        name = Path(urllib.parse.urlsplit(text).path).stem or "input"
        return _download(text, timeout_s), name
    if allow_base64:
        # A job from the network (the serverless worker): an http(s) URL or base64, never a path on
        # this machine, however short the base64 (a small PNG is a few hundred characters).
        decoded = _decode_base64(text)
        if decoded is None:
            raise MediaError(f"{_named(text, label)} is neither an http(s) URL nor valid base64")
        return decoded, "input"
    if scheme and len(scheme) > 1 and scheme not in ("file",):
        raise MediaError(f"{_short(text)}: only file paths and http(s) URLs are supported")
    path = Path(urllib.parse.urlsplit(text).path if scheme == "file" else text).expanduser()
    shown = _short(str(path))
    try:
        return path.read_bytes(), path.stem or "input"
    except FileNotFoundError:
        raise MediaError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise MediaError(f"{shown} is a folder, not a file") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise MediaError(f"{shown} is not a file path or an http(s) URL") from None
        raise MediaError(f"cannot read {shown}: {error.strerror}") from None


def _safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "input"
    return cleaned[:60]


def load_media(
    source: str, kind: Kind, *, allow_base64: bool = False, tag: str = "", label: str | None = None
) -> Media:
    """Read ``source`` and check it is an image / a video. ``tag`` makes the upload name unique;
    ``label`` (``input.video``) names the input in messages instead of its text."""
    data, stem = read_source(source, allow_base64=allow_base64, label=label)
    found = sniff(data)
    what = "an image" if kind == "image" else "a video"
    named = _named(source, label)
    if found is None:
        raise MediaError(f"{named} is not {what} (unrecognised file content)")
    found_kind, fmt = found
    if found_kind != kind and not (kind == "image" and fmt == "gif"):
        expected = "PNG, JPEG, WebP, BMP or TIFF" if kind == "image" else "MP4, MOV, WebM, MKV or GIF"
        raise MediaError(f"{named} is not {what}: it is {fmt.upper()} ({expected} expected)")
    extension = _EXTENSIONS.get(fmt, fmt)
    prefix = f"{tag}_" if tag else ""
    return Media(
        data=data, filename=f"{prefix}{_safe_stem(stem)}.{extension}", format=fmt, source=_short(source)
    )
