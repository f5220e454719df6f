"""Checks 9-11: ComfyUI flags the context can emit, the workflow against object_info, and the
model/VRAM budget, each made to fail the way a naive image would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.validate_context import context_of, messages, render
from zr4.validate.check_budget import check_budget, disk_findings
from zr4.validate.check_flags import check_flags, collect_arguments
from zr4.validate.check_workflow import check_workflows

# A naive start.sh picks COMFYUI_ARGS by VRAM from other UIs' flags (not in comfy/cli_args.py).
SEED_START = """\
#!/usr/bin/env bash
set -euo pipefail
if [ -z "${COMFYUI_ARGS:-}" ]; then
    export COMFYUI_ARGS="--medvram --cpu-text-encoder --force-fp16"
fi
COMFYUI_ARGS="${COMFYUI_ARGS:-} --preview-method auto"
cd /opt/ComfyUI
# shellcheck disable=SC2086
exec python main.py --listen 0.0.0.0 --port 8188 --normalvram --lowvram ${COMFYUI_ARGS}
"""


# ---- check 9: flags -----------------------------------------------------------------------------


def test_rendered_context_emits_only_accepted_flags(ctx: Path) -> None:
    result = check_flags(context_of(ctx))
    assert result.status == "pass", messages(result)
    assert any(
        note.startswith("flags zr4 start passes on this GPU: --listen --port --output-directory")
        for note in result.notes
    )


def test_other_uis_comfyui_args_fail(ctx: Path) -> None:
    (ctx / "start.sh").write_text(SEED_START)
    report = messages(check_flags(context_of(ctx)))
    assert "start.sh:4: ComfyUI v0.7.0 rejects `--medvram` (ComfyUI v0.7.0 has no --medvram flag)" in report
    assert "start.sh:4: ComfyUI v0.7.0 rejects `--cpu-text-encoder`" in report
    # argparse's mutually exclusive VRAM group: --normalvram and --lowvram together make it exit.
    assert (
        "start.sh:9: ComfyUI v0.7.0 rejects `--lowvram` (--lowvram cannot be combined with --normalvram"
        in report
    )
    assert "--force-fp16" not in report and "--preview-method" not in report and "$" not in report


def test_flags_from_dockerfile_compose_and_runpod_template_are_collected(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "ENV DEBIAN_FRONTEND=noninteractive\nRUN",
            "ENV DEBIAN_FRONTEND=noninteractive\nENV COMFYUI_ARGS=--medvram\nRUN",
            1,
        )
    )
    compose = ctx / "docker-compose.yml"
    compose.write_text(
        compose.read_text().replace(
            "      GPU_TIER:",
            '      COMFYUI_ARGS: "${COMFYUI_ARGS:---highvram --cpu-text-encoder}"\n      GPU_TIER:',
            1,
        )
    )
    template = json.loads((ctx / "runpod-template.json").read_text())
    template["env"].append({"key": "COMFYUI_ARGS", "value": "--port eighty"})
    (ctx / "runpod-template.json").write_text(json.dumps(template))
    collected = {(file, tuple(args)) for file, _, args in collect_arguments(context_of(ctx))}
    assert ("Dockerfile", ("--medvram",)) in collected
    assert ("docker-compose.yml", ("--highvram", "--cpu-text-encoder")) in collected
    assert ("runpod-template.json", ("--port", "eighty")) in collected
    report = messages(check_flags(context_of(ctx)))
    assert "docker-compose.yml: ComfyUI v0.7.0 rejects `--cpu-text-encoder`" in report
    assert (
        "runpod-template.json: ComfyUI v0.7.0 rejects `--port eighty` (--port needs a whole number" in report
    )


# ---- check 10: workflow -------------------------------------------------------------------------


def test_rendered_workflow_passes(ctx: Path) -> None:
    result = check_workflows(context_of(ctx))
    assert result.status == "pass", messages(result)


def test_broken_workflow_fails_with_node_and_input(ctx: Path) -> None:
    path = ctx / "workflows" / "steadydancer-gguf.json"
    workflow = json.loads(path.read_text())
    sampler_id = next(k for k, n in workflow.items() if n["class_type"] == "WanVideoSamplerSettings")
    workflow[sampler_id]["inputs"]["steps"] = 0
    workflow[sampler_id]["inputs"]["scheduler"] = "not-a-scheduler"
    workflow["999"] = {"class_type": "SteadyDancerLoader", "inputs": {}}
    path.write_text(json.dumps(workflow))
    report = messages(check_workflows(context_of(ctx)))
    assert f"node {sampler_id} (WanVideoSamplerSettings) input 'steps': 0 is below the minimum 1" in report
    assert "input 'scheduler': 'not-a-scheduler' is not a valid choice" in report
    assert "node 999 (SteadyDancerLoader): unknown node type 'SteadyDancerLoader'" in report


def test_unrelated_node_pack_is_reported(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text()
    marker = "# ---- the files of this build context"
    seed = (  # a comfyui-nodes stage with an unrelated pack
        "WORKDIR /opt/ComfyUI/custom_nodes\n"
        "RUN git clone --depth 1 https://github.com/Enemyx-net/VibeVoice-ComfyUI.git && \\\n"
        "    cd VibeVoice-ComfyUI && pip install -r requirements.txt --no-cache-dir\n\n"
    )
    dockerfile.write_text(text.replace(marker, seed + marker, 1))
    line = (
        dockerfile.read_text()
        .splitlines()
        .index("RUN git clone --depth 1 https://github.com/Enemyx-net/VibeVoice-ComfyUI.git && \\")
        + 1
    )
    report = messages(check_workflows(context_of(ctx)))
    assert (
        f"Dockerfile:{line}: custom node pack VibeVoice-ComfyUI is installed but no workflow uses any of its nodes "
        "and it is not in the pinned node set (object_info)"
    ) in report
    # ComfyUI-GGUF is unused by the SteadyDancer workflow but the profile marks it optional.
    assert "ComfyUI-GGUF" not in report


def test_no_workflow_at_all(ctx: Path) -> None:
    shutil.rmtree(ctx / "workflows")
    assert "no workflows/*.json in the context" in messages(check_workflows(context_of(ctx)))


# ---- check 11: budget ---------------------------------------------------------------------------


def test_rendered_budget_passes_with_the_planners_numbers(ctx: Path) -> None:
    result = check_budget(context_of(ctx))
    assert result.status == "pass", messages(result)
    assert any(note.startswith("VRAM plan: peak") for note in result.notes)


def test_volume_too_small_for_the_models(tmp_path: Path) -> None:
    ctx = render(tmp_path, "runpod.volume_gb=10")
    report = messages(check_budget(context_of(ctx)))
    assert "runpod-template.json: the profile's models need" in report
    assert "but volumeInGb is 10 GB; raise runpod.volume_gb in the profile to at least" in report


def test_models_outside_the_volume_count_against_the_container_disk() -> None:
    template = {"volumeMountPath": "/workspace", "volumeInGb": 500, "containerDiskInGb": 20,
                "env": [{"key": "MODELS_DIR", "value": "/models"}]}  # fmt: skip
    findings, notes = disk_findings(30_000_000_000, template)
    assert "but containerDiskInGb is 20 GB; raise runpod.container_disk_gb" in findings[0].message
    assert notes[0] == "models 30.0 GB in /models (containerDiskInGb = 20)"


def test_variant_that_cannot_fit_the_card(tmp_path: Path) -> None:
    ctx = render(tmp_path, "model.variant=fp16", "memory.mode=full", "memory.block_swap=0")
    report = messages(check_budget(context_of(ctx)))
    assert (
        "profile.json: fp16 does not fit NVIDIA GeForce RTX 4080 SUPER (16 GiB) under memory mode full"
        in report
    )
