"""zr4's ComfyUI flag table and planner flags against the pinned ComfyUI's own argparse parser.

- the committed table is what data/gen_comfyui_flags.py makes from the pinned comfy/cli_args.py;
- every flag in the table, with a valid value, is accepted by the real parser, and values zr4
  rejects (bad choice, bad number, two flags of a group) are rejected by it too;
- every flag set the planner emits, for every bundled profile on every kind of machine and memory
  mode, is accepted by the real parser.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from support.real_comfyui import ComfySources, parse_many_with_real_argparse
from zr4.core.comfy_flags import FlagSpec, flag_set, split_args
from zr4.core.planner import MEMORY_MODES, GpuFacts, plan
from zr4.core.tune import request_from_profile
from zr4.paths import data_dir

FLAGS = flag_set("v0.7.0")
GPUS = (
    None,
    GpuFacts("NVIDIA GeForce RTX 4080 SUPER", 16376, 15800, "8.9"),
    GpuFacts("NVIDIA GeForce RTX 4090", 24564, 24000, "8.9"),
    GpuFacts("NVIDIA H100 80GB HBM3", 81559, 80000, "9.0"),
)


def test_table_is_what_the_generator_makes_from_the_pinned_sources(comfy_sources: ComfySources) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(data_dir() / "gen_comfyui_flags.py"),
            "--comfyui",
            str(comfy_sources.comfyui),
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert FLAGS.commit == comfy_sources.commits().get("ComfyUI", FLAGS.commit)


def _valid_vector(spec: FlagSpec, directory: Path) -> list[str]:
    if spec.takes in ("none", "optional", "any"):
        return [spec.name]
    if spec.choices:
        return [spec.name, spec.choices[0]]
    value = {"int": "1", "float": "1.5", "directory": str(directory)}.get(spec.value_type or "", "x")
    return [spec.name, value]


def test_every_flag_in_the_table_is_accepted_by_real_argparse(
    comfy_sources: ComfySources, tmp_path: Path
) -> None:
    vectors = [_valid_vector(spec, tmp_path) for spec in FLAGS.flags.values()]
    # and with the optional value given, where there is one to give
    vectors += [
        [spec.name, spec.choices[0] if spec.choices else "2"]
        for spec in FLAGS.flags.values()
        if spec.takes in ("optional", "any") and (spec.choices or spec.value_type in ("int", "float"))
    ]
    for vector in vectors:  # zr4 passes each on, except those its policy refuses
        assert bool(split_args(vector, FLAGS).rejected) == bool(FLAGS.flags[vector[0]].refuse), vector
    answers = parse_many_with_real_argparse(comfy_sources, vectors)
    refused = {" ".join(v): a for v, a in zip(vectors, answers, strict=True) if a is not None}
    assert not refused


@pytest.mark.parametrize(
    "args",
    [
        "--fast sometimes",
        "--port eighty",
        "--reserve-vram lots",
        "--lowvram --highvram",
        "--use-sage-attention --use-pytorch-cross-attention",
        "--cache-ram --cache-none",
        "--preview-method sometimes",
        "--lowvram=yes",
        "--medvram",
        "--user-directory /nonexistent/zr4",
    ],
)
def test_what_zr4_rejects_real_argparse_rejects(comfy_sources: ComfySources, args: str) -> None:
    vector = args.split()
    split = split_args(vector, FLAGS)
    zr4_rejects = bool(split.rejected)
    if not zr4_rejects:  # a path flag: accepted by the table, refused by the machine check
        assert FLAGS.flags[vector[0]].path == "directory"
    [answer] = parse_many_with_real_argparse(comfy_sources, [vector])
    assert answer is not None, f"ComfyUI's argparse accepted {args!r}"


def planned_flag_sets() -> dict[str, tuple[str, ...]]:
    from zr4.profile import bundled_profile_names, load_profile

    found: dict[str, tuple[str, ...]] = {}
    for name in bundled_profile_names():
        request, _ = request_from_profile(load_profile(name).model_dump(mode="json"))
        for gpu in GPUS:
            for mode in ("auto", *MEMORY_MODES):
                result = plan(replace(request, gpu=gpu, memory_mode=mode, block_swap=None))
                found.setdefault(" ".join(result.comfyui_args), result.comfyui_args)
    return found


def test_every_flag_set_the_planner_emits_is_accepted_by_real_argparse(comfy_sources: ComfySources) -> None:
    sets = planned_flag_sets()
    emitted = {flag for args in sets.values() for flag in args}
    assert {"--cpu", "--highvram", "--lowvram", "--disable-smart-memory"} <= emitted
    single = [[flag] for flag in sorted(FLAGS.emittable)]
    vectors = [list(args) for args in sets.values()] + single
    answers = parse_many_with_real_argparse(comfy_sources, vectors)
    refused = {" ".join(v): a for v, a in zip(vectors, answers, strict=True) if a is not None}
    assert not refused
