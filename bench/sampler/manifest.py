"""Tensor manifests of the models the SteadyDancer workflow loads, read from the pinned node code.

Why: the benchmark needs weight files of the true names, shapes and formats without downloading
~30 GB of real weights. The shapes come from instantiating the pinned classes on the meta device
(no memory), exactly as their loaders do, so a file written from the manifest is accepted by the
same loader that accepts the real file. Runs on CPU with the image's lock (ZR4_COMFYUI_PYTHON).

    python bench/sampler/manifest.py --comfyui SOURCES/ComfyUI --out manifests.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

# Linear weights the Q4_K_M recipe (llama.cpp's "use_more_bits" rule for attn_v / ffn_down,
# mapped onto Wan's names) stores as Q6_K; every other quantizable Linear weight is Q4_K.
MORE_BITS_SUFFIXES = ("self_attn.v.weight", "cross_attn.v.weight", "cross_attn.v_img.weight", "ffn.2.weight")


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's use_more_bits(i, n): the first and last eighth and every third layer between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def _import_wrapper(comfy: Path) -> Any:
    sys.path.insert(0, str(comfy))
    os.chdir(comfy)
    from comfy.cli_args import args  # type: ignore[import-not-found]

    args.cpu = True
    path = comfy / "custom_nodes" / "ComfyUI-WanVideoWrapper"
    spec = importlib.util.spec_from_file_location(
        "wanvideowrapper", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["wanvideowrapper"] = module
    spec.loader.exec_module(module)
    return module


def _entries(module: Any, linear_names: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, tensor in module.state_dict().items():
        out.append({"name": name, "shape": list(tensor.shape), "linear": name in linear_names})
    return out


def _linear_weights(model: Any) -> set[str]:
    import torch.nn as nn

    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def steadydancer(
    comfy: Path, dim: int = 5120, layers: int = 40, heads: int = 40, ffn: int = 13824
) -> list[dict[str, Any]]:
    """WanModel 14B I2V plus the SteadyDancer modules, as WanVideoModelLoader builds it.

    Smaller dim/layers/heads/ffn give the same names at the 1.3B sizes, for a CPU check."""
    import torch
    import torch.nn as nn
    from accelerate import init_empty_weights
    from wanvideowrapper.steadydancer.mobilenetv2_dcd import DYModule  # type: ignore[import-not-found]
    from wanvideowrapper.steadydancer.small_archs import (  # type: ignore[import-not-found]
        FactorConv3d,
        PoseRefNetNoBNV3,
    )
    from wanvideowrapper.wanvideo.modules.model import WanModel  # type: ignore[import-not-found]

    in_channels, patch = 36, (1, 2, 2)
    cpu = torch.device("cpu")
    with init_empty_weights():
        model = WanModel(
            model_type="i2v",
            patch_size=patch,
            text_len=512,
            in_dim=in_channels,
            dim=dim,
            in_features=dim,
            out_features=dim,
            ffn_dim=ffn,
            ffn2_dim=ffn,
            freq_dim=256,
            out_dim=16,
            num_heads=heads,
            num_layers=layers,
            eps=1e-6,
            attention_mode="sdpa",
            main_device=cpu,
            offload_device=cpu,
            dtype=torch.float16,
        )
        c = 16
        model.patch_embedding_fuse = nn.Conv3d(in_channels + c + c, dim, kernel_size=patch, stride=patch)
        model.patch_embedding_ref_c = nn.Conv3d(c, dim, kernel_size=patch, stride=patch)
        model.condition_embedding_spatial = DYModule(inp=c, oup=c)
        model.condition_embedding_temporal = nn.Sequential(
            FactorConv3d(in_channels=c, out_channels=c, kernel_size=(3, 3, 3), stride=1),
            nn.SiLU(),
            FactorConv3d(in_channels=c, out_channels=c, kernel_size=(3, 3, 3), stride=1),
            nn.SiLU(),
            FactorConv3d(in_channels=c, out_channels=c, kernel_size=(3, 3, 3), stride=1),
            nn.SiLU(),
        )
        model.condition_embedding_align = PoseRefNetNoBNV3(
            in_channels_x=16, in_channels_c=16, hidden_dim=128, num_heads=8
        )
    linear = _linear_weights(model)
    params = dict(model.named_parameters())
    # load_weights assigns every named parameter from the file; buffers are computed, not stored.
    return [{"name": n, "shape": list(p.shape), "linear": n in linear} for n, p in params.items()]


def umt5(comfy: Path) -> list[dict[str, Any]]:
    """umt5-xxl encoder in the key layout LoadWanVideoT5TextEncoder uses after conversion."""
    import torch
    from accelerate import init_empty_weights
    from wanvideowrapper.wanvideo.modules.t5 import umt5_xxl  # type: ignore[import-not-found]

    with init_empty_weights():
        model = umt5_xxl(
            encoder_only=True, return_tokenizer=False, dtype=torch.bfloat16, device=torch.device("cpu")
        )
    return _entries(model, set())


def clip_vision_h(comfy: Path) -> list[dict[str, Any]]:
    """ComfyUI's CLIP vision ViT-H/14 (clip_vision_config_h.json), the keys CLIPVisionLoader matches."""
    import torch
    from comfy import clip_model, ops  # type: ignore[import-not-found]

    config = json.loads((comfy / "comfy" / "clip_vision_config_h.json").read_text())
    model = clip_model.CLIPVisionModelProjection(config, torch.float16, torch.device("meta"), ops.manual_cast)
    return _entries(model, set())


