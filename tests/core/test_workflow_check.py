"""The workflow checker against the real ComfyUI v0.7.0 object_info: each kind of mistake it names."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json

import pytest

from zr4.core.workflow import (
    NODE_IDS,
    WorkflowProblem,
    WorkflowSpec,
    build_steadydancer_workflow,
    check_workflow,
    default_diffusion_model_file,
    errors_only,
    load_object_info,
)
from zr4.errors import Zr4Error
from zr4.paths import data_dir


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info()


@pytest.fixture(scope="module")
def pristine() -> dict:
    return build_steadydancer_workflow(
        WorkflowSpec(variant="fp8", diffusion_model_file=default_diffusion_model_file("fp8"))
    )


@pytest.fixture
def workflow(pristine) -> dict:
    return copy.deepcopy(pristine)


def inputs(workflow: dict, role: str) -> dict:
    return workflow[NODE_IDS[role]]["inputs"]


def only_error(problems: list[WorkflowProblem]) -> WorkflowProblem:
    errors = errors_only(problems)
    assert len(errors) == 1, [str(p) for p in problems]
    return errors[0]


def test_the_built_workflow_is_clean(object_info, workflow):
    assert check_workflow(workflow, object_info) == []


def test_unknown_node_type(object_info, workflow):
    workflow[NODE_IDS["model"]]["class_type"] = "WanVideoSteadyDancerLoader"

    problem = only_error(check_workflow(workflow, object_info))

    assert (problem.node_id, problem.class_type, problem.input_name) == (
        "2",
        "WanVideoSteadyDancerLoader",
        None,
    )
    assert "unknown node type 'WanVideoSteadyDancerLoader'" in problem.message
    assert "add the node pack that provides it" in problem.message


def test_a_medvram_style_bogus_value_in_a_combo(object_info, workflow):
    inputs(workflow, "model")["attention_mode"] = "--medvram"

    problem = only_error(check_workflow(workflow, object_info))

    assert (problem.class_type, problem.input_name) == ("WanVideoModelLoader", "attention_mode")
    assert problem.message.startswith(
        "'--medvram' is not a valid choice; choose one of: 'sdpa', 'flash_attn_2'"
    )


def test_a_long_choice_list_is_shortened_in_the_message(object_info, workflow):
    inputs(workflow, "sampler_settings")["scheduler"] = "karras"

    problem = only_error(check_workflow(workflow, object_info))

    assert "'unipc'" in problem.message
    assert "(20 in all)" in problem.message


@pytest.mark.parametrize(
    ("role", "name", "value", "message"),
    [
        ("block_swap", "blocks_to_swap", 49, "49 is above the maximum 48"),
        ("block_swap", "blocks_to_swap", -1, "-1 is below the minimum 0"),
        ("i2v", "noise_aug_strength", 10.5, "10.5 is above the maximum 10.0"),
        ("sampler_settings", "steps", 0, "0 is below the minimum 1"),
    ],
)
def test_numbers_out_of_range(object_info, workflow, role, name, value, message):
    inputs(workflow, role)[name] = value

    problem = only_error(check_workflow(workflow, object_info))

    assert (problem.node_id, problem.input_name, problem.message) == (NODE_IDS[role], name, message)


@pytest.mark.parametrize(
    ("role", "name", "value", "message"),
    [
        ("sampler_settings", "steps", "4", "must be an integer, got '4'"),
        ("sampler_settings", "steps", 4.0, "must be an integer, got 4.0"),
        ("sampler_settings", "cfg", True, "must be a finite number, got True"),
        ("sampler_settings", "cfg", float("nan"), "must be a finite number, got nan"),
        ("sampler_settings", "force_offload", "true", "must be true or false, got 'true'"),
        ("text", "positive_prompt", 5, "must be a string, got 5"),
        (
            "sampler_settings",
            "model",
            "Wan21.safetensors",
            "takes a connection from a node output of type WANVIDEOMODEL",
        ),
    ],
)
def test_values_of_the_wrong_kind(object_info, workflow, role, name, value, message):
    inputs(workflow, role)[name] = value

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.input_name == name
    assert message in problem.message


def test_an_integer_is_a_valid_float(object_info, workflow):
    inputs(workflow, "sampler_settings")["cfg"] = 1

    assert check_workflow(workflow, object_info) == []


def test_missing_required_input(object_info, workflow):
    del inputs(workflow, "model")["base_precision"]
    del inputs(workflow, "decode")["vae"]

    problems = check_workflow(workflow, object_info)

    assert [(p.node_id, p.input_name) for p in problems] == [("2", "base_precision"), ("26", "vae")]
    assert problems[0].message == "required input is missing: set a value or connect a COMBO output"
    assert problems[1].message == "required input is missing: set a value or connect a WANVAE output"


def test_a_missing_optional_input_is_fine(object_info, workflow):
    del inputs(workflow, "model")["attention_mode"]

    assert check_workflow(workflow, object_info) == []


def test_dangling_link(object_info, workflow):
    inputs(workflow, "sampler_settings")["model"] = ["99", 0]

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.input_name == "model"
    assert problem.message == "is connected to node '99', which is not in the workflow"


def test_link_to_an_output_the_node_does_not_have(object_info, workflow):
    inputs(workflow, "i2v")["num_frames"] = [NODE_IDS["video_size"], 4]

    problem = only_error(check_workflow(workflow, object_info))

    assert (
        problem.message
        == "is connected to output 4 of node 11 (GetImageSizeAndCount), which has outputs 0..3"
    )


def test_link_whose_output_type_the_input_does_not_take(object_info, workflow):
    inputs(workflow, "decode")["vae"] = [NODE_IDS["model"], 0]

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.message == (
        "is connected to output 0 ('model') of node 2 (WanVideoModelLoader), which gives WANVIDEOMODEL; "
        "this input takes WANVAE"
    )


def test_malformed_link(object_info, workflow):
    inputs(workflow, "decode")["vae"] = [7, 0]

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.message.startswith("bad link [7, 0]")


def test_unknown_input_name_is_a_warning_not_an_error(object_info, workflow):
    inputs(workflow, "block_swap")["blocks_to_swapp"] = 35

    problems = check_workflow(workflow, object_info)

    assert errors_only(problems) == []
    assert [(p.severity, p.input_name) for p in problems] == [("warning", "blocks_to_swapp")]
    assert "ComfyUI ignores it" in problems[0].message
    assert "blocks_to_swap" in problems[0].message


def test_videohelpersuite_format_widgets_are_known_and_checked(object_info, workflow):
    inputs(workflow, "save")["crf"] = 101
    inputs(workflow, "save")["pix_fmt"] = "rgb24"

    problems = check_workflow(workflow, object_info)

    assert [(p.input_name, p.message) for p in problems] == [
        ("pix_fmt", "'rgb24' is not a valid choice; choose one of: 'yuv420p', 'yuv420p10le'"),
        ("crf", "101 is above the maximum 100"),
    ]


def test_format_widgets_of_another_format_are_unknown(object_info, workflow):
    inputs(workflow, "save")["format"] = "image/gif"

    problems = check_workflow(workflow, object_info)

    assert errors_only(problems) == []
    assert {p.input_name for p in problems} == {"crf", "pix_fmt", "save_metadata", "trim_to_audio"}


def test_file_combos_take_any_file_name_but_not_an_empty_one(object_info, workflow):
    # object_info's model lists are empty and LoadImage lists only example.png.
    inputs(workflow, "model")["model"] = "anything/SteadyDancer-Q3_K_M.gguf"
    inputs(workflow, "image")["image"] = "dancer.png"
    assert check_workflow(workflow, object_info) == []

    inputs(workflow, "lora")["lora"] = ""
    problem = only_error(check_workflow(workflow, object_info))
    assert (problem.input_name, problem.message) == (
        "lora",
        "must be a file name (a non-empty string), got ''",
    )


def test_v3_combo_choices_are_read_from_options(object_info):
    workflow = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "2": {
            "class_type": "LatentConcat",
            "inputs": {"samples1": ["1", 0], "samples2": ["1", 0], "dim": "z"},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }

    problems = check_workflow(workflow, object_info)

    assert [(p.node_id, p.input_name, p.message) for p in problems] == [
        ("2", "dim", "'z' is not a valid choice; choose one of: 'x', '-x', 'y', '-y', 't', '-t'"),
        (
            "3",
            "images",
            "is connected to output 0 ('LATENT') of node 1 (EmptyLatentImage), which gives LATENT; this input takes IMAGE",
        ),
    ]


def test_a_workflow_without_an_output_node_is_refused(object_info, workflow):
    del workflow[NODE_IDS["save"]]

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.node_id == ""
    assert problem.message.startswith("no output node")


def test_a_cycle_is_refused(object_info, workflow):
    # Pose detection fed from the resize of its own output.
    inputs(workflow, "pose")["ref_image"] = [NODE_IDS["pose_resize"], 0]

    problem = only_error(check_workflow(workflow, object_info))

    assert problem.message == "the links form a cycle: 15 -> 16 -> 15; ComfyUI cannot order it"


def test_not_a_workflow_at_all(object_info):
    assert check_workflow({}, object_info)[0].message.startswith("the workflow must be a non-empty object")
    problems = check_workflow({"1": {"inputs": {}}}, object_info)
    assert "has no class_type" in problems[0].message


def test_a_problem_reads_as_one_line_a_user_can_act_on():
    problem = WorkflowProblem(
        "2", "WanVideoModelLoader", "attention_mode", "'--medvram' is not a valid choice"
    )

    assert (
        str(problem)
        == "error: node 2 (WanVideoModelLoader) input 'attention_mode': '--medvram' is not a valid choice"
    )


def test_unknown_object_info_version_is_a_user_error():
    with pytest.raises(
        Zr4Error, match=r"no ComfyUI node definitions bundled for v9\.9\.9 \(have: v0\.7\.0\)"
    ):
        load_object_info("v9.9.9")


def test_vendored_object_info_is_a_deterministic_gzip_of_944_node_types():
    raw = (data_dir() / "comfyui" / "object_info-v0.7.0.json.gz").read_bytes()

    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field is 0
    content = gzip.decompress(raw)
    assert hashlib.sha256(content).hexdigest() == (
        "bf732746f660a596ab1e99ded4096a8b1dd9938a1a8ae3d0db1b1fb513b7b737"
    )  # as stated in data/comfyui/README.md
    assert len(json.loads(content)) == 944
