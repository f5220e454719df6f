"""Benchmark of zr4's model downloads against one local Hub + CDN server (tests/support/hub_server.py).

1. Throughput: `zr4 models download` vs `curl -L` for the same file (default 2 GiB), unthrottled
   and with the server capped at a link-like rate; zr4 verifies sha256 in-stream, curl does not
   (curl followed by `sha256sum` is shown too).
2. Resume: `zr4 models download` killed with SIGKILL at ~50 %, then rerun: bytes fetched again.
3. Warm start: `zr4 models download` with the bundled manifest and ~32 GB of sparse model files
   recorded as verified, the Hub unreachable.

    python bench/bench_download.py [--size-mib 2048] [--rate-mbps 200] [--workdir /tmp/zr4-bench]

Prints a Markdown report; everything it creates under --workdir is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from support.hub_server import FakeHub  # noqa: E402
from zr4.runtime.models import load_manifest, settings_from_env  # noqa: E402
from zr4.runtime.models.ensure import plan_models  # noqa: E402
from zr4.runtime.models.journal import Journal  # noqa: E402

MB = 1_000_000
# `python -m zr4.cli.models` = `zr4 models` without importing zr4's other command groups (boto3 ...).
ZR4_MODELS = [sys.executable, "-m", "zr4.cli.models"]
REPO = "bench/models"


def make_file(path: Path, size: int) -> None:
    """Incompressible-looking content written fast (a random block with a counter per block)."""
    block = os.urandom(4 << 20)
    with open(path, "wb") as handle:
        written, counter = 0, 0
        while written < size:
            chunk = counter.to_bytes(8, "little") + block[8 : min(len(block), size - written)]
            handle.write(chunk[: size - written])
            written += len(chunk[: size - written])
            counter += 1


def manifest_for(path: Path, name: str, size: int) -> Path:
    path.write_text(
        "version: 1\nfiles:\n"
        f"  - {{id: bench, role: bench, repo: {REPO}, path: {name}, folder: diffusion_models, size: {size}}}\n"
    )
    return path


def zr4_command(manifest: Path, models: Path) -> list[str]:
    return [*ZR4_MODELS, "download", "--manifest", str(manifest), "--models-dir", str(models)]


def timed(command: list[str], env: dict[str, str]) -> float:
    os.sync()  # start each run with no dirty pages from the previous one being written back
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def throughput(
    hub: FakeHub, work: Path, name: str, size: int, env: dict[str, str], runs: int
) -> dict[str, float]:
    url = f"{hub.endpoint}/{REPO}/resolve/main/{name}"
    manifest = manifest_for(work / "bench.yaml", name, size)
    out = work / "curl.out"
    curl, curl_hash, ours = [], [], []
    for _ in range(runs):
        curl.append(timed(["curl", "-sS", "-L", "-o", str(out), url], env))
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(out)], check=True, stdout=subprocess.DEVNULL)
        curl_hash.append(curl[-1] + time.perf_counter() - started)
        out.unlink()
        models = work / "models"
        ours.append(timed(zr4_command(manifest, models), env))
        shutil.rmtree(models)
    return {
        "curl": statistics.median(curl),
        "curl+sha256sum": statistics.median(curl_hash),
        "zr4": statistics.median(ours),
    }


def kill_at_half(hub: FakeHub, work: Path, name: str, size: int, env: dict[str, str]) -> dict[str, float]:
    manifest = manifest_for(work / "bench.yaml", name, size)
    models = work / "models"
    partial = models / "diffusion_models" / f"{name}.partial"
    before = hub.served(name)
    process = subprocess.Popen(
        zr4_command(manifest, models), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while process.poll() is None and (not partial.exists() or partial.stat().st_size < size // 2):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    hub.wait_idle()
    kept = partial.stat().st_size
    served_first = hub.served(name) - before
    started = time.perf_counter()
    subprocess.run(
        zr4_command(manifest, models),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rerun_s = time.perf_counter() - started
    served_total = hub.served(name) - before
    shutil.rmtree(models)
    return {
        "killed_at": kept / size,
        "served_before_kill": served_first,
        "rerun_fetched": served_total - served_first,
        "refetched": served_total - size,
        "rerun_s": rerun_s,
    }


def warm_start(work: Path, runs: int) -> dict[str, float]:
    """Sparse files at the bundled manifest's paths (fp8 variant), recorded as verified."""
    models = work / "warm"
    sizes = {
        # fp8 size from the manifest (the Hub's file listing); the others: the manifest's size estimates.
        "steadydancer-fp8": 16_410_198_058,
        "text-encoder-bf16": 11_400_000_000,
        "clip-vision-h": 1_260_000_000,
        "vae-bf16": 254_000_000,
        "pose-yolov10m": 61_700_000,
        "pose-vitpose-h-model": 1_000_000,
        "pose-vitpose-h-data": 2_550_000_000,
        "lightx2v-step-distill-lora": 700_000_000,
    }
    manifest = load_manifest()
    journal = Journal(models)
    total = 0
    for entry in manifest.entries:
        if entry.id not in sizes:
            continue
        dest = models / entry.folder / entry.dest_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as handle:
            handle.truncate(sizes[entry.id])
        total += sizes[entry.id]
        # What a verified download records (the sha256 of a sparse file is not worth 90 s of hashing here).
        journal.record(models, f"{entry.folder}/{entry.dest_name}", "0" * 64, entry.source, None)
    env = dict(
        os.environ, STEADYDANCER_VARIANT="fp8", MODELS_DIR=str(models), HF_ENDPOINT="http://127.0.0.1:9"
    )
    cli = [timed([*ZR4_MODELS, "download"], env) for _ in range(runs)]
    console = shutil.which("zr4")
    full_cli = (
        [timed([console, "models", "download"], env) for _ in range(runs)] if console else [float("nan")]
    )
    library = []
    for _ in range(runs):
        started = time.perf_counter()
        plan = plan_models(settings_from_env(env))
        library.append(time.perf_counter() - started)
        assert plan.complete, [p.status for p in plan.files]
    startup = [timed([*ZR4_MODELS, "--help"], env) for _ in range(runs)]
    shutil.rmtree(models)
    return {
        "bytes": total,
        "cli_s": statistics.median(cli),
        "console_s": statistics.median(full_cli),
        "library_s": statistics.median(library),
        "startup_s": statistics.median(startup),
    }


