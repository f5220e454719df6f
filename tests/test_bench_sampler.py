"""The sampler benchmark's own logic (bench/sampler), without a GPU: what it queues and how it sums up.

The benchmark only means something if the workflow it queues is the one `zr4 start` installs for
the planned card and still queues on ComfyUI v0.7.0 after the pose nodes are taken out, and if
its per-phase numbers are read off the right nodes. The GPU part runs on the device machine and
its results live in bench/results/sampler.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from zr4.core.workflow import check_workflow, errors_only, load_object_info

SAMPLER = Path(__file__).resolve().parent.parent / "bench" / "sampler"
ROOT = SAMPLER.parent.parent


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_sampler_{name}", SAMPLER / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workflows() -> ModuleType:
    return _module("workflows")


@pytest.fixture(scope="module")
def run() -> ModuleType:
    return _module("run")


@pytest.fixture(scope="module")
def plans(workflows: ModuleType) -> dict[str, dict[str, Any]]:
    return {
        "16g": workflows.plan_json("4080super", None, None),
        "12g": workflows.plan_json("4080super", 12, None),
    }


def test_the_16_gib_workflow_is_the_rendered_one_with_the_planned_swap(
    workflows: ModuleType, plans: dict[str, dict[str, Any]]
) -> None:
    plan = plans["16g"]
    built = json.loads(workflows.workflow_for("4080super", plan))
    rendered = json.loads((ROOT / "docker" / "workflows" / "steadydancer-gguf.json").read_text())
    # The image carries the example's 35-block swap; the boot rebuilds it with the plan's (5 of 40,
    # one prefetched, on the 16,376 MiB a 4080 SUPER reports).
    assert (plan["block_swap"], plan["prefetch_blocks"]) == (5, 1)
    assert set(built) == set(rendered)
    for node_id, node in built.items():
        if node["class_type"] == "WanVideoBlockSwap":
            changed = {k: v for k, v in node["inputs"].items() if rendered[node_id]["inputs"][k] != v}
            assert changed == {"blocks_to_swap": 5}, changed  # the example prefetches 1 too
            continue
        assert node == rendered[node_id], node_id


def test_the_12_gib_workflow_carries_the_planned_swap(
    workflows: ModuleType, plans: dict[str, dict[str, Any]]
) -> None:
    plan = plans["12g"]
    built = json.loads(workflows.workflow_for("4080super", plan))
    swap = [n["inputs"] for n in built.values() if n["class_type"] == "WanVideoBlockSwap"]
    assert plan["block_swap"] > 0
    assert swap == [swap[0]] and swap[0]["blocks_to_swap"] == plan["block_swap"]
    assert swap[0]["prefetch_blocks"] == plan["prefetch_blocks"]


def test_without_pose_nodes_the_workflow_still_queues_on_v0_7_0(
    workflows: ModuleType, run: ModuleType, plans: dict[str, dict[str, Any]]
) -> None:
    for plan in plans.values():
        built = json.loads(workflows.workflow_for("4080super", plan))
        queued = run.apply_plan(built, plan)
        classes = {n["class_type"] for n in queued.values()}
        assert not classes & set(run.POSE_CLASSES)
        assert errors_only(check_workflow(queued, load_object_info())) == []
        pose_id = next(k for k, n in built.items() if n["class_type"] == "PoseDetectionOneToAllAnimation")
        driving = built[pose_id]["inputs"]["images"]
        rewired = [
            n
            for n in queued.values()
            if driving in n["inputs"].values() and n["class_type"] == "ImageResizeKJv2"
        ]
        assert rewired, "the pose output's consumer reads the driving frames"


def test_phases_take_the_maximum_peak_and_the_sampler_steps() -> None:
    summarize = _module("run").summarize
    records = [
        {
            "class_type": "WanVideoTextEncodeCached",
            "s": 9.5,
            "allocated_peak_mib": 11000.0,
            "reserved_peak_mib": 11100.0,
            "nvml_peak_mib": 11900.0,
            "rss_peak_mib": 30000.0,
            "steps": [],
        },
        {
            "class_type": "WanVideoModelLoader",
            "s": 20.0,
            "allocated_peak_mib": 0.0,
            "reserved_peak_mib": 0.0,
            "nvml_peak_mib": 600.0,
            "rss_peak_mib": 41000.0,
            "steps": [[1.0, 1, 1345], [2.0, 1345, 1345]],
        },
        {
            "class_type": "WanVideoSamplerFromSettings",
            "s": 40.0,
            "allocated_peak_mib": 14000.0,
            "reserved_peak_mib": 14500.0,
            "nvml_peak_mib": 15300.0,
            "rss_peak_mib": 42000.0,
            "steps": [[12.0, 1, 4], [19.0, 2, 4], [26.5, 3, 4], [34.0, 4, 4]],
        },
        {
            "class_type": "WanVideoSamplerSettings",
            "s": 0.1,
            "allocated_peak_mib": 0.0,
            "reserved_peak_mib": 0.0,
            "nvml_peak_mib": 0.0,
            "rss_peak_mib": 42000.0,
            "steps": [],
        },
    ]
    out = summarize(records, 4)
    assert out["phases"]["text"]["nvml_peak_mib"] == 11900.0
    assert out["phases"]["sample"]["reserved_peak_mib"] == 14500.0
    assert out["phases"]["load"]["rss_peak_mib"] == 41000.0
    assert out["step_s"] == [7.0, 7.5, 7.5]
    assert out["first_step_done_s"] == 12.0


def test_the_ballast_leaves_the_imitated_card_and_no_more() -> None:
    ballast_bytes = _module("capped").ballast_bytes
    mib = 1024 * 1024
    # The H100 of the first run: 81,559 MiB in NVML, 480 of them used idle, 81,079 in CUDA's total;
    # ComfyUI's context already holds 240 MiB when the ballast is taken.
    total, idle, context = 81079 * mib, 480 * mib, 240 * mib
    visible, ballast = ballast_bytes(16376, idle, total - context, total)
    assert visible == (16376 - 480) * mib
    assert total - context - ballast == visible - context  # free after the ballast
    assert ballast_bytes(200000, idle, total - context, total)[1] == 0  # a card bigger than the device
