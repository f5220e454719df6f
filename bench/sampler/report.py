"""Tables for bench/results/sampler.md from run.py results, next to what `zr4 plan` predicts.

Why: the planner's goal is stated against measurements (every predicted phase peak at or above
the measured one, and within 10 % of it); this prints both side by side so the check is
mechanical. Measured "GPU" is NVML device use above the idle baseline (CUDA context, cuBLAS
workspaces and everything PyTorch reserved), the number that must fit the card.

    python bench/sampler/report.py result-a.json [result-b.json ...] [--plan plan.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# run.py phase -> the planner's phase of the same work
PLANNER_PHASE = {
    "pose": "pose",
    "text": "text",
    "image": "image",
    "encode": "decode",
    "sample": "sample",
    "decode": "decode",
}
ORDER = ["input", "pose", "text", "image", "encode", "load", "sample", "decode", "output", "other"]


def phase_table(result: dict[str, Any], plan: dict[str, Any] | None) -> str:
    rows = [
        "| phase | planned MiB | GPU peak (NVML) MiB | reserved peak MiB | allocated peak MiB | planned / measured "
        "| s | host RSS peak MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    phases = result.get("phases", {})
    for name in ORDER:
        if name not in phases:
            continue
        p = phases[name]
        planned = plan["phase_mib"].get(PLANNER_PHASE.get(name, ""), None) if plan else None
        ratio = f"{planned / p['nvml_peak_mib']:.2f}" if planned and p["nvml_peak_mib"] > 0 else "–"
        rows.append(
            f"| {name} | {planned if planned is not None else '–'} | {p['nvml_peak_mib']:,.0f} | "
            f"{p['reserved_peak_mib']:,.0f} | {p['allocated_peak_mib']:,.0f} | {ratio} | {p['s']:.1f} | "
            f"{p['rss_peak_mib']:,.0f} |"
        )
    return "\n".join(rows)


def summary_row(result: dict[str, Any]) -> str:
    phases = result.get("phases", {})
    peak = max((p["nvml_peak_mib"] for p in phases.values()), default=0)
    steps = result.get("step_s") or []
    per_step = f"{sum(steps) / len(steps):.2f}" if steps else "–"
    videos = result.get("videos") or []
    mp4 = (
        f"{videos[0]['file']} ({videos[0]['frames']} frames, {videos[0]['bytes']:,} B)" if videos else "none"
    )
    error = result.get("error")
    return (
        f"| {result['name']} | {result['card_mib']:,} | {result['plan']['gguf_level']} | "
        f"{result['plan']['block_swap']} | {peak:,.0f} | {result['plan']['peak_mib']:,} | {per_step} | "
        f"{result.get('total_s', '–')} | {mp4} | {'OOM' if result.get('oom_in_log') else (error or 'ok')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument(
        "--plan", type=Path, help="a (newer) `zr4 plan --json` to compare instead of the run's"
    )
    opts = parser.parse_args()
    newer = json.loads(opts.plan.read_text()) if opts.plan else None
    results = [json.loads(p.read_text()) for p in opts.results]
    print(
        "| run | card MiB | level | swap | GPU peak MiB | planned peak MiB | s/step | total s | mp4 | result |"
    )
    print("|---|--:|---|--:|--:|--:|--:|--:|---|---|")
    for r in results:
        print(summary_row(r))
    for r in results:
        print(f"\n{r['name']}:\n")
        print(phase_table(r, newer or r["plan"]))


if __name__ == "__main__":
    main()
