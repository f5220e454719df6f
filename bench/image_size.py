"""Measure what pulling an image costs: each layer uncompressed, gzip- and zstd-compressed, and how fast
this machine decompresses the biggest one; the pull time at given link rates follows from those.

Why: a registry stores and a pod pulls the compressed layers, then unpacks them; the uncompressed size
alone says neither how long the pull takes nor what zstd would save. ``buildah push`` to an ``oci:``
directory compresses each layer as a push to a registry does (``--compression-format gzip|zstd``), and
the OCI manifest it writes lists every compressed layer's size and media type.

The image is read from the private store of ``bench/build_image.py`` (``--cache``); the ``oci:``
directories are written under ``--work`` and removed when the run ends, as are the layer files the
decompression is timed on.

Usage:
    python bench/image_size.py --cache .cache/build --image localhost/zr4-build/runtime:latest \\
        --work .cache/oci --json out.json [--rate 100 --rate 500]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from build_image import layer_sizes
from build_standins import Buildah

COMPRESSIONS = ("gzip", "zstd")
# The command that undoes each compression, reading the layer file and writing the tar to stdout.
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"]}
MB = 1_000_000


@dataclass(frozen=True)
class Layer:
    """One layer: what created it, its tar size, and its blob size under each compression."""

    created_by: str
    uncompressed: int
    compressed: dict[str, int]
    media_types: dict[str, str]


@dataclass(frozen=True)
class Decompression:
    """Seconds to decompress the biggest layer, and the tar bytes per second that makes."""

    compression: str
    seconds: float
    bytes_per_second: float


def manifest_layers(oci_dir: Path) -> list[dict[str, object]]:
    """The layer descriptors (mediaType, digest, size) of the one image in an OCI layout directory."""
    index = json.loads((oci_dir / "index.json").read_text())
    manifests = index["manifests"]
    if len(manifests) != 1:
        raise SystemExit(f"{oci_dir}: expected one image in index.json, found {len(manifests)}")
    algorithm, digest = manifests[0]["digest"].split(":", 1)
    manifest = json.loads((oci_dir / "blobs" / algorithm / digest).read_text())
    layers: list[dict[str, object]] = manifest["layers"]
    return layers


def blob_path(oci_dir: Path, descriptor: dict[str, object]) -> Path:
    algorithm, digest = str(descriptor["digest"]).split(":", 1)
    return oci_dir / "blobs" / algorithm / digest


def push(b: Buildah, image: str, oci_dir: Path, compression: str) -> float:
    """``buildah push`` the image into a fresh OCI layout with ``compression``; the seconds it took."""
    shutil.rmtree(oci_dir, ignore_errors=True)
    cmd = [*b.base, "push", "--compression-format", compression, image, f"oci:{oci_dir}"]
    print("+ " + shlex.join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True)
    return time.monotonic() - started


def time_decompression(blob: Path, compression: str, tar_bytes: int) -> Decompression:
    """Decompress ``blob`` to /dev/null once; the bytes/s counts the uncompressed tar it yields."""
    started = time.monotonic()
    with blob.open("rb") as source:
        subprocess.run(DECOMPRESS[compression], stdin=source, stdout=subprocess.DEVNULL, check=True)
    seconds = time.monotonic() - started
    return Decompression(compression, seconds, tar_bytes / seconds)


def pull_seconds(compressed: int, rate_mb_s: float) -> float:
    """Seconds to download ``compressed`` bytes at ``rate_mb_s`` megabytes (10^6 bytes) per second."""
    return compressed / (rate_mb_s * MB)


def measure(b: Buildah, image: str, work: Path) -> tuple[list[Layer], dict[str, float], list[Decompression]]:
    """Every layer's sizes, the push seconds per compression, and the biggest layer's decompression."""
    uncompressed = layer_sizes(b, image)
    compressed: list[dict[str, int]] = [{} for _ in uncompressed]
    media: list[dict[str, str]] = [{} for _ in uncompressed]
    seconds: dict[str, float] = {}
    timings: list[Decompression] = []
    biggest = max(range(len(uncompressed)), key=lambda i: uncompressed[i][1])
    for compression in COMPRESSIONS:
        oci_dir = work / compression
        seconds[compression] = push(b, image, oci_dir, compression)
        layers = manifest_layers(oci_dir)
        if len(layers) != len(uncompressed):
            raise SystemExit(f"{image}: {len(uncompressed)} layers in the store, {len(layers)} pushed")
        for index, descriptor in enumerate(layers):
            compressed[index][compression] = int(str(descriptor["size"]))
            media[index][compression] = str(descriptor["mediaType"])
        timings.append(
            time_decompression(blob_path(oci_dir, layers[biggest]), compression, uncompressed[biggest][1])
        )
        shutil.rmtree(oci_dir)
    rows = [
        Layer(created_by, size, compressed[i], media[i]) for i, (created_by, size) in enumerate(uncompressed)
    ]
    return rows, seconds, timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="bench/build_image.py's cache folder")
    parser.add_argument("--image", required=True, help="the image in that store, e.g. localhost/x:latest")
    parser.add_argument("--work", type=Path, required=True, help="a folder for the oci: directories")
    parser.add_argument("--json", type=Path, required=True, help="write the measurements here")
    parser.add_argument("--rate", type=float, action="append", default=[], help="link rate, MB/s")
    args = parser.parse_args(argv)
    for tool in ("gzip", "zstd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install {tool})")
    b = Buildah(args.cache.resolve())
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        layers, push_seconds, timings = measure(b, args.image, work)
    finally:
        for compression in COMPRESSIONS:
            shutil.rmtree(work / compression, ignore_errors=True)
    totals = {c: sum(layer.compressed[c] for layer in layers) for c in COMPRESSIONS}
    uncompressed = sum(layer.uncompressed for layer in layers)
    rates = args.rate or [100.0, 500.0]
    result = {
        "image": args.image,
        "uncompressed": uncompressed,
        "compressed": totals,
        "push_seconds": push_seconds,
        "layers": [asdict(layer) for layer in layers],
        "decompression": [asdict(timing) for timing in timings],
        "download_seconds": {
            c: {str(rate): pull_seconds(totals[c], rate) for rate in rates} for c in COMPRESSIONS
        },
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"uncompressed {uncompressed / MB:,.1f} MB; "
        + "; ".join(f"{c} {totals[c] / MB:,.1f} MB" for c in COMPRESSIONS)
    )
    for timing in timings:
        print(
            f"decompress biggest layer ({timing.compression}): {timing.seconds:.1f} s, "
            f"{timing.bytes_per_second / MB:,.0f} MB/s of tar"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