def hub_version() -> str:
    import huggingface_hub

    return str(huggingface_hub.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument(
        "--rate-mbps", type=float, default=200.0, help="link-like cap for the second throughput run (MB/s)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zr4-bench")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib << 20
    name = "bench.safetensors"
    source = work / "source.bin"
    try:
        make_file(source, size)
        os.sync()
        hub = FakeHub()
        hub.add_file(REPO, name, file=source)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "STEADYDANCER_", "MODELS_DIR", "DRY_RUN"))
        }
        with hub:
            env["HF_ENDPOINT"] = hub.endpoint
            fast = throughput(hub, work, name, size, env, args.runs)
            kill = kill_at_half(hub, work, name, size, env)
            hub.rate_bytes_per_s = args.rate_mbps * MB
            capped = throughput(hub, work, name, size, env, 1)
            hub.rate_bytes_per_s = None
        source.unlink()
        warm = warm_start(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(seconds: float) -> str:
        return f"{size / seconds / MB:.0f} MB/s ({seconds:.2f} s)"

    import hashlib
    import platform

    print(
        f"## zr4 models download benchmark ({args.size_mib} MiB file, {os.cpu_count()} CPUs, {platform.node()})\n"
    )
    print(
        f"load average at start: {load_before:.1f}; python {platform.python_version()}; huggingface_hub {hub_version()}"
    )
    blob = os.urandom(64 << 20)
    started = time.perf_counter()
    hashlib.sha256(blob).hexdigest()
    print(
        f"sha256 speed of this CPU (hashlib): {len(blob) / (time.perf_counter() - started) / MB:.0f} MB/s\n"
    )
    print("| run | curl -L | curl + sha256sum | zr4 models download (sha256 in-stream) | zr4 / curl |")
    print("|---|---|---|---|---|")
    for label, row in (
        ("unthrottled local server", fast),
        (f"server capped at {args.rate_mbps:.0f} MB/s", capped),
    ):
        print(
            f"| {label} | {rate(row['curl'])} | {rate(row['curl+sha256sum'])} | {rate(row['zr4'])} | {row['curl'] / row['zr4']:.2f}x |"
        )
    print()
    print(
        f"Kill -9 at {kill['killed_at'] * 100:.1f} %: rerun fetched {kill['rerun_fetched'] / MB:.1f} MB in {kill['rerun_s']:.2f} s; "
        f"bytes fetched twice {kill['refetched'] / MB:.2f} MB = {100 * kill['refetched'] / size:.3f} % of the file "
        "(sent by the server into socket buffers before the kill, never written)."
    )
    print()
    print(
        f"Warm start with {warm['bytes'] / 1e9:.1f} GB of model files present (sparse), Hub unreachable: "
        f"`python -m zr4.cli.models download` {warm['cli_s']:.2f} s wall (Python + CLI start-up alone, `--help`: "
        f"{warm['startup_s']:.2f} s); `zr4 models download` (console script, loads every command group) "
        f"{warm['console_s']:.2f} s; the check itself (`plan_models`, in-process) {warm['library_s'] * 1000:.1f} ms."
    )


if __name__ == "__main__":
    main()
