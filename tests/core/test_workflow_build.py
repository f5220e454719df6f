"""Building the SteadyDancer workflow: every variant is valid against ComfyUI v0.7.0's object_info."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from zr4.core.workflow import (
    NODE_IDS,
    WorkflowSpec,
    WorkflowSpecError,
    attention_mode_for,
    build_steadydancer_workflow,
    check_workflow,
    default_diffusion_model_file,
    load_object_info,
    workflow_json,
)

# A real file name from MCG-NJU/SteadyDancer-GGUF (its Hub file listing).
GGUF_FILE = "Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf"


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info("v0.7.0")


def spec_for(variant: str, **changes: object) -> WorkflowSpec:
    model = GGUF_FILE if variant == "gguf" else default_diffusion_model_file(variant)
    return dataclasses.replace(WorkflowSpec(variant=variant, diffusion_model_file=model), **changes)


def node(workflow: dict, role: str) -> dict:
    return workflow[NODE_IDS[role]]


@pytest.mark.parametrize("variant", ["fp16", "fp8", "gguf"])
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"lora_file": None, "steps": 30},
        {"block_swap": 0},
        {"torch_compile": True, "attention": "sageattn"},
        {"text_encoder_quantization": "fp8_e4m3fn", "onnx_device": "CPUExecutionProvider"},
        {"width": 832, "height": 480, "frames": 121},
    ],
    ids=["defaults", "no-lora", "no-block-swap", "compile-sage", "fp8-text-encoder", "landscape-121"],
)
def test_every_variant_passes_the_checker_without_a_single_warning(object_info, variant, changes):
    workflow = build_steadydancer_workflow(spec_for(variant, **changes))

    assert check_workflow(workflow, object_info) == []


def test_default_graph_is_the_example_pipeline_in_order():
    workflow = build_steadydancer_workflow(spec_for("fp8"))

    assert [n["class_type"] for n in workflow.values()] == [
        "WanVideoModelLoader",
        "WanVideoBlockSwap",
        "WanVideoSetBlockSwap",
        "WanVideoLoraSelect",
        "WanVideoSetLoRAs",
        "WanVideoVAELoader",
        "CLIPVisionLoader",
        "WanVideoTextEncodeCached",
        "VHS_LoadVideo",
        "GetImageSizeAndCount",
        "LoadImage",
        "ImageResizeKJv2",
        "OnnxDetectionModelLoader",
        "PoseDetectionOneToAllAnimation",
        "ImageResizeKJv2",
        "GetImageRangeFromBatch",
        "WanVideoClipVisionEncode",
        "WanVideoClipVisionEncode",
        "WanVideoImageToVideoEncode",
        "WanVideoEncode",
        "WanVideoAddSteadyDancerEmbeds",
        "WanVideoContextOptions",
        "WanVideoSamplerSettings",
        "WanVideoSamplerFromSettings",
        "WanVideoDecode",
        "VHS_VideoCombine",
    ]
    assert all(set(n) == {"class_type", "inputs", "_meta"} and n["_meta"]["title"] for n in workflow.values())


def test_defaults_follow_design_480x832_81_frames_4_steps_lora_cfg_1_block_swap_35():
    workflow = build_steadydancer_workflow(spec_for("fp8"))

    video = node(workflow, "video")["inputs"]
    assert (video["custom_width"], video["custom_height"], video["frame_load_cap"]) == (480, 832, 81)
    sampler = node(workflow, "sampler_settings")["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["seed"]) == (4, 1.0, 106060)
    assert node(workflow, "block_swap")["inputs"]["blocks_to_swap"] == 35
    assert node(workflow, "lora")["inputs"]["lora"] == (
        "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    )
    assert node(workflow, "pose")["inputs"]["align_to"] == "none"
    loader = node(workflow, "model")["inputs"]
    assert loader["model"] == "SteadyDancer/Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors"
    assert loader["attention_mode"] == "sdpa"
    # fp16_fast raises on torch < 2.7 in WanVideoModelLoader; the default stack is torch 2.5.1.
    assert loader["base_precision"] == "fp16"


def test_the_model_reaches_the_sampler_through_block_swap_then_lora():
    workflow = build_steadydancer_workflow(spec_for("fp16"))

    assert node(workflow, "sampler_settings")["inputs"]["model"] == [NODE_IDS["set_lora"], 0]
    assert node(workflow, "set_lora")["inputs"]["model"] == [NODE_IDS["set_block_swap"], 0]
    assert node(workflow, "set_block_swap")["inputs"]["model"] == [NODE_IDS["model"], 0]


def test_without_lora_and_block_swap_the_loader_feeds_the_sampler_at_guide_scale_5():
    workflow = build_steadydancer_workflow(spec_for("fp16", lora_file=None, block_swap=0, steps=30))

    for role in ("lora", "set_lora", "block_swap", "set_block_swap", "compile"):
        assert NODE_IDS[role] not in workflow
    sampler = node(workflow, "sampler_settings")["inputs"]
    assert sampler["model"] == [NODE_IDS["model"], 0]
    assert sampler["cfg"] == 5.0  # STEADYDANCER_GUIDE_SCALE default


def test_an_explicit_cfg_wins_over_the_lora_default():
    workflow = build_steadydancer_workflow(spec_for("fp8", cfg=2.5))

    assert node(workflow, "sampler_settings")["inputs"]["cfg"] == 2.5


def test_gguf_loads_unquantized_and_never_merges_the_lora():
    workflow = build_steadydancer_workflow(spec_for("gguf"))

    assert node(workflow, "model")["inputs"]["model"] == GGUF_FILE
    assert node(workflow, "model")["inputs"]["quantization"] == "disabled"
    assert node(workflow, "lora")["inputs"]["merge_loras"] is False


def test_fp16_merges_the_lora_and_fp8_scaled_does_not():
    assert node(build_steadydancer_workflow(spec_for("fp16")), "lora")["inputs"]["merge_loras"] is True
    assert node(build_steadydancer_workflow(spec_for("fp8")), "lora")["inputs"]["merge_loras"] is False


def test_user_inputs_land_in_the_right_nodes():
    spec = spec_for(
        "fp8",
        reference_image="me.png",
        driving_video="dance.mp4",
        output_prefix="runs/dance",
        positive_prompt="a woman dancing",
        seed=7,
        fps=24,
    )
    workflow = build_steadydancer_workflow(spec)

    assert node(workflow, "image")["inputs"]["image"] == "me.png"
    assert node(workflow, "video")["inputs"]["video"] == "dance.mp4"
    assert node(workflow, "video")["inputs"]["force_rate"] == 24.0
    assert node(workflow, "save")["inputs"]["filename_prefix"] == "runs/dance"
    assert node(workflow, "save")["inputs"]["frame_rate"] == 24.0
    assert node(workflow, "text")["inputs"]["positive_prompt"] == "a woman dancing"
    assert node(workflow, "sampler_settings")["inputs"]["seed"] == 7


def test_building_twice_gives_identical_bytes_and_stable_ids():
    first = workflow_json(build_steadydancer_workflow(spec_for("gguf")))
    second = workflow_json(build_steadydancer_workflow(spec_for("gguf")))

    assert first.encode() == second.encode()
    assert first.endswith("}\n")
    assert json.loads(first) == build_steadydancer_workflow(spec_for("gguf"))
    # The same role keeps its id whichever variant or option is built.
    no_lora = build_steadydancer_workflow(spec_for("fp16", lora_file=None))
    assert no_lora[NODE_IDS["sampler_settings"]]["class_type"] == "WanVideoSamplerSettings"
    assert no_lora[NODE_IDS["save"]]["class_type"] == "VHS_VideoCombine"


def test_the_builder_does_not_mutate_shared_state_between_builds():
    workflow = build_steadydancer_workflow(spec_for("fp8"))
    workflow[NODE_IDS["model"]]["inputs"]["model"] = "changed.safetensors"

    again = build_steadydancer_workflow(spec_for("fp8"))
    assert again[NODE_IDS["model"]]["inputs"]["model"].endswith("_KJ.safetensors")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frames": 80}, "frames=80 must be 4n+1"),
        ({"block_swap": 41}, "block_swap=41 must be between 0 and 40"),
        ({"width": 500}, "width=500 must be a multiple of 16"),
        ({"attention": "--medvram"}, "attention='--medvram' is not one of: sdpa"),
        ({"base_precision": "fp8"}, "base_precision='fp8' is not one of"),
        ({"seed": -1}, "seed=-1 must be between 0 and 2**64-1"),
        ({"steps": "4"}, "steps must be an integer"),
        ({"diffusion_model_file": GGUF_FILE}, "variant fp8 needs a .safetensors diffusion_model_file"),
        ({"vae_file": "/abs/vae.safetensors"}, "vae_file='/abs/vae.safetensors' must be relative"),
        ({"lora_file": ""}, "lora_file must be a non-empty file name"),
        (
            {"text_encoder_file": "umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
            "the WanVideo T5 loader rejects scaled fp8 encoders",
        ),
        ({"pose_start_percent": 0.8, "pose_end_percent": 0.4}, "pose_start_percent must not be above"),
    ],
)
def test_impossible_settings_fail_with_a_message_naming_them(changes, message):
    with pytest.raises(WorkflowSpecError, match="workflow settings: ") as raised:
        spec_for("fp8", **changes)

    assert message in str(raised.value)


def test_gguf_needs_a_gguf_file_and_no_quantization():
    with pytest.raises(WorkflowSpecError) as raised:
        WorkflowSpec(variant="gguf", diffusion_model_file="x.safetensors", quantization="fp8_e4m3fn")

    assert "variant gguf needs a .gguf diffusion_model_file" in str(raised.value)
    assert "variant gguf needs quantization='disabled'" in str(raised.value)


def test_default_model_files_come_from_design_and_gguf_must_be_named():
    assert default_diffusion_model_file("fp16") == "SteadyDancer/Wan21_I2V_SteadyDancer_fp16.safetensors"
    with pytest.raises(WorkflowSpecError, match="list MCG-NJU/SteadyDancer-GGUF"):
        default_diffusion_model_file("gguf")
    with pytest.raises(WorkflowSpecError, match="variant 'int4' is not one of"):
        default_diffusion_model_file("int4")


@pytest.mark.parametrize(
    ("profile_value", "mode"), [("sdpa", "sdpa"), ("sageattn", "sageattn"), ("flash_attn", "flash_attn_2")]
)
def test_profile_attention_maps_to_a_loader_attention_mode(object_info, profile_value, mode):
    assert attention_mode_for(profile_value) == mode
    choices = object_info["WanVideoModelLoader"]["input"]["optional"]["attention_mode"][0]
    assert mode in choices


def test_unknown_profile_attention_is_refused():
    with pytest.raises(WorkflowSpecError, match="xformers"):
        attention_mode_for("xformers")


def test_the_builder_imports_only_the_standard_library():
    code = (
        "import sys, zr4.core.workflow.build, zr4.core.workflow.check\n"
        "heavy = {'jinja2', 'typer', 'pydantic', 'yaml', 'huggingface_hub', 'boto3'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "[]"
