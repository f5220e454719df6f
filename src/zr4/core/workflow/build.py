"""The SteadyDancer workflow in ComfyUI's API ("prompt") format, built from plain values.

The graph mirrors MCG-NJU/SteadyDancer `workflows/wanvideo_SteadyDancer_example_03.json`
(commit 866a7219e74923d9486ab611cd981b15e5d959e5, 2025-12-23): kijai's
ComfyUI-WanVideoWrapper `example_workflows/wanvideo_SteadyDancer_example_01.json` with its pose
detector replaced by kijai/ComfyUI-WanAnimatePreprocess's `PoseDetectionOneToAllAnimation`
(that repository's `workflows/README.md` says so). Converted from the UI format:

- UI-only nodes are resolved away: KJNodes `SetNode`/`GetNode` become direct links,
  `PrimitiveNode`s (cfg, seed) become literal values, `Note`/`MarkdownNote` are dropped.
- `WanVideoScheduler` only forwarded its scheduler name to the sampler there; the name is set on
  `WanVideoSamplerSettings` directly.
- Preview-only branches are dropped (side-by-side `ImageConcatMulti`, the pose preview
  `VHS_VideoCombine` with save_output off, `PreviewImage` of the reference pose): the workflow
  saves the generated video only.
- `WanVideoTorchCompileSettings` is optional (`torch_compile`): it needs Triton and compiles per
  shape, which a first run on a fresh pod pays for.

Input names, types and choices follow `data/comfyui/object_info-v0.7.0.json.gz` (ComfyUI v0.7.0
with the pinned custom nodes); `zr4.core.workflow.check` verifies every built workflow against it.

Standard library only: the container's runtime calls this at start to put the model files it
resolved into the workflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from zr4.errors import Zr4Error

Workflow = dict[str, dict[str, Any]]
Link = list[Any]  # [source node id, output index]

VARIANTS = ("fp16", "fp8", "gguf")

# Fixed choices, copied from object_info-v0.7.0 (WanVideoModelLoader, WanVideoTextEncodeCached,
# OnnxDetectionModelLoader); tests/core/test_workflow_ui.py holds them equal to the generated definitions.
ATTENTION_MODES = (
    "sdpa",
    "flash_attn_2",
    "flash_attn_3",
    "sageattn",
    "sageattn_3",
    "radial_sage_attention",
    "sageattn_compiled",
    "sageattn_ultravico",
    "comfy",
)
BASE_PRECISIONS = ("fp32", "bf16", "fp16", "fp16_fast")
QUANTIZATIONS = (
    "disabled",
    "fp8_e4m3fn",
    "fp8_e4m3fn_fast",
    "fp8_e4m3fn_scaled",
    "fp8_e4m3fn_scaled_fast",
    "fp8_e5m2",
    "fp8_e5m2_fast",
    "fp8_e5m2_scaled",
    "fp8_e5m2_scaled_fast",
)
TEXT_ENCODER_QUANTIZATIONS = ("disabled", "fp8_e4m3fn")
ONNX_DEVICES = ("CUDAExecutionProvider", "CPUExecutionProvider")
TEXT_ENCODER_DEVICES = ("gpu", "cpu")  # WanVideoTextEncodeCached.device

# A profile's `features.attention` names the kernel; WanVideoModelLoader names the mode.
_PROFILE_ATTENTION = {"sdpa": "sdpa", "sageattn": "sageattn", "flash_attn": "flash_attn_2"}

# Model files (paths relative to the ComfyUI model folder named in each comment), from
# the Hub file listings (data/models.yaml). GGUF has no default: the GGUF repository's names must be listed
# MCG-NJU/SteadyDancer-GGUF and pick by quant level, never to guess a name.
DEFAULT_DIFFUSION_MODEL_FILES = {  # diffusion_models/
    # Kijai/WanVideo_comfy_fp8_scaled : SteadyDancer/Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors
    "fp8": "SteadyDancer/Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors",
    # Kijai/WanVideo_comfy : SteadyDancer/Wan21_I2V_SteadyDancer_fp16.safetensors
    "fp16": "SteadyDancer/Wan21_I2V_SteadyDancer_fp16.safetensors",
}
# text_encoders/ — Kijai/WanVideo_comfy, what the wrapper's workflows load. The wrapper's T5
# loader rejects ComfyUI "scaled fp8" encoders ("fp8 scaled is not supported by this node"), so
# an fp8 text encoder is this file with text_encoder_quantization="fp8_e4m3fn".
DEFAULT_TEXT_ENCODER_FILE = "umt5-xxl-enc-bf16.safetensors"
DEFAULT_CLIP_VISION_FILE = "clip_vision_h.safetensors"  # clip_vision/ (Comfy-Org repackaged)
DEFAULT_VAE_FILE = "Wan2_1_VAE_bf16.safetensors"  # vae/ (Kijai/WanVideo_comfy)
# loras/ — Kijai/WanVideo_comfy : Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors
DEFAULT_LORA_FILE = "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
DEFAULT_YOLO_FILE = "yolov10m.onnx"  # detection/ (Wan-AI/Wan2.2-Animate-14B process_checkpoint/det)
# detection/ (Kijai/vitpose_comfy onnx/); vitpose_h_wholebody_data.bin must sit beside it.
DEFAULT_VITPOSE_FILE = "vitpose_h_wholebody_model.onnx"

# Wan's standard negative prompt, as in the example workflow's WanVideoTextEncodeCached.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_POSITIVE_PROMPT = "a person dancing, steady camera, natural motion"

WAN_BLOCKS = 40  # the 14B model has 40 transformer blocks (WanVideoBlockSwap tooltip)
_UINT64_MAX = 2**64 - 1  # WanVideoSamplerSettings.seed max in object_info

# Stable node ids, one per role. A role left out (no LoRA, no block swap, no compile) leaves a
# gap, so the same role has the same id in every variant and a runtime can patch by id.
NODE_IDS = {
    "compile": "1",  # WanVideoTorchCompileSettings (only with torch_compile)
    "model": "2",  # WanVideoModelLoader
    "block_swap": "3",  # WanVideoBlockSwap (only with block_swap > 0)
    "set_block_swap": "4",  # WanVideoSetBlockSwap
    "lora": "5",  # WanVideoLoraSelect (only with a LoRA)
    "set_lora": "6",  # WanVideoSetLoRAs
    "vae": "7",  # WanVideoVAELoader
    "clip_vision": "8",  # CLIPVisionLoader
    "text": "9",  # WanVideoTextEncodeCached
    "video": "10",  # VHS_LoadVideo (driving video)
    "video_size": "11",  # GetImageSizeAndCount
    "image": "12",  # LoadImage (reference image)
    "image_resize": "13",  # ImageResizeKJv2
    "pose_model": "14",  # OnnxDetectionModelLoader
    "pose": "15",  # PoseDetectionOneToAllAnimation
    "pose_resize": "16",  # ImageResizeKJv2
    "pose_first": "17",  # GetImageRangeFromBatch
    "clip_image": "18",  # WanVideoClipVisionEncode (reference image)
    "clip_pose": "19",  # WanVideoClipVisionEncode (first pose frame)
    "i2v": "20",  # WanVideoImageToVideoEncode
    "pose_latents": "21",  # WanVideoEncode
    "steadydancer": "22",  # WanVideoAddSteadyDancerEmbeds
    "context": "23",  # WanVideoContextOptions
    "sampler_settings": "24",  # WanVideoSamplerSettings
    "sampler": "25",  # WanVideoSamplerFromSettings
    "decode": "26",  # WanVideoDecode
    "save": "27",  # VHS_VideoCombine
}


class WorkflowSpecError(Zr4Error):
    """A workflow setting is impossible; the message names the setting and what is allowed."""


def attention_mode_for(profile_attention: str) -> str:
    """WanVideoModelLoader's attention_mode for a profile's `features.attention` value."""
    try:
        return _PROFILE_ATTENTION[profile_attention]
    except KeyError:
        allowed = ", ".join(sorted(_PROFILE_ATTENTION))
        raise WorkflowSpecError(
            f"attention {profile_attention!r} has no WanVideo attention mode; use one of: {allowed}"
        ) from None


def default_diffusion_model_file(variant: str) -> str:
    """The SteadyDancer checkpoint for fp8/fp16 (data/models.yaml); GGUF must be named."""
    if variant == "gguf":
        raise WorkflowSpecError(
            "a gguf variant needs its file named: list MCG-NJU/SteadyDancer-GGUF and pick the file "
            "for the quant level (e.g. Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf)"
        )
    try:
        return DEFAULT_DIFFUSION_MODEL_FILES[variant]
    except KeyError:
        raise WorkflowSpecError(f"variant {variant!r} is not one of: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class WorkflowSpec:
    """Everything the SteadyDancer workflow varies on. Invalid combinations fail at construction.

    File names are relative to the ComfyUI model folder of their loader (diffusion_models,
    text_encoders, clip_vision, vae, loras, detection); `reference_image` and `driving_video` are
    names in ComfyUI's input folder.

    The documented guidance values (docs/reference/environment.md), mapped only onto inputs object_info-v0.7.0 has:
    - STEADYDANCER_GUIDE_SCALE (5.0) -> `cfg` -> WanVideoSamplerSettings.cfg. With the
      step-distill LoRA the sampler must run at cfg 1.0 (kijai/ComfyUI-WanVideoWrapper@f6e2d6dd:example_workflows/wanvideo_SteadyDancer_example_01.json runs it at 4 steps, cfg 1), so
      `cfg=None` means 1.0 with a LoRA and 5.0 without.
    - STEADYDANCER_CONDITION_GUIDE (1.0): no input exists. SteadyDancer's native code adds a
      separate pose-condition CFG term; WanVideoAddSteadyDancerEmbeds exposes no such scale (its
      pose_strength_spatial/temporal multiply the pose embedding, which is something else).
    - STEADYDANCER_END_CFG (0.4): no input exists. Natively it ends that pose-condition CFG
      window; WanVideoAddSteadyDancerEmbeds' end_percent ends the pose embedding itself, so
      mapping 0.4 there would drop the pose for the last 60 % of the steps.
    """

    variant: str
    diffusion_model_file: str
    text_encoder_file: str = DEFAULT_TEXT_ENCODER_FILE
    text_encoder_quantization: str = "disabled"
    clip_vision_file: str = DEFAULT_CLIP_VISION_FILE
    vae_file: str = DEFAULT_VAE_FILE
    lora_file: str | None = DEFAULT_LORA_FILE
    lora_strength: float = 1.0
    yolo_file: str = DEFAULT_YOLO_FILE
    vitpose_file: str = DEFAULT_VITPOSE_FILE
    # Planner decisions with a workflow input (zr4.core.planner): where the text encoder and
    # the ONNX pose models run, whether the VAE encodes/decodes in tiles, how many swapped blocks
    # are prefetched. The defaults are the example's (all on the GPU, untiled, one prefetched).
    onnx_device: str = "CUDAExecutionProvider"
    text_encoder_device: str = "gpu"
    vae_tiling: bool = False
    prefetch_blocks: int = 1
    # Portrait 480x832 as in the example (VHS_LoadVideo custom_width 480, custom_height 832).
    width: int = 480
    height: int = 832
    frames: int = 81
    fps: int = 16  # the example loads the video at 16 fps; SteadyDancer outputs 16 fps
    steps: int = 4
    cfg: float | None = None
    shift: float = 5.0  # example: WanVideoSamplerSettings shift 5
    scheduler: str = "dpm++_sde"  # example: WanVideoScheduler/WanVideoSamplerSettings
    seed: int = 106060  # STEADYDANCER_SEED default, MCG-NJU/SteadyDancer@866a7219:README.md's base_seed
    block_swap: int = 35  # blocks of 40 kept in CPU RAM; 0 leaves the block-swap nodes out
    attention: str = "sdpa"
    # The example's "fp16_fast" needs torch >= 2.7 (the loader raises on older torch): pass it
    # only for a torch >= 2.7 stack; "fp16" computes the same way without fp16 accumulation.
    base_precision: str = "fp16"
    quantization: str = "disabled"  # "disabled" = detect from the weights; GGUF requires it
    torch_compile: bool = False
    pose_strength_spatial: float = 1.0
    pose_strength_temporal: float = 1.0
    pose_start_percent: float = 0.0
    pose_end_percent: float = 1.0
    reference_image: str = "steadydancer_reference.png"
    driving_video: str = "steadydancer_driving.mp4"
    positive_prompt: str = DEFAULT_POSITIVE_PROMPT
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    output_prefix: str = "SteadyDancer"

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise WorkflowSpecError("workflow settings: " + "; ".join(problems))

    @property
    def effective_cfg(self) -> float:
        if self.cfg is not None:
            return self.cfg
        return 1.0 if self.lora_file else 5.0

    @property
    def merge_loras(self) -> bool:
        # The wrapper refuses merged LoRAs on GGUF and never merges into scaled fp8 weights
        # (WanVideoLoraSelect tooltip, WanVideoModelLoader.loadmodel); fp16 merges (node default).
        return self.variant == "fp16"


def _spec_problems(spec: WorkflowSpec) -> list[str]:
    problems: list[str] = []

    def choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            problems.append(f"{name}={value!r} is not one of: {', '.join(allowed)}")

    choice("variant", spec.variant, VARIANTS)
    choice("attention", spec.attention, ATTENTION_MODES)
    choice("base_precision", spec.base_precision, BASE_PRECISIONS)
    choice("quantization", spec.quantization, QUANTIZATIONS)
    choice("text_encoder_quantization", spec.text_encoder_quantization, TEXT_ENCODER_QUANTIZATIONS)
    choice("onnx_device", spec.onnx_device, ONNX_DEVICES)
    choice("text_encoder_device", spec.text_encoder_device, TEXT_ENCODER_DEVICES)
    if not isinstance(spec.vae_tiling, bool):
        problems.append(f"vae_tiling must be true or false, got {spec.vae_tiling!r}")

    files = {
        "diffusion_model_file": spec.diffusion_model_file,
        "text_encoder_file": spec.text_encoder_file,
        "clip_vision_file": spec.clip_vision_file,
        "vae_file": spec.vae_file,
        "yolo_file": spec.yolo_file,
        "vitpose_file": spec.vitpose_file,
        "reference_image": spec.reference_image,
        "driving_video": spec.driving_video,
        "output_prefix": spec.output_prefix,
    }
    if spec.lora_file is not None:
        files["lora_file"] = spec.lora_file
    for field, file_name in files.items():
        if not isinstance(file_name, str) or not file_name.strip():
            problems.append(f"{field} must be a non-empty file name")
        elif file_name.startswith("/") or ".." in file_name.split("/") or "\\" in file_name:
            problems.append(
                f"{field}={file_name!r} must be relative to its ComfyUI folder, with '/' separators"
            )

    model = spec.diffusion_model_file if isinstance(spec.diffusion_model_file, str) else ""
    if spec.variant == "gguf":
        if not model.endswith(".gguf"):
            problems.append(f"variant gguf needs a .gguf diffusion_model_file, got {model!r}")
        if spec.quantization != "disabled":
            problems.append("variant gguf needs quantization='disabled' (WanVideoModelLoader refuses others)")
    elif spec.variant in VARIANTS and not model.endswith(".safetensors"):
        problems.append(f"variant {spec.variant} needs a .safetensors diffusion_model_file, got {model!r}")
    if isinstance(spec.text_encoder_file, str) and "scaled" in spec.text_encoder_file:
        problems.append(
            f"text_encoder_file={spec.text_encoder_file!r}: the WanVideo T5 loader rejects scaled fp8 "
            f"encoders; use {DEFAULT_TEXT_ENCODER_FILE} with text_encoder_quantization='fp8_e4m3fn'"
        )

    ints = {"width": spec.width, "height": spec.height, "frames": spec.frames, "fps": spec.fps}
    ints |= {"steps": spec.steps, "seed": spec.seed, "block_swap": spec.block_swap}
    ints |= {"prefetch_blocks": spec.prefetch_blocks}
    for field, number in ints.items():
        if not isinstance(number, int) or isinstance(number, bool):
            problems.append(f"{field} must be an integer, got {number!r}")
    if problems:
        return problems
    for axis, pixels in (("width", spec.width), ("height", spec.height)):
        if not 64 <= pixels <= 2048 or pixels % 16:
            problems.append(f"{axis}={pixels} must be a multiple of 16 between 64 and 2048")
    if spec.frames < 1 or spec.frames % 4 != 1:
        problems.append(f"frames={spec.frames} must be 4n+1 (81 = 5 s at 16 fps)")
    if not 1 <= spec.fps <= 60:
        problems.append(f"fps={spec.fps} must be between 1 and 60")
    if spec.steps < 1:
        problems.append(f"steps={spec.steps} must be at least 1")
    if not 0 <= spec.seed <= _UINT64_MAX:
        problems.append(f"seed={spec.seed} must be between 0 and 2**64-1")
    if not 0 <= spec.block_swap <= WAN_BLOCKS:
        problems.append(
            f"block_swap={spec.block_swap} must be between 0 and {WAN_BLOCKS} (the 14B model's blocks)"
        )
    if not 0 <= spec.prefetch_blocks <= WAN_BLOCKS:
        problems.append(f"prefetch_blocks={spec.prefetch_blocks} must be between 0 and {WAN_BLOCKS}")
    if spec.cfg is not None and not 0.0 <= spec.cfg <= 30.0:
        problems.append(f"cfg={spec.cfg} must be between 0 and 30")
    for field, fraction in (
        ("pose_start_percent", spec.pose_start_percent),
        ("pose_end_percent", spec.pose_end_percent),
    ):
        if not 0.0 <= fraction <= 1.0:
            problems.append(f"{field}={fraction} must be between 0 and 1")
    if spec.pose_start_percent > spec.pose_end_percent:
        problems.append("pose_start_percent must not be above pose_end_percent")
    return problems


def _link(role: str, output: int = 0) -> Link:
    return [NODE_IDS[role], output]


def _node(class_type: str, title: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


class _Graph:
    """The nodes built so far, each under its role's stable id (``NODE_IDS``)."""

    def __init__(self) -> None:
        self.nodes: Workflow = {}

    def add(self, role: str, class_type: str, title: str, inputs: dict[str, Any]) -> Link:
        """Add the node of ``role``; returns the link to its first output."""
        self.nodes[NODE_IDS[role]] = _node(class_type, title, inputs)
        return _link(role)

    def in_id_order(self) -> Workflow:
        return dict(sorted(self.nodes.items(), key=lambda item: int(item[0])))


