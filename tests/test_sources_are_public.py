"""Every fact in the repository names a public source: no private notes, no machine paths.

A reader of a clone has only the clone and the public internet. A comment that sends them to notes
that were never published (or to a folder on the machine it was written on) is a dead end, so the
words that only ever pointed there are refused in every tracked text file. Sources look like
``repository@commit:path``, a package's metadata, a documentation URL or ``bench/results/*.md``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Split so this file does not match itself.
_PRIVATE = [
    "ERRA" + "TA",  # the private errata list
    r"\bDESI" + r"GN\b",  # the private design notes
    r"\bHE" + r"RE\.md\b",
    r"Append" + r"ix [A-Z]\b",  # an appendix of a private brief
    r"\bP" + r"RD\b",
    r"\b[Tt]he se" + r"ed\b",  # the private brief, never the sampler's seed input
    r"_the_se" + r"eds?_",  # test names spelled after the private brief
    r"[Ss]e" + r"ed (STEP|§|Append)",
    r"/wo" + r"rk/",  # a machine path
    r"\.\./sha" + r"red\b",
    r"\bsha" + r"red/(comfyui|stack|seed)\b",
]
PATTERN = re.compile("|".join(f"(?:{p})" for p in _PRIVATE))


def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout of zr4 (lists the tracked files)")
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def test_no_file_points_at_private_notes_or_machine_paths() -> None:
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (the gzipped object_info): no prose in it
        for number, line in enumerate(text.splitlines(), 1):
            if PATTERN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "cite a public source instead:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "line",
    [
        "# sizes from ERRA" + "TA 22",
        "see DESI" + "GN.md",
        "the se" + "ed's Append" + "ix A variables",
        'Path("/wo' + 'rk/notes/x.json")',
        "(../sha" + "red/stack/README.md)",
    ],
)
def test_the_pattern_catches_each_kind_of_private_pointer(line: str) -> None:
    assert PATTERN.search(line)


@pytest.mark.parametrize(
    "line",
    [
        '"seed": 106060,',
        "seed: int = 106060  # STEADYDANCER_SEED",
        "/workspace/models",
        "def deterministic_bytes(size: int, seed: str) -> bytes:",
    ],
)
def test_the_pattern_leaves_ordinary_words_alone(line: str) -> None:
    assert not PATTERN.search(line)
