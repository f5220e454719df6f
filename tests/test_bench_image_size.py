"""bench/image_size.py reads compressed layer sizes from the OCI layout `buildah push oci:` writes, and
times the real gzip/zstd tools, so bench/results/image-size.md's numbers come from what a pull fetches.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


image_size = _load("image_size")


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def test_layer_sizes_come_from_the_manifest_of_the_oci_layout(tmp_path: Path) -> None:
    layers = [gzip.compress(b"a" * 1000), gzip.compress(bytes(range(256)) * 40)]
    descriptors = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": _blob(tmp_path, layer),
            "size": len(layer),
        }
        for layer in layers
    ]
    manifest = json.dumps({"schemaVersion": 2, "layers": descriptors}).encode()
    index = {"schemaVersion": 2, "manifests": [{"digest": _blob(tmp_path, manifest), "size": len(manifest)}]}
    (tmp_path / "index.json").write_text(json.dumps(index))

    found = image_size.manifest_layers(tmp_path)

    assert [d["size"] for d in found] == [len(layer) for layer in layers]
    assert image_size.blob_path(tmp_path, found[1]).read_bytes() == layers[1]
    (tmp_path / "index.json").write_text(json.dumps({"manifests": index["manifests"] * 2}))
    with pytest.raises(SystemExit, match="expected one image"):
        image_size.manifest_layers(tmp_path)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_decompression_is_timed_with_the_real_tool(tmp_path: Path, compression: str) -> None:
    if shutil.which(compression) is None:
        pytest.skip(f"{compression} is not installed")
    tar = tmp_path / "layer.tar"
    tar.write_bytes(b"zr4 layer " * 100_000)
    subprocess.run([compression, "-q", "-k", str(tar)], check=True)
    blob = tmp_path / ("layer.tar.gz" if compression == "gzip" else "layer.tar.zst")

    timing = image_size.time_decompression(blob, compression, tar.stat().st_size)

    assert timing.compression == compression and timing.seconds > 0
    assert timing.bytes_per_second == pytest.approx(tar.stat().st_size / timing.seconds)
    # A file that is not of that compression fails loudly, never as a fast "decompression".
    with pytest.raises(subprocess.CalledProcessError):
        image_size.time_decompression(tar, compression, tar.stat().st_size)


def test_download_seconds_are_bytes_over_the_link_rate() -> None:
    assert image_size.pull_seconds(5_000_000_000, 100) == pytest.approx(50.0)
    assert image_size.pull_seconds(5_000_000_000, 500) == pytest.approx(10.0)
