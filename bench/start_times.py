"""Boot times of `zr4 start` on this machine, and the time to the first video they add up to.

Usage, from the repository root:

    python bench/start_times.py [warm boots, default 5]
    python bench/start_times.py first-boot [--cap-kbps 45] [--runs 3] [--compare-with REV]
    python bench/start_times.py first-video --download-mbps R [--pull-gb G] [--links 100 500]

Warm boots: the same set-up as tests/image/test_start_sequence.py: the local Hub (8 small model
files, 300-600 KB each), the stand-in ComfyUI, no GPU (the planner's CPU plan), sync off. Measured
from spawning ``python -m zr4.image.start`` to the stand-in ComfyUI's first line of Python (its
recorded start time), and the start's own "ready to launch" figure (process start -> spawn).
Also the import time of the Typer CLI (``import zr4.cli.main``), which `zr4 start` through the
console script pays on top.

``first-boot``: the phases of a first boot with the same stand-ins, the Hub capping each connection
at ``--cap-kbps`` so the download lasts: from spawning the start to (1) the public port answering
(``/zr4/login``, which both sequences serve), (2) ComfyUI answering through the proxy
(``/system_stats`` with the token), (3) every model file in place. ``--compare-with REV`` runs the
same boots with the code of git revision REV (extracted with ``git archive``), e.g. the sequence
before the models were fetched in the background.

``first-video``: the time to the first video of a fresh pod, computed from the phases (see
bench/results/first-video.md): the recorded ComfyUI start and job of the real sampler run on an
H100 (bench/results/sampler/v2-q4km-16g.json), the default variant's bytes at each link speed (no
faster than ``--download-mbps``, what bench/bench_download.py measured zr4 reach at a per-connection
cap), and the image pull (``--pull-gb`` at the link speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "image")]

from test_start_sequence import Pod, stop, wait_for  # noqa: E402

from support.hub_server import FakeHub  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
PHASES = ("proxy answering", "ComfyUI ready", "models complete")
SAMPLER_RUN = ROOT / "bench" / "results" / "sampler" / "v2-q4km-16g.json"


def boot(pod: Pod) -> tuple[float, float]:
    (pod.state / "argv.json").unlink(missing_ok=True)
    began = time.time()
    process = pod.start()
    record = wait_for(pod.comfyui_record, 120, "ComfyUI")
    output = stop(process)
    ready = next(line for line in output.splitlines() if "ready to launch" in line)
    return record["started_at"] - began, float(ready.split("ready to launch ")[1].split(" s")[0])  # type: ignore[index,operator]


def warm_boots(warm_boots: int) -> None:
    with FakeHub() as hub, tempfile.TemporaryDirectory() as folder:
        pod = Pod(Path(folder), hub)
        cold, cold_ready = boot(pod)
        print(
            f"first boot (8 files from the local Hub): ComfyUI started after {cold:.2f} s (ready {cold_ready:.2f} s)"
        )
        warm = [boot(pod) for _ in range(warm_boots)]
        spawn = [w[0] for w in warm]
        ready = [w[1] for w in warm]
        print(
            f"warm boot x{warm_boots}: ComfyUI started after median {statistics.median(spawn):.2f} s "
            f"(min {min(spawn):.2f}, max {max(spawn):.2f}); ready to launch median {statistics.median(ready):.2f} s "
            f"(max {max(ready):.2f})"
        )
    imports = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import zr4.cli.main"], check=True)
        imports.append(time.perf_counter() - began)
    baseline = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import zr4.image.start"], check=True)
        baseline.append(time.perf_counter() - began)
    print(
        f"python -c 'import zr4.cli.main' (the Typer CLI): median {statistics.median(imports):.2f} s; "
        f"python -c 'import zr4.image.start': median {statistics.median(baseline):.2f} s"
    )


# --- first boot: proxy answering, ComfyUI ready, models complete ----------------------------------


def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def first_boot_phases(pod: Pod, hub: FakeHub, files: list[Path], env: dict[str, str]) -> dict[str, float]:
    """Seconds from spawning the start to each phase, polled from outside every 20 ms."""
    for folder in (pod.models, pod.state):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    pod.models.mkdir(parents=True)
    base = f"http://127.0.0.1:{pod.port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    checks = dict(
        zip(
            PHASES,
            (
                lambda: _answers(base + "/zr4/login"),
                lambda: _answers(base + "/system_stats", bearer),
                lambda: all(path.is_file() for path in files),
            ),
            strict=True,
        )
    )
    seen: dict[str, float] = {}
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "zr4.image.start"],
        env={**pod.env, **env, "ZR4_AUTH_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        while len(seen) < len(checks) and time.monotonic() - began < 300:
            for name, check in checks.items():
                if name not in seen and check():
                    seen[name] = time.monotonic() - began
            if process.poll() is not None:
                raise SystemExit(f"the start ended early:\n{process.stdout.read() if process.stdout else ''}")
            time.sleep(0.02)
    finally:
        stop(process)  # type: ignore[arg-type]
    return seen


def first_boot(cap_kbps: float, runs: int, compare_with: str | None) -> None:
    sequences: dict[str, dict[str, str]] = {"this checkout": {}}
    with tempfile.TemporaryDirectory() as folder:
        if compare_with:
            old = Path(folder) / "old"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", compare_with, "src", "data", "profiles", "templates"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            sequences[f"revision {compare_with}"] = {"PYTHONPATH": str(old / "src")}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sequences}
        with FakeHub() as hub:
            from zr4.image.models import load_manifest, plan_models, settings_from_env

            pod = Pod(Path(folder) / "pod", hub)
            # The boot moves each file to its final name only once it is verified.
            plan = plan_models(settings_from_env(pod.env), manifest=load_manifest(pod.manifest))
            files = [pod.models / planned.target.rel for planned in plan.files]
            size = sum(planned.target.size or 0 for planned in plan.files)
            hub.rate_bytes_per_s = cap_kbps * 1000
            for _ in range(runs):  # interleaved, so both see the same machine
                for name, env in sequences.items():
                    results[name].append(first_boot_phases(pod, hub, files, env))
    print(
        f"## first boot phases ({len(files)} model files, {size / 1e6:.1f} MB, from the local Hub, each "
        f"connection capped at {cap_kbps:g} KB/s; stand-in ComfyUI; {os.cpu_count()} CPUs; median of {runs})\n"
    )
    print("| sequence | proxy answering | ComfyUI ready | models complete | all runs (s, in that order) |")
    print("|---|--:|--:|--:|---|")
    for name, rows in results.items():
        medians = {phase: statistics.median(row[phase] for row in rows) for phase in PHASES}
        every = "; ".join(" / ".join(f"{row[phase]:.2f}" for phase in medians) for row in rows)
        print(
            f"| {name} | {medians['proxy answering']:.2f} s | {medians['ComfyUI ready']:.2f} s | "
            f"{medians['models complete']:.2f} s | {every} |"
        )


# --- the time to the first video -----------------------------------------------------------------

# The default variant of the 4080super profile (gguf Q4_K_M, bf16 text encoder, ONNX pose, LoRA):
# the sizes data/models.yaml gives (the Hub's listings: exact or estimated), and for the two files it
# gives none the figures bench/bench_download.py's warm start uses.
DEFAULT_VARIANT_BYTES = {
    "diffusion_models (Q4_K_M GGUF)": 10_900_000_000,
    "text_encoders (umt5-xxl bf16)": 11_400_000_000,
    "clip_vision (clip_vision_h)": 1_260_000_000,
    "vae (Wan 2.1 bf16)": 254_000_000,
    "detection (yolov10m)": 61_700_000,
    "detection (ViTPose-H model)": 1_000_000,
    "detection (ViTPose-H data)": 2_550_000_000,
    "loras (lightx2v step distill)": 700_000_000,
}


def first_video(download_mbps: float, pull_gb: float | None, links: list[float]) -> None:
    run = json.loads(SAMPLER_RUN.read_text())
    start_s, job_s = float(run["start_s"]), float(run["total_s"])
    steps = run["step_s"]
    size = sum(DEFAULT_VARIANT_BYTES.values())
    print(
        f"ComfyUI start S = {start_s:.1f} s, job J = {job_s:.1f} s ({statistics.median(steps):.2f} s/step, the "
        f"median step interval), from {SAMPLER_RUN.relative_to(ROOT)}; models {size / 1e9:.2f} GB, "
        f"downloaded no faster than {download_mbps:g} MB/s\n"
    )
    print("| link | pull P | download D | old: P + D + S + J | new: P + max(D, S) + J | shorter by |")
    print("|--:|--:|--:|--:|--:|--:|")
    for link in links:
        rate = min(link, download_mbps) * 1e6
        download = size / rate
        pull = (pull_gb * 1e9 / (link * 1e6)) if pull_gb is not None else 0.0
        old = pull + download + start_s + job_s
        new = pull + max(download, start_s) + job_s
        pull_text = f"{pull:.1f} s" if pull_gb is not None else "P (not set)"
        print(
            f"| {link:g} MB/s | {pull_text} | {download:.1f} s | {old:.1f} s | {new:.1f} s | "
            f"{old - new:.1f} s = {100 * (old - new) / old:.1f} % |"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("first-boot", "first-video"):
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("what", choices=["first-boot", "first-video"])
        parser.add_argument("--cap-kbps", type=float, default=45.0)
        parser.add_argument("--runs", type=int, default=3)
        parser.add_argument("--compare-with", default=None)
        parser.add_argument("--download-mbps", type=float, default=float("inf"))
        parser.add_argument("--pull-gb", type=float, default=None)
        parser.add_argument("--links", type=float, nargs="+", default=[100.0, 500.0])
        args = parser.parse_args()
        if args.what == "first-boot":
            first_boot(args.cap_kbps, args.runs, args.compare_with)
        else:
            first_video(args.download_mbps, args.pull_gb, args.links)
        return
    warm_boots(int(sys.argv[1]) if len(sys.argv) > 1 else 5)


if __name__ == "__main__":
    main()