def _frame_size() -> tuple[Link, Link, Link]:
    """Width, height and frame count of the scaled driving video: every later node's size, as the
    example's Set/Get width, height and count nodes are."""
    return _link("video_size", 1), _link("video_size", 2), _link("video_size", 3)


def build_steadydancer_workflow(spec: WorkflowSpec) -> Workflow:
    """The SteadyDancer workflow for `spec`, as ComfyUI's API format (POST /prompt's "prompt")."""
    graph = _Graph()
    model = _add_model(graph, spec)
    _add_loaders(graph, spec)
    _add_inputs(graph, spec)
    _add_pose(graph, spec)
    _add_embeds(graph, spec)
    _add_sampling(graph, spec, model)
    _add_output(graph, spec)
    return graph.in_id_order()


def _add_model(graph: _Graph, spec: WorkflowSpec) -> Link:
    """The diffusion model: compile settings, the loader, block swap and the LoRA, each optional
    but the loader. Returns the link the sampler takes the model from."""
    loader_inputs: dict[str, Any] = {
        "model": spec.diffusion_model_file,
        "base_precision": spec.base_precision,
        "quantization": spec.quantization,
        "load_device": "offload_device",
        "attention_mode": spec.attention,
        "rms_norm_function": "default",
    }
    if spec.torch_compile:
        loader_inputs["compile_args"] = graph.add(
            "compile",
            "WanVideoTorchCompileSettings",
            "Torch compile",
            {
                "backend": "inductor",
                "fullgraph": False,
                "mode": "default",
                "dynamic": False,
                "dynamo_cache_size_limit": 64,
                "compile_transformer_blocks_only": True,
                "dynamo_recompile_limit": 128,
                "force_parameter_static_shapes": False,
                "allow_unmerged_lora_compile": False,
            },
        )
    model = graph.add("model", "WanVideoModelLoader", f"SteadyDancer model ({spec.variant})", loader_inputs)
    if spec.block_swap > 0:
        block_swap = graph.add(
            "block_swap",
            "WanVideoBlockSwap",
            f"Block swap ({spec.block_swap} of {WAN_BLOCKS})",
            {
                "blocks_to_swap": spec.block_swap,
                "offload_img_emb": False,
                "offload_txt_emb": False,
                "use_non_blocking": True,
                "vace_blocks_to_swap": 0,
                "prefetch_blocks": spec.prefetch_blocks,
                "block_swap_debug": False,
            },
        )
        model = graph.add(
            "set_block_swap",
            "WanVideoSetBlockSwap",
            "Set block swap",
            {"model": model, "block_swap_args": block_swap},
        )
    if spec.lora_file is not None:
        lora = graph.add(
            "lora",
            "WanVideoLoraSelect",
            "Step-distill LoRA",
            {
                "lora": spec.lora_file,
                "strength": spec.lora_strength,
                "low_mem_load": False,
                "merge_loras": spec.merge_loras,
            },
        )
        model = graph.add("set_lora", "WanVideoSetLoRAs", "Set LoRA", {"model": model, "lora": lora})
    return model


