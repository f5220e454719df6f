"""Write random weights of the true names, shapes and formats for the SteadyDancer workflow.

Why: the benchmark measures memory and time, which depend on tensor shapes and storage formats,
not on trained values; real weights are ~40 GB and cannot travel to the device machine. Values are
random but finite and small (|w| <~ 0.02), so every kernel runs on ordinary numbers.

GGUF quantized blocks are random bytes with their fp16 scale fields overwritten: random scale
bytes decode to inf/NaN for a large share of blocks. Tensor types follow the published file:
quantizable block Linear weights Q4_K, with Q6_K for every `ffn.2` and, by llama.cpp's
use_more_bits rule, the value projections; non-block Linear weights, convolutions (incl. the 5-D
patch embeddings) F16; 1-D tensors, norms and modulation F32. That puts the Q4_K_M file at the
published size of the SteadyDancer Q4_K_M GGUF (~10.9 GB). Q8_0 quantizes the same tensors as Q8_0.

    python make_weights.py --manifests manifests.json --models ComfyUI/models --gguf Q4_K_M
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from manifest import MORE_BITS_SUFFIXES, use_more_bits

# Block layout (bytes per 256 or 32 values) and where the fp16 scale fields sit: (block values,
# block bytes, [(offset, max |scale|)]). Magnitudes keep |w| around 0.02 at most.
QUANT = {
    "Q4_K": (256, 144, [(0, 2e-5), (2, 2e-5)]),
    "Q6_K": (256, 210, [(208, 5e-6)]),
    "Q8_0": (32, 34, [(0, 1.5e-4)]),
}
# The names zr4 gives the levels' files (zr4.render.extras.gguf_file_name), so the workflow finds them.
FILES = {level: f"Wan21_I2V_SteadyDancer_fp16-{level}_fix_5d_tensor.gguf" for level in ("Q4_K_M", "Q8_0")}
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tensor_type(entry: dict[str, Any], level: str, layers: int = 40) -> str:
    """The GGUF type a tensor gets at this level (see the module docstring)."""
    name, shape = entry["name"], entry["shape"]
    block = name.startswith("blocks.")
    if entry["linear"] and len(shape) == 2 and shape[1] % 256 == 0 and shape[0] >= 256 and block:
        if level == "Q8_0":
            return "Q8_0"
        if name.endswith("ffn.2.weight"):
            return "Q6_K"
        if name.endswith(MORE_BITS_SUFFIXES) and use_more_bits(int(name.split(".")[1]), layers):
            return "Q6_K"
        return "Q4_K"
    if len(shape) == 1 or "modulation" in name or "norm" in name:
        return "F32"
    return "F16"


def quant_bytes(rows: int, cols: int, kind: str) -> np.ndarray:
    """Random blocks of one quantized matrix with finite, small fp16 scales: (rows, bytes per row)."""
    values, size, scales = QUANT[kind]
    blocks = rows * cols // values
    data = torch.randint(0, 256, (blocks, size), dtype=torch.uint8, device=DEVICE)
    for offset, magnitude in scales:
        scale = (torch.rand(blocks, device=DEVICE) * magnitude).to(torch.float16)
        data[:, offset : offset + 2] = scale.view(torch.uint8).view(blocks, 2)
    return data.view(rows, cols // values * size).cpu().numpy()


def dense(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    return (torch.randn(shape, device=DEVICE, dtype=torch.float32) * 0.02).to(dtype).cpu()


def write_gguf(entries: list[dict[str, Any]], level: str, path: Path) -> dict[str, int]:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="wan")
    counts: dict[str, int] = {}
    layers = 1 + max(int(e["name"].split(".")[1]) for e in entries if e["name"].startswith("blocks."))
    for entry in entries:
        kind = tensor_type(entry, level, layers)
        counts[kind] = counts.get(kind, 0) + 1
        shape = entry["shape"]
        if kind in QUANT:
            data = quant_bytes(shape[0], shape[1], kind)
            writer.add_tensor(entry["name"], data, raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
        else:
            t = dense(shape, torch.float32 if kind == "F32" else torch.float16)
            writer.add_tensor(entry["name"], t.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def write_safetensors(
    entries: list[dict[str, Any]],
    dtype: torch.dtype,
    path: Path,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    from safetensors.torch import save_file

    tensors = {e["name"]: dense(e["shape"], dtype) for e in entries}
    tensors.update(extra or {})
    save_file(tensors, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="ComfyUI models folder")
    parser.add_argument("--gguf", action="append", default=[], choices=sorted(FILES))
    parser.add_argument("--skip-others", action="store_true", help="only the GGUF files")
    opts = parser.parse_args()
    manifests = json.loads(opts.manifests.read_text())
    m = opts.models
    for sub in ("diffusion_models", "text_encoders", "clip_vision", "vae", "loras"):
        (m / sub).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for level in opts.gguf:
        start = time.monotonic()
        path = m / "diffusion_models" / FILES[level]
        counts = write_gguf(manifests["steadydancer"], level, path)
        report[path.name] = {
            "bytes": path.stat().st_size,
            "types": counts,
            "s": round(time.monotonic() - start, 1),
        }
    if not opts.skip_others:
        jobs = [
            ("umt5", torch.bfloat16, m / "text_encoders" / "umt5-xxl-enc-bf16.safetensors", None),
            ("clip_vision_h", torch.float16, m / "clip_vision" / "clip_vision_h.safetensors", None),
            ("wan_vae", torch.bfloat16, m / "vae" / "Wan2_1_VAE_bf16.safetensors", None),
            (
                "lora",
                torch.bfloat16,
                m / "loras" / "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                None,
            ),
        ]
        for key, dtype, path, extra in jobs:
            start = time.monotonic()
            write_safetensors(manifests[key], dtype, path, extra)
            report[path.name] = {"bytes": path.stat().st_size, "s": round(time.monotonic() - start, 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
