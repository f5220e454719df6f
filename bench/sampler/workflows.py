"""Write the plan and the workflow `zr4 start` would use for one imitated card, for run.py.

Why: the benchmark must run zr4's own workflow, not a hand-edited copy. At boot `zr4 start` plans
the card (zr4.core.planner) and rebuilds the workflow with the planner's block swap, text
encoder device, VAE tiling and prefetch through ``workflow_spec_for_boot``; this does the same with the profile's default model files (as
``zr4 render`` names them), so the file the device machine queues is byte-for-byte what a pod
with that card would install.

    python bench/sampler/workflows.py --profile 4080super --vram-gib 16 --name q4km-16g --dest DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from zr4.core.workflow.build import build_steadydancer_workflow, workflow_json
from zr4.core.workflow.install import PlannedSettings, workflow_spec_for_boot
from zr4.profile import load_profile
from zr4.render.extras import default_targets


def plan_json(profile: str, vram_gib: float | None, gguf_level: str | None) -> dict[str, object]:
    """`zr4 plan --json` for the profile on a card of vram_gib (the CLI, so the flags are the user's)."""
    args = [
        sys.executable,
        "-c",
        "from zr4.cli.main import run; run()",
        "plan",
        "--profile",
        profile,
        "--json",
    ]
    if vram_gib is not None:
        args += ["--vram-gib", str(vram_gib)]
    if gguf_level is not None:
        args += ["--gguf-level", gguf_level]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    plan: dict[str, object] = json.loads(out)
    return plan


def workflow_for(profile_name: str, plan: dict[str, object]) -> str:
    """The workflow `zr4 start` installs for this plan (profile defaults, the plan's level and swap).

    The plan's workflow settings go through the ``ZR4_*`` variables `zr4 tune --env` exports and
    ``PlannedSettings.from_plan_env`` reads at boot, so they are read exactly as a pod reads them."""
    env = {
        "ZR4_TEXT_ENCODER_DEVICE": str(plan["text_encoder_device"]),
        "ZR4_POSE_DEVICE": str(plan["pose_device"]),
        "ZR4_VAE_TILING": "true" if plan["vae_tiling"] else "false",
        "ZR4_PREFETCH_BLOCKS": str(plan["prefetch_blocks"]),
        "ZR4_ATTENTION": str(plan["attention"]),
    }
    profile = load_profile(profile_name)
    model = profile.model.model_copy(update={"gguf_level": plan["gguf_level"], "variant": plan["variant"]})
    profile = profile.model_copy(update={"model": model})
    spec = workflow_spec_for_boot(
        profile.model_dump(mode="json"),
        default_targets(profile),
        str(plan["variant"]),
        int(str(plan["block_swap"])),
        PlannedSettings.from_plan_env(env),
    )
    return workflow_json(build_steadydancer_workflow(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--vram-gib", type=float)
    parser.add_argument("--gguf-level")
    parser.add_argument("--name", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    opts = parser.parse_args()
    plan = plan_json(opts.profile, opts.vram_gib, opts.gguf_level)
    if not plan.get("fits"):
        raise SystemExit(f"{opts.name}: the planner finds no fitting plan: {plan.get('error')}")
    opts.dest.mkdir(parents=True, exist_ok=True)
    (opts.dest / f"plan-{opts.name}.json").write_text(json.dumps(plan, indent=1) + "\n")
    (opts.dest / f"workflow-{opts.name}.json").write_text(workflow_for(opts.profile, plan))
    args = " ".join(str(a) for a in plan["comfyui_args"])  # type: ignore[attr-defined]
    print(
        f"{opts.name}: {plan['gguf_level']}, swap {plan['block_swap']}, peak {plan['peak_mib']} MiB, {args}"
    )


if __name__ == "__main__":
    main()