def _add_loaders(graph: _Graph, spec: WorkflowSpec) -> None:
    """The VAE, CLIP vision and the text encoder with the prompts."""
    graph.add(
        "vae",
        "WanVideoVAELoader",
        "VAE",
        {"model_name": spec.vae_file, "precision": "bf16", "use_cpu_cache": False},
    )
    graph.add("clip_vision", "CLIPVisionLoader", "CLIP vision", {"clip_name": spec.clip_vision_file})
    graph.add(
        "text",
        "WanVideoTextEncodeCached",
        "Prompt",
        {
            "model_name": spec.text_encoder_file,
            "precision": "bf16",
            "positive_prompt": spec.positive_prompt,
            "negative_prompt": spec.negative_prompt,
            "quantization": spec.text_encoder_quantization,
            "use_disk_cache": True,
            "device": spec.text_encoder_device,
        },
    )


def _add_inputs(graph: _Graph, spec: WorkflowSpec) -> None:
    """The driving video scaled to the output size (its size and count feed every node below) and
    the reference image resized to it."""
    graph.add(
        "video",
        "VHS_LoadVideo",
        "Driving video",
        {
            "video": spec.driving_video,
            "force_rate": float(spec.fps),
            "custom_width": spec.width,
            "custom_height": spec.height,
            "frame_load_cap": spec.frames,
            "skip_first_frames": 0,
            "select_every_nth": 1,
            "format": "AnimateDiff",
        },
    )
    graph.add("video_size", "GetImageSizeAndCount", "Video size and count", {"image": _link("video")})
    image = graph.add("image", "LoadImage", "Reference image", {"image": spec.reference_image})
    _add_resize(graph, "image_resize", "Resize reference image", image)


