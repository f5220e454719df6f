"""The sync's pure decisions: settings, names, keys, part sizes, merging, error classes, redaction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import botocore.exceptions
import pytest

from zr4.core.redact import redact
from zr4.image.sync.client import ErrorKind, classify
from zr4.image.sync.journal import UPLOADED, UPLOADING, Journal
from zr4.image.sync.metadata_index import merge_entries
from zr4.image.sync.scanner import (
    FileState,
    content_type_for,
    day_for,
    is_complete,
    is_temporary,
    object_key,
    pod_suffixed,
    scan,
)
from zr4.image.sync.settings import Secret, SyncConfigError, check_bucket_name, settings_from_env
from zr4.image.sync.watcher import InotifyWatcher, make_watcher

BASE_ENV = {
    "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
    "R2_ACCESS_KEY_ID": "kid",
    "R2_SECRET_ACCESS_KEY": "sek",
}


def test_settings_defaults_follow_the_documented_values() -> None:
    settings = settings_from_env(BASE_ENV)
    assert settings.bucket == "runpod"
    assert settings.enabled is False
    assert settings.prefix == "outputs"
    assert settings.delete_after_upload is False
    assert settings.journal_path == Path("/workspace/.zr4/sync/journal.sqlite")


def test_endpoint_from_account_id_and_aws_names() -> None:
    settings = settings_from_env(
        {
            "R2_ACCOUNT_ID": "abc123",
            "AWS_ACCESS_KEY_ID": "kid",
            "AWS_SECRET_ACCESS_KEY": "sek",
            "ENABLE_R2_SYNC": "true",
        }
    )
    assert settings.endpoint_url == "https://abc123.r2.cloudflarestorage.com"
    assert settings.access_key_id.reveal() == "kid"
    assert settings.enabled is True


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"R2_ACCESS_KEY_ID": "k", "R2_SECRET_ACCESS_KEY": "s"}, "R2_ENDPOINT"),
        ({"R2_ENDPOINT": "https://x"}, "R2_SECRET_ACCESS_KEY"),
        ({**BASE_ENV, "R2_SYNC_PART_SIZE_MIB": "4"}, "R2_SYNC_PART_SIZE_MIB"),
        ({**BASE_ENV, "R2_SYNC_STABLE_SECONDS": "soon"}, "R2_SYNC_STABLE_SECONDS"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SyncConfigError, match=names):
        settings_from_env(env)


def test_secrets_never_print() -> None:
    settings = settings_from_env(BASE_ENV)
    text = repr(settings) + str(settings.secret_access_key)
    assert "sek" not in text.replace("secret", "")
    assert "kid" not in text
    assert settings.secret_access_key == Secret("sek")


@pytest.mark.parametrize("bucket", ["runpod", "abc", "my-outputs-2026", "a" * 63, "videos.example.com"])
def test_bucket_names_s3_and_r2_accept(bucket: str) -> None:
    assert check_bucket_name(bucket) == bucket


@pytest.mark.parametrize(
    "bucket",
    ["ab", "a" * 64, "Bad_Bucket!", "Runpod", "my_bucket", "-runpod", "runpod-", "a..b", "192.168.5.4"],
)
def test_bucket_names_outside_the_naming_rule_name_the_variable(bucket: str) -> None:
    with pytest.raises(SyncConfigError) as caught:
        check_bucket_name(bucket)
    assert str(caught.value).startswith(f"R2_BUCKET={bucket!r} is not a valid bucket name: use 3 to 63 ")


def test_a_bad_bucket_at_the_end_of_the_endpoint_is_named_there() -> None:
    env = {**BASE_ENV, "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com/My_Videos"}
    with pytest.raises(SyncConfigError, match=r"^the bucket 'My_Videos' at the end of R2_ENDPOINT is not"):
        settings_from_env(env)


def test_redact_masks_values_and_sigv4_fields() -> None:
    line = "Authorization: AWS4-HMAC-SHA256 Credential=KID123/20260101/auto/s3/aws4_request, Signature=abcdef0123 secret=SEKRET"
    cleaned = redact(line, ["SEKRET", "KID123"])
    assert "SEKRET" not in cleaned and "KID123" not in cleaned and "abcdef0123" not in cleaned


def test_redact_masks_a_one_character_secret_only_where_it_stands_alone() -> None:
    message = "R2 refused the key a for bucket runpod: AccessDenied"
    assert redact(message, ["a"]) == "R2 refused the key *** for bucket runpod: AccessDenied"
    assert redact("secret=a&x=1", ["a"]) == "secret=***&x=1"


def test_redact_masks_a_long_secret_anywhere() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG"
    assert redact(f"sig{secret}tail", [secret]) == "sig***tail"


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        ("video_00001_.mp4", False),
        ("sub/video.webm", False),
        ("video.mp4.part", True),
        ("video.mp4.tmp", True),
        ("video.partial", True),
        (".video.mp4.Xy12", True),
        (".hidden/video.mp4", True),
        ("video.mp4~", True),
        ("ffmpeg.tmp.mp4", True),
    ],
)
def test_temporary_names(name: str, temporary: bool) -> None:
    assert is_temporary(name) is temporary


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.mp4", "video/mp4"),
        ("a.webm", "video/webm"),
        ("a.GIF", "image/gif"),
        ("a.png", "image/png"),
        ("a.json", "application/json"),
        ("a.unknownext", "application/octet-stream"),
    ],
)
def test_content_types(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


def test_keys_use_the_utc_day_of_the_last_write() -> None:
    mtime_ns = int(1_767_225_599.5 * 1e9)  # 2025-12-31T23:59:59.5Z
    assert day_for(mtime_ns) == "2025-12-31"
    assert object_key("outputs", "2025-12-31", "sub/a.mp4") == "outputs/2025-12-31/sub/a.mp4"
    assert object_key("", "2025-12-31", "a.mp4") == "2025-12-31/a.mp4"
    assert pod_suffixed("sub/a.mp4", "pod 7") == "sub/a.pod-7.mp4"


def test_completeness_is_mtime_age() -> None:
    state = FileState("a.mp4", 10, 1_000_000_000)
    assert not is_complete(state, 1_500_000_000, 1.0)
    assert is_complete(state, 2_000_000_000, 1.0)


def test_merge_entries_is_a_union_by_key_newest_wins() -> None:
    a = [{"key": "k1", "time": "2026-01-01T00:00:01Z", "pod": "a"}, {"key": "k2", "time": "t", "pod": "a"}]
    b = [{"key": "k1", "time": "2026-01-01T00:00:02Z", "pod": "b"}, {"key": "k3", "time": "t", "pod": "b"}]
    merged = merge_entries(a, b)
    assert [e["key"] for e in merged] == ["k1", "k2", "k3"]
    assert merged[0]["pod"] == "b"


def _client_error(code: str, status: int, message: str = "", date: str | None = None) -> Exception:
    headers = {"date": date} if date else {}
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return botocore.exceptions.ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_client_error("SignatureDoesNotMatch", 403), ErrorKind.AUTH),
        (_client_error("InvalidAccessKeyId", 403), ErrorKind.AUTH),
        (_client_error("NoSuchBucket", 404), ErrorKind.NO_BUCKET),
        (_client_error("RequestTimeTooSkewed", 403), ErrorKind.CLOCK_SKEW),
        (
            _client_error(
                "AccessDenied", 400, "The difference between the request time and the server's time"
            ),
            ErrorKind.CLOCK_SKEW,
        ),
        (_client_error("400", 400, date="Mon, 01 Jan 2001 00:00:00 GMT"), ErrorKind.CLOCK_SKEW),
        (_client_error("SlowDown", 503), ErrorKind.TRANSIENT),
        (_client_error("NoSuchUpload", 404), ErrorKind.TRANSIENT),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), ErrorKind.UNREACHABLE),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), ErrorKind.TRANSIENT),
    ],
)
def test_error_classes(error: Exception, kind: ErrorKind) -> None:
    assert classify(error).kind is kind


def test_journal_survives_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.mark_uploading("a.mp4", 10, 5, "ab" * 32, "outputs/d/a.mp4", "d")
    assert journal.get("a.mp4").state == UPLOADING  # type: ignore[union-attr]
    journal.mark_uploaded("a.mp4")
    journal.close()
    again = Journal(tmp_path / "j.sqlite")
    record = again.get("a.mp4")
    assert record is not None and record.state == UPLOADED and record.done and not record.indexed
    assert [r.rel_path for r in again.unindexed()] == ["a.mp4"]
    again.mark_indexed(["a.mp4"])
    assert again.unindexed() == []
    again.close()


def test_scan_skips_temporaries_hidden_and_excluded(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".state").mkdir()
    for name in ("a.mp4", "sub/b.png", "c.mp4.part", ".state/journal.sqlite"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a.mp4", tmp_path / "link.mp4")
    assert sorted(scan(tmp_path)) == ["a.mp4", "sub/b.png"]


def test_inotify_sees_files_in_new_subfolders(tmp_path: Path) -> None:
    watcher = make_watcher(tmp_path)
    if not isinstance(watcher, InotifyWatcher):
        pytest.skip("inotify unavailable here")
    try:
        (tmp_path / "a.mp4").write_bytes(b"1")
        seen: set[str] = set()
        rescan = False
        deadline = time.monotonic() + 5
        while "a.mp4" not in seen and time.monotonic() < deadline:
            changes = watcher.wait(0.5)
            seen |= changes.paths
        assert "a.mp4" in seen
        (tmp_path / "new").mkdir()
        deadline = time.monotonic() + 5
        while not rescan and time.monotonic() < deadline:
            rescan = watcher.wait(0.5).rescan
        assert rescan  # a new folder asks for a rescan (its files may predate the watch)
        (tmp_path / "new" / "b.mp4").write_bytes(b"2")
        deadline = time.monotonic() + 5
        while "new/b.mp4" not in seen and time.monotonic() < deadline:
            seen |= watcher.wait(0.5).paths
        assert "new/b.mp4" in seen
    finally:
        watcher.close()
