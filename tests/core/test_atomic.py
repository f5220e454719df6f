"""The one atomic text write: the content, the mode, what a failure and a killed writer leave."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zr4.core.atomic import leftover_temporaries, write_text_atomically


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_content_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "token"
    write_text_atomically(target, "first\n", mode=0o600)
    write_text_atomically(target, "second\n", mode=0o600)
    assert target.read_text(encoding="utf-8") == "second\n"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["token"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_mode_none_is_what_a_new_file_gets_under_the_umask(tmp_path: Path, umask: int) -> None:
    # The state files (the models' journal and sidecars, the sync heartbeat, the locks) were plain
    # writes: their mode followed the umask, and still does, read by the kernel (no umask() call,
    # which would race the download threads creating files meanwhile).
    previous = os.umask(umask)
    try:
        write_text_atomically(tmp_path / "state.json", "{}", mode=None, durable=False)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "state.json") == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "journal.json"
    write_text_atomically(target, "old", mode=None)
    with pytest.raises(UnicodeEncodeError):
        write_text_atomically(target, "\ud800 lone surrogate", mode=None)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.json"]


def test_leftover_temporaries_names_only_this_modules_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "a.bin.partial.json"
    kept = [".a.bin.partial.json.tmp", ".a.bin.partial.json.0123456", "a.bin.partial.json.01234567"]
    for name in [*kept, ".a.bin.partial.json.0123abcd", ".a.bin.partial.json.deadbeef"]:
        (tmp_path / name).write_text("x")
    assert [p.name for p in leftover_temporaries(target)] == [
        ".a.bin.partial.json.0123abcd",
        ".a.bin.partial.json.deadbeef",
    ]
    assert leftover_temporaries(tmp_path / "missing" / "x") == []