def _add_resize(graph: _Graph, role: str, title: str, image: Link) -> Link:
    width, height, _count = _frame_size()
    return graph.add(
        role,
        "ImageResizeKJv2",
        title,
        {
            "image": image,
            "width": width,
            "height": height,
            "upscale_method": "lanczos",
            "keep_proportion": "crop",
            "pad_color": "0, 0, 0",
            "crop_position": "center",
            "divisible_by": 16,
            "device": "cpu",
        },
    )


def _add_pose(graph: _Graph, spec: WorkflowSpec) -> None:
    """Poses detected in the driving video (YOLO + ViTPose), resized, and the first of them."""
    width, height, _count = _frame_size()
    pose_model = graph.add(
        "pose_model",
        "OnnxDetectionModelLoader",
        "Pose models (YOLO + ViTPose)",
        {"vitpose_model": spec.vitpose_file, "yolo_model": spec.yolo_file, "onnx_device": spec.onnx_device},
    )
    pose = graph.add(
        "pose",
        "PoseDetectionOneToAllAnimation",
        "Pose detection",
        {
            "model": pose_model,
            "images": _link("video_size", 0),
            "ref_image": _link("image_resize"),
            "width": width,
            "height": height,
            "align_to": "none",
            "draw_face_points": "weak",
            "draw_head": "full",
        },
    )
    poses = _add_resize(graph, "pose_resize", "Resize poses", pose)
    graph.add(
        "pose_first",
        "GetImageRangeFromBatch",
        "First pose frame",
        {"images": poses, "start_index": 0, "num_frames": 1},
    )