def wan_vae(comfy: Path) -> list[dict[str, Any]]:
    """Wan 2.1 VAE as WanVideoVAELoader reads it (keys under "model.")."""
    import torch
    from wanvideowrapper.wanvideo.wan_video_vae import WanVideoVAE  # type: ignore[import-not-found]

    with torch.device("meta"):
        vae = WanVideoVAE(dtype=torch.bfloat16)
    return _entries(vae, set())


def lora(blocks: int = 40, rank: int = 64, dim: int = 5120, ffn: int = 13824) -> list[dict[str, Any]]:
    """lightx2v step-distill LoRA layout: lora_down/lora_up for each block's 12 linear layers."""
    layers = {f"self_attn.{x}": (dim, dim) for x in "qkvo"}
    layers |= {f"cross_attn.{x}": (dim, dim) for x in ("q", "k", "v", "o", "k_img", "v_img")}
    layers |= {"ffn.0": (dim, ffn), "ffn.2": (ffn, dim)}
    out = []
    for b in range(blocks):
        for layer, (fan_in, fan_out) in layers.items():
            key = f"diffusion_model.blocks.{b}.{layer}"
            out.append({"name": f"{key}.lora_down.weight", "shape": [rank, fan_in], "linear": False})
            out.append({"name": f"{key}.lora_up.weight", "shape": [fan_out, rank], "linear": False})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", action="store_true", help="1.3B sizes (30 blocks of 1536) for a CPU check")
    opts = parser.parse_args()
    out = opts.out.resolve()
    comfy = opts.comfyui.resolve()
    _import_wrapper(comfy)
    sd = steadydancer(comfy, 1536, 30, 12, 8960) if opts.small else steadydancer(comfy)
    manifests = {
        "steadydancer": sd,
        "umt5": umt5(comfy),
        "clip_vision_h": clip_vision_h(comfy),
        "wan_vae": wan_vae(comfy),
        "lora": lora(),
    }
    out.write_text(json.dumps(manifests))
    for key, entries in manifests.items():
        count = sum(1 for _ in entries)
        params = sum(_numel(e["shape"]) for e in entries)
        print(f"{key}: {count} tensors, {params / 1e9:.3f} G parameters")


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    main()
