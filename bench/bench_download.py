"""Benchmark of zr4's model downloads against one local Hub + CDN server (tests/support/hub_server.py).

All in one run, the tools interleaved (curl, zr4, curl, zr4, ...) and each repeated --runs times:
1. Unthrottled loopback: `zr4 models download` (sha256 verified in-stream) vs `curl -L`.
2. Server capping each connection at --cap-mbps (the Hub's CDN limits each connection):
   `zr4 models download` (parallel byte ranges) vs `curl -L` vs `hf download` (huggingface_hub's
   own CLI, with whatever accelerations it has installed).
3. Resume: `zr4 models download` killed with SIGKILL at ~50 % with several ranges in flight, then
   rerun: bytes fetched twice.
4. Warm start: `zr4 models download` (the console script) with the bundled manifest and ~32 GB of
   sparse model files recorded as verified, the Hub unreachable.

    python bench/bench_download.py [--size-mib 2048] [--cap-mbps 50] [--runs 3] [--workdir /tmp/zr4-bench]

``default-variant``: the files of the 4080super profile's default variant (the sizes
bench/start_times.py's DEFAULT_VARIANT_BYTES lists, 27.1 GB, divided by ``--scale``) fetched by
`zr4 models download` (3 files at a time, 8 ranges each, in the order a job uses them) from the
same server capping each connection at ``--cap-mbps``: the aggregate rate zr4 reaches, which the
time to the first video of bench/results/first-video.md takes as the ceiling of a link.

    python bench/bench_download.py default-variant [--scale 4] [--cap-mbps 50] [--runs 2]

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
sys.path.insert(0, str(REPO_ROOT / "bench"))

from support.hub_server import FakeHub  # noqa: E402
from zr4.image.models import load_manifest, settings_from_env  # noqa: E402
from zr4.image.models.download import Source, done_spans, read_sidecar  # noqa: E402
from zr4.image.models.ensure import plan_models  # noqa: E402
from zr4.image.models.journal import Journal  # noqa: E402

MB = 1_000_000
# `zr4 models` through the CLI entry point (it imports only the models command group).
ZR4_MODELS = [sys.executable, "-m", "zr4.cli.main", "models"]
HF_CLI = [
    sys.executable,
    "-c",
    "import sys; from huggingface_hub.cli.hf import main; sys.argv[0] = 'hf'; main()",
]
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


def cpu_of(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, user+sys CPU of the child) for one run."""
    os.sync()
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:5]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    after = os.times()
    return wall, (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def throughput(
    hub: FakeHub, work: Path, name: str, size: int, env: dict[str, str], runs: int, with_hf: bool
) -> dict[str, list[tuple[float, float]]]:
    """Interleaved runs of each tool; {tool: [(wall, cpu), ...]}."""
    url = f"{hub.endpoint}/{REPO}/resolve/main/{name}"
    manifest = manifest_for(work / "bench.yaml", name, size)
    out = work / "curl.out"
    results: dict[str, list[tuple[float, float]]] = {"curl": [], "curl + fsync": [], "zr4": []}
    if with_hf:
        results["hf download"] = []
    for _ in range(runs):
        wall, cpu = cpu_of(["curl", "-sS", "-L", "-o", str(out), url], env)
        results["curl"].append((wall, cpu))
        # zr4 fsyncs before it moves a verified file into place (it must survive a power loss);
        # curl leaves its bytes in the page cache. The same durability for curl's file:
        started = time.perf_counter()
        descriptor = os.open(out, os.O_RDONLY)
        os.fsync(descriptor)
        os.close(descriptor)
        results["curl + fsync"].append((wall + time.perf_counter() - started, cpu))
        out.unlink()
        models = work / "models"
        results["zr4"].append(cpu_of(zr4_command(manifest, models), env))
        shutil.rmtree(models)
        if with_hf:
            local = work / "hf"
            hf_env = dict(env, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(work / "hf-home"))
            results["hf download"].append(
                cpu_of([*HF_CLI, "download", REPO, name, "--local-dir", str(local)], hf_env)
            )
            shutil.rmtree(local)
            shutil.rmtree(work / "hf-home", ignore_errors=True)
    return results


def kill_at_half(hub: FakeHub, work: Path, name: str, size: int, env: dict[str, str]) -> dict[str, float]:
    """SIGKILL once the span log says half the file is written (several ranges in flight), then rerun."""
    manifest = manifest_for(work / "bench.yaml", name, size)
    models = work / "models"
    dest = models / "diffusion_models" / name
    before = hub.served(name)
    process = subprocess.Popen(
        zr4_command(manifest, models), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    spans: list[tuple[int, int]] = []
    while process.poll() is None:
        record = read_sidecar(dest)
        if record is not None:
            spans = done_spans(
                dest, Source("", {}, record["size"], record["sha256"], identity=record["identity"])
            )
            if sum(e - s for s, e in spans) >= size // 2:
                break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    hub.wait_idle()
    kept = sum(e - s for s, e in spans)
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
        "ranges": len(spans),
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
    # The console script where zr4 is installed; the same entry point through -m on a bare checkout.
    console = shutil.which("zr4") or str(Path(sys.executable).with_name("zr4"))
    entry = [console] if Path(console).exists() else [sys.executable, "-m", "zr4.cli.main"]
    cli = [timed([*entry, "models", "download"], env) for _ in range(runs)]
    library = []
    for _ in range(runs):
        started = time.perf_counter()
        plan = plan_models(settings_from_env(env))
        library.append(time.perf_counter() - started)
        assert plan.complete, [p.status for p in plan.files]
    bare = [timed([sys.executable, "-c", "pass"], env) for _ in range(runs)]
    shutil.rmtree(models)
    return {
        "bytes": total,
        "console_s": statistics.median(cli),
        "library_s": statistics.median(library),
        "python_s": statistics.median(bare),
    }


def default_variant(work: Path, scale: float, cap_mbps: float, runs: int) -> None:
    """`zr4 models download` of the default variant's file mix (scaled) at a per-connection cap."""
    from start_times import DEFAULT_VARIANT_BYTES

    roles = ("steadydancer", "text_encoder", "clip_vision", "vae", "pose_detector", "pose", "pose", "lora")
    hub = FakeHub()
    lines = ["version: 1", "files:"]
    total = 0
    for index, ((label, size), role) in enumerate(zip(DEFAULT_VARIANT_BYTES.items(), roles, strict=True)):
        scaled = int(size / scale)
        source = work / f"source-{index}.bin"
        make_file(source, scaled)
        name = f"file-{index}.safetensors"
        hub.add_file(REPO, name, file=source)
        total += scaled
        lines.append(
            f"  - {{id: f{index}, role: {role}, repo: {REPO}, path: {name}, folder: {label.split()[0]}, size: {scaled}}}"
        )
    manifest = work / "default-variant.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    os.sync()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STEADYDANCER_", "MODELS_DIR"))}
    walls = []
    with hub:
        env["HF_ENDPOINT"] = hub.endpoint
        hub.rate_bytes_per_s = cap_mbps * MB
        for _ in range(runs):
            models = work / "models"
            walls.append(timed(zr4_command(manifest, models), env))
            shutil.rmtree(models)
    wall = statistics.median(walls)
    print(
        f"## default variant at a per-connection cap ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n\n"
        f"{len(DEFAULT_VARIANT_BYTES)} files, {total / 1e9:.2f} GB (the default variant's 27.1 GB / {scale:g}), "
        f"each connection capped at {cap_mbps:g} MB/s: `zr4 models download` median **{wall:.1f} s** of {runs} "
        f"({', '.join(f'{w:.1f}' for w in walls)}) = **{total / wall / MB:.0f} MB/s** aggregate, sha256 verified."
    )