def _add_clip_encode(graph: _Graph, role: str, title: str, image: Link) -> Link:
    return graph.add(
        role,
        "WanVideoClipVisionEncode",
        title,
        {
            "clip_vision": _link("clip_vision"),
            "image_1": image,
            "strength_1": 1.0,
            "strength_2": 1.0,
            "crop": "center",
            "combine_embeds": "average",
            "force_offload": True,
            "tiles": 0,
            "ratio": 0.2,
        },
    )


def _add_embeds(graph: _Graph, spec: WorkflowSpec) -> None:
    """CLIP vision of the reference and the first pose, the image-to-video latents, the encoded
    poses, and SteadyDancer's embeds over them."""
    width, height, count = _frame_size()
    clip_image = _add_clip_encode(graph, "clip_image", "CLIP vision: reference", _link("image_resize"))
    clip_pose = _add_clip_encode(graph, "clip_pose", "CLIP vision: first pose", _link("pose_first"))
    i2v = graph.add(
        "i2v",
        "WanVideoImageToVideoEncode",
        "Image to video encode",
        {
            "vae": _link("vae"),
            "clip_embeds": clip_image,
            "start_image": _link("image_resize"),
            "width": width,
            "height": height,
            "num_frames": count,
            "noise_aug_strength": 0.0,
            "start_latent_strength": 1.0,
            "end_latent_strength": 1.0,
            "force_offload": True,
            "fun_or_fl2v_model": True,
            "tiled_vae": spec.vae_tiling,
            "augment_empty_frames": 0.0,
        },
    )
    pose_latents = graph.add(
        "pose_latents",
        "WanVideoEncode",
        "Encode poses",
        {
            "vae": _link("vae"),
            "image": _link("pose_resize"),
            "enable_vae_tiling": spec.vae_tiling,
            "tile_x": 272,
            "tile_y": 272,
            "tile_stride_x": 144,
            "tile_stride_y": 128,
            "noise_aug_strength": 0.0,
            "latent_strength": 1.0,
        },
    )
    graph.add(
        "steadydancer",
        "WanVideoAddSteadyDancerEmbeds",
        "SteadyDancer embeds",
        {
            "embeds": i2v,
            "pose_latents_positive": pose_latents,
            "clip_vision_embeds": clip_pose,
            "pose_strength_spatial": spec.pose_strength_spatial,
            "pose_strength_temporal": spec.pose_strength_temporal,
            "start_percent": spec.pose_start_percent,
            "end_percent": spec.pose_end_percent,
        },
    )


