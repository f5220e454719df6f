"""Lay out the pinned ComfyUI and custom-node sources as plain folders, for tests and benchmarks.

Why: the seam checks (conformance suite, hermetic image build, sampler benchmark) must run the real
ComfyUI at the exact commits the profile pins, on machines that cannot reach GitHub. They read
partial git snapshots (large blobs may be absent) from a mirror folder that holds one git directory
per repository, find the pinned commit in whichever snapshot holds it (a fork may hold the commit
when the upstream snapshot does not), and write its tree. Missing blobs are skipped and listed in
``SOURCES.json`` so a check can say what it ran without.

Usage:
    python bench/sources.py --mirror DIR [--out .cache/sources]

``--mirror`` defaults to ``$ZR4_MIRROR``. The layout written is
``OUT/ComfyUI`` and ``OUT/ComfyUI/custom_nodes/<name>``, as the image has it, plus any extra
repositories named with ``--extra NAME=COMMIT`` (written to ``OUT/extra/<NAME>``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PinnedSource:
    """One repository at one commit, and where its tree goes."""

    name: str
    repo: str
    commit: str
    dest: Path


def pinned_sources(out: Path, profile_file: Path) -> list[PinnedSource]:
    """ComfyUI and every custom node the base profile pins (the image's own list)."""
    profile = yaml.safe_load(profile_file.read_text())
    comfy = profile["comfyui"]
    comfy_dir = out / "ComfyUI"
    sources = [PinnedSource("ComfyUI", comfy["repo"], comfy["commit"], comfy_dir)]
    for node in comfy["custom_nodes"]:
        sources.append(
            PinnedSource(
                node["name"], node["repo"], node["commit"], comfy_dir / "custom_nodes" / node["name"]
            )
        )
    return sources


def git_dirs(mirror: Path) -> list[Path]:
    """Every git directory under the mirror (bare snapshots or clones with a work tree)."""
    found = []
    for head in sorted(mirror.glob("*/*/HEAD")) + sorted(mirror.glob("*/*/.git/HEAD")):
        found.append(head.parent)
    return found


def holder_of(commit: str, candidates: list[Path]) -> Path | None:
    for git_dir in candidates:
        probe = subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return git_dir
    return None


def extract_tree(git_dir: Path, commit: str, dest: Path) -> list[str]:
    """Write the commit's tree into dest; return the paths whose blobs the snapshot lacks."""
    listing = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-z", "--full-tree", commit],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    entries = []
    for raw in listing:
        if not raw:
            continue
        meta, path = raw.split(b"\t", 1)
        mode, kind, sha = meta.split()
        if kind != b"blob":
            continue  # submodules are not part of any pinned tree
        entries.append((mode.decode(), sha.decode(), path.decode()))
    missing: list[str] = []
    batch = subprocess.Popen(
        ["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert batch.stdin is not None and batch.stdout is not None
    for mode, sha, rel in entries:
        batch.stdin.write(sha.encode() + b"\n")
        batch.stdin.flush()
        header = batch.stdout.readline().split()
        if header[-1] == b"missing":
            missing.append(rel)
            continue
        size = int(header[2])
        data = batch.stdout.read(size)
        batch.stdout.read(1)  # the newline after each object
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(data.decode())
            continue
        target.write_bytes(data)
        target.chmod(0o755 if mode == "100755" else 0o644)
    batch.stdin.close()
    batch.wait()
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=os.environ.get("ZR4_MIRROR"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".cache" / "sources")
    parser.add_argument("--profile-file", type=Path, default=REPO_ROOT / "profiles" / "base.yaml")
    parser.add_argument("--extra", action="append", default=[], help="NAME=COMMIT of another repository")
    args = parser.parse_args(argv)
    if args.mirror is None or not Path(args.mirror).is_dir():
        print("sources: give --mirror DIR (or set ZR4_MIRROR) to a folder of git snapshots", file=sys.stderr)
        return 2
    candidates = git_dirs(Path(args.mirror))
    sources = pinned_sources(args.out, args.profile_file)
    for extra in args.extra:
        name, _, commit = extra.partition("=")
        sources.append(PinnedSource(name, name, commit, args.out / "extra" / name))
    record: dict[str, dict[str, object]] = {}
    manifest = args.out / "SOURCES.json"
    previous = json.loads(manifest.read_text()) if manifest.exists() else {}
    for source in sources:
        if previous.get(source.name, {}).get("commit") == source.commit and source.dest.is_dir():
            record[source.name] = previous[source.name]
            continue
        git_dir = holder_of(source.commit, candidates)
        if git_dir is None:
            print(
                f"sources: no snapshot under {args.mirror} holds {source.name}@{source.commit}",
                file=sys.stderr,
            )
            return 1
        missing = extract_tree(git_dir, source.commit, source.dest)
        record[source.name] = {"repo": source.repo, "commit": source.commit, "missing_blobs": missing}
        print(f"{source.name}@{source.commit[:8]} -> {source.dest} ({len(missing)} blobs absent)")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
