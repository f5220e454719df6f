"""Tables for bench/results/sampler.md: each run's measured phases next to what zr4's planner says now.

Why: the planner's goal is stated against measurements (every predicted phase peak at or above
the measured one, and within 10 % of it). The prediction is recomputed with the current
zr4.core.planner for the configuration that ran (level, block swap, prefetch, memory mode, card),
so a table made after a planner change shows the planner as it is. "Planned use" is the phase's
budget without ComfyUI's 400 MiB reserve (memory the plan keeps free, which no process uses);
"measured" is NVML device memory of the ComfyUI process (CUDA context + everything PyTorch's pool
holds + library workspaces), the number that must fit the card.

    python bench/sampler/report.py result-a.json [result-b.json ...]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from zr4.core.planner import GpuFacts, PlanRequest, TuningPlan, Workload, plan

# run.py phase -> the planner's phase of the same work (VAE encode has no phase of its own: the
# planner's decode budget covers it)
PLANNER_PHASE = {"pose": "pose", "text": "text", "image": "image", "sample": "sample", "decode": "decode"}
ORDER = ["input", "pose", "text", "image", "encode", "load", "sample", "decode", "output", "other"]


def planned_now(result: dict[str, Any]) -> TuningPlan:
    """The current planner on the run's card, forced to the configuration that ran."""
    ran = result["plan"]
    request = PlanRequest(
        gpu=GpuFacts(result["name"], int(result["card_mib"])),
        gguf_level=ran["gguf_level"],
        memory_mode=ran["memory_mode"],
        block_swap=int(ran["block_swap"]),
        workload=Workload(width=480, height=832, frames=81, steps=4),
    )
    return plan(request)


def _use(planned: TuningPlan, phase: str) -> int:
    return planned.phase_mib[phase] - planned.reserve_mib


def _text_on_gpu_use(result: dict[str, Any]) -> int:
    """The text phase's planned use with the encoder on the GPU (as the run had it), whatever the
    planner would now choose for that card: the phase's budget does not depend on the card."""
    big = dict(result, card_mib=1024 * 1024)
    return _use(planned_now(big), "text")


@functools.cache
def _run_module() -> Any:
    """run.py, loaded once: its summarize is what the device-side run used."""
    spec = importlib.util.spec_from_file_location("bench_sampler_run", Path(__file__).with_name("run.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """Phases and s/step recomputed from the per-node records with run.py's current summarize."""
    return dict(_run_module().summarize(result["nodes"], 4))


def phase_table(result: dict[str, Any], planned: TuningPlan) -> str:
    rows = [
        "| phase | planned use MiB | measured (NVML) MiB | planned / measured | reserved peak MiB "
        "| allocated peak MiB | s | host RSS peak MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    phases = result.get("phases", {})
    for name in ORDER:
        if name not in phases:
            continue
        p = phases[name]
        key = PLANNER_PHASE.get(name)
        use = _use(planned, key) if key else None
        if (
            key == "text"
            and result["plan"]["text_encoder_device"] == "gpu"
            and planned.text_encoder_device != "gpu"
        ):
            use = _text_on_gpu_use(result)
        ratio = f"{use / p['nvml_peak_mib']:.3f}" if use and p["nvml_peak_mib"] > 0 else "–"
        rows.append(
            f"| {name} | {f'{use:,}' if use is not None else '–'} | {p['nvml_peak_mib']:,.0f} | {ratio} | "
            f"{p['reserved_peak_mib']:,.0f} | {p['allocated_peak_mib']:,.0f} | {p['s']:.1f} | "
            f"{p['rss_peak_mib']:,.0f} |"
        )
    return "\n".join(rows)


def summary_row(result: dict[str, Any], planned: TuningPlan) -> str:
    phases = result.get("phases", {})
    peak = max((p["nvml_peak_mib"] for p in phases.values()), default=0)
    steps = result.get("step_s") or []
    per_step = f"{sum(steps) / len(steps):.2f}" if steps else "–"
    videos = result.get("videos") or []
    mp4 = (
        f"{videos[0]['frames']} frames, {videos[0]['bytes']:,} B" if videos and videos[0]["bytes"] else "none"
    )
    error = result.get("error")
    outcome = "OOM" if result.get("oom_in_log") else (json.dumps(error) if error else "ok")
    ran = result["plan"]
    return (
        f"| {result['name']} | {result['card_mib']:,} | {ran['gguf_level']} | {ran['block_swap']} "
        f"({ran['prefetch_blocks']}) | {ran['text_encoder_device']} | {peak:,.0f} | "
        f"{_use(planned, planned.peak_phase):,} | {'yes' if planned.fits else 'no'} | {per_step} | "
        f"{result.get('total_s', '–')} | {mp4} | {outcome} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    opts = parser.parse_args()
    results = [json.loads(p.read_text()) for p in opts.results]
    results = [r | _summary(r) for r in results]
    planned = [planned_now(r) for r in results]
    print(
        "| run | card MiB | level | swap (prefetch) | text encoder | measured peak MiB | planned use, peak "
        "phase MiB | plan fits the card | s/step | total s | mp4 | result |"
    )
    print("|---|--:|---|--:|---|--:|--:|---|--:|--:|---|---|")
    for r, p in zip(results, planned, strict=True):
        print(summary_row(r, p))
    for r, p in zip(results, planned, strict=True):
        print(f"\n{r['name']}:\n")
        print(phase_table(r, p))


if __name__ == "__main__":
    main()