def hub_version() -> str:
    import huggingface_hub

    return str(huggingface_hub.__version__)


def _median(rows: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "default-variant":
        parser = argparse.ArgumentParser(description="the default variant's files at a per-connection cap")
        parser.add_argument("what")
        parser.add_argument("--scale", type=float, default=4.0)
        parser.add_argument("--cap-mbps", type=float, default=50.0)
        parser.add_argument("--runs", type=int, default=2)
        parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zr4-bench")
        args = parser.parse_args()
        args.workdir.mkdir(parents=True, exist_ok=True)
        try:
            default_variant(args.workdir, args.scale, args.cap_mbps, args.runs)
        finally:
            shutil.rmtree(args.workdir, ignore_errors=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument(
        "--cap-mbps", type=float, default=50.0, help="per-connection cap of the second throughput run (MB/s)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zr4-bench")
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
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
            fast = throughput(hub, work, name, size, env, args.runs, with_hf=False)
            loads.append(os.getloadavg()[0])
            hub.rate_bytes_per_s = args.cap_mbps * MB
            capped = throughput(hub, work, name, size, env, args.runs, with_hf=True)
            loads.append(os.getloadavg()[0])
            hub.rate_bytes_per_s = args.cap_mbps * MB
            kill = kill_at_half(hub, work, name, size, env)
            hub.rate_bytes_per_s = None
        source.unlink()
        warm = warm_start(work, args.runs)
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(row: tuple[float, float]) -> str:
        return f"{size / row[0] / MB:.0f} MB/s ({row[0]:.2f} s, CPU {row[1]:.2f} s)"

    import hashlib
    import platform

    print(
        f"## zr4 models download benchmark ({args.size_mib} MiB file, {os.cpu_count()} CPUs, {platform.node()})\n"
    )
    print(
        f"load average (1 min) at start / after each part: {' / '.join(f'{x:.1f}' for x in loads)}; "
        f"python {platform.python_version()}; huggingface_hub {hub_version()}; hf_xet "
        f"{'installed' if _has('hf_xet') else 'not installed'} (used only for Xet-backed repositories)"
    )
    blob = os.urandom(64 << 20)
    started = time.perf_counter()
    hashlib.sha256(blob).hexdigest()
    print(
        f"sha256 speed of this CPU (hashlib): {len(blob) / (time.perf_counter() - started) / MB:.0f} MB/s\n"
    )
    print(f"Medians of {args.runs} interleaved runs (wall; CPU = user+sys of the process).\n")
    print(
        "| run | curl -L | curl -L, then fsync | hf download | zr4 models download (sha256 in-stream, "
        "fsync) | zr4 vs curl | zr4 vs curl + fsync | zr4 vs hf |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, rows in (
        ("unthrottled loopback server", fast),
        (f"server capping each connection at {args.cap_mbps:.0f} MB/s", capped),
    ):
        curl, zr4 = _median(rows["curl"]), _median(rows["zr4"])
        durable = _median(rows["curl + fsync"])
        hf = _median(rows["hf download"]) if "hf download" in rows else None
        print(
            f"| {label} | {rate(curl)} | {size / durable[0] / MB:.0f} MB/s ({durable[0]:.2f} s) | "
            f"{rate(hf) if hf else '–'} | {rate(zr4)} | **{curl[0] / zr4[0]:.2f}x** | "
            f"{durable[0] / zr4[0]:.2f}x | {f'**{hf[0] / zr4[0]:.2f}x**' if hf else '–'} |"
        )
    print()
    print(
        "All runs (wall seconds, in order): "
        + "; ".join(
            f"{label} {tool}: {', '.join(f'{w:.2f}' for w, _ in rows[tool])}"
            for label, group in (("loopback", fast), ("capped", capped))
            for tool, rows in [(t, group) for t in group]
        )
    )
    print()
    print(
        f"Kill -9 at {kill['killed_at'] * 100:.1f} % with {kill['ranges']:.0f} ranges written (capped server): "
        f"rerun fetched {kill['rerun_fetched'] / MB:.1f} MB in {kill['rerun_s']:.2f} s; "
        f"bytes fetched twice {kill['refetched'] / MB:.2f} MB = **{100 * kill['refetched'] / size:.3f} %** of the file "
        "(sent by the server into socket buffers before the kill, never written)."
    )
    print()
    print(
        f"Warm start with {warm['bytes'] / 1e9:.1f} GB of model files present (sparse), Hub unreachable: "
        f"`zr4 models download` (console script) **{warm['console_s']:.2f} s** wall; a bare `python -c pass` "
        f"{warm['python_s']:.2f} s; the check itself (`plan_models`, in-process) {warm['library_s'] * 1000:.1f} ms."
    )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