def _add_sampling(graph: _Graph, spec: WorkflowSpec, model: Link) -> None:
    """Context windows, the sampler's settings and the sampler."""
    context = graph.add(
        "context",
        "WanVideoContextOptions",
        "Context windows",
        {
            "context_schedule": "uniform_standard",
            "context_frames": 81,
            "context_stride": 4,
            "context_overlap": 16,
            "freenoise": True,
            "verbose": False,
            "fuse_method": "linear",
        },
    )
    settings = graph.add(
        "sampler_settings",
        "WanVideoSamplerSettings",
        "Sampler settings",
        {
            "model": model,
            "image_embeds": _link("steadydancer"),
            "text_embeds": _link("text"),
            "context_options": context,
            "steps": spec.steps,
            "cfg": spec.effective_cfg,
            "shift": spec.shift,
            "seed": spec.seed,
            "force_offload": True,
            "scheduler": spec.scheduler,
            "riflex_freq_index": 0,
            "denoise_strength": 1.0,
            "batched_cfg": False,
            "rope_function": "comfy",
            "start_step": 0,
            "end_step": -1,
            "add_noise_to_samples": False,
        },
    )
    graph.add("sampler", "WanVideoSamplerFromSettings", "Sampler", {"sampler_inputs": settings})


def _add_output(graph: _Graph, spec: WorkflowSpec) -> None:
    """The decoded frames, saved as the H.264 video the job downloads."""
    decoded = graph.add(
        "decode",
        "WanVideoDecode",
        "Decode",
        {
            "vae": _link("vae"),
            "samples": _link("sampler"),
            "enable_vae_tiling": spec.vae_tiling,
            "tile_x": 272,
            "tile_y": 272,
            "tile_stride_x": 144,
            "tile_stride_y": 128,
            "normalization": "default",
        },
    )
    graph.add(
        "save",
        "VHS_VideoCombine",
        "Save video",
        {
            "images": decoded,
            "frame_rate": float(spec.fps),
            "loop_count": 0,
            "filename_prefix": spec.output_prefix,
            "format": "video/h264-mp4",
            "pingpong": False,
            "save_output": True,
            # Extra widgets VHS declares for video/h264-mp4 (object_info "formats").
            "pix_fmt": "yuv420p",
            "crf": 19,
            "save_metadata": True,
            "trim_to_audio": False,
        },
    )


def workflow_json(workflow: Workflow) -> str:
    """The workflow as stable text: sorted keys, two-space indent, UTF-8 kept, final newline."""
    return json.dumps(workflow, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
