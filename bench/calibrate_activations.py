"""Calibrate the planner's activation and VAE terms on a real NVIDIA GPU.

Builds transformer blocks shaped like Wan 2.1 14B I2V (hidden 5120, 40 heads, FFN 13824, random bf16
weights) whose forward pass follows kijai/ComfyUI-WanVideoWrapper's ``WanAttentionBlock.forward``
with its default ``rope_func="comfy"`` (fp32 LayerNorm/modulation, fp32 RoPE, bf16 linears and
q/k RMSNorm, SDPA),
runs one forward pass per workload and SDPA backend, and records the peak memory above the weights
and inputs. A small model (patch embedding, text/time/image embeddings, 2 blocks, head) gives the
whole-forward activation peak the planner budgets, which is compared with
``zr4.core.planner.activation_bytes``.

Optionally (``--vae-module``) decodes random latents with the Wan 2.1 VAE's decoder from
WanVideoWrapper's ``wan_video_vae.py`` (random weights, bf16) to measure the VAE decode peak.

Usage (on the GPU machine, from the repository root):
    PYTHONPATH=src python3 bench/calibrate_activations.py --out OUTDIR [--vae-module .vendor/wan_video_vae.py]
    python3 bench/calibrate_activations.py --from-json OUTDIR/calibration.json   # re-print, no GPU

Writes ``calibration.json`` and ``calibration.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

# (width, height, frames): the default SteadyDancer workload first, then smaller/larger ones for the fit.
WORKLOADS: list[tuple[int, int, int]] = [
    (832, 480, 81),
    (832, 480, 49),
    (832, 480, 33),
    (832, 480, 17),
    (640, 352, 81),
    (512, 512, 81),
    (416, 240, 81),
    (1280, 720, 81),
]
VAE_WORKLOADS: list[tuple[int, int, int]] = [
    (832, 480, 81),
    (832, 480, 49),
    (832, 480, 33),
    (832, 480, 17),
    (640, 352, 81),
    (416, 240, 81),
    (272, 272, 81),  # one tile of WanVideoDecode's tiled decode (tile_x = tile_y = 272 px by default)
    (1280, 720, 81),
]
# Headroom above the predicted activation peak tried under a hard memory cap (fragmentation).
CAP_MARGINS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 0.50, 0.75, 1.0)
CAP_WORKLOADS: list[tuple[int, int, int]] = [(832, 480, 81), (640, 352, 81), (1280, 720, 81)]


def tokens_for(width: int, height: int, frames: int) -> int:
    # Wan 2.1: VAE stride (4, 8, 8), patch size (1, 2, 2).
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def _build_torch_model(torch: Any, dim: int, heads: int, ffn_dim: int) -> Any:
    nn = torch.nn
    F = torch.nn.functional

    class RMSNorm(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(width))

        def forward(self, x: Any) -> Any:
            return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6).to(x.dtype) * self.weight

    def apply_rope(x: Any, freqs: Any) -> Any:
        # comfy.ldm.flux.math.apply_rope1 in fp32, result cast back to x's dtype
        x_ = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
        out = freqs[..., 0] * x_[..., 0]
        out.addcmul_(freqs[..., 1], x_[..., 1])
        return out.reshape(*x.shape).type_as(x)

    def attention(q: Any, k: Any, v: Any) -> Any:
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ).transpose(1, 2)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, dim // heads
            self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
            self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
            self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)
            self.norm3 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=True)
            self.cq, self.ck, self.cv, self.co = (nn.Linear(dim, dim) for _ in range(4))
            self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.norm_cq, self.norm_ck, self.norm_k_img = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
            self.ffn = nn.Sequential(
                nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim)
            )
            self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

        def forward(self, x: Any, e: Any, freqs: Any, context: Any, clip: Any) -> Any:
            b, s, n, d = x.shape[0], x.shape[1], self.heads, self.head_dim
            dtype = x.dtype
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.modulation + e).chunk(
                6, dim=1
            )
            inp = torch.addcmul(shift_msa, self.norm1(x.to(shift_msa.dtype)), 1 + scale_msa).to(dtype)
            q = apply_rope(self.norm_q(self.q(inp)).to(dtype).view(b, s, n, d), freqs)
            k = apply_rope(self.norm_k(self.k(inp)).to(dtype).view(b, s, n, d), freqs)
            v = self.v(inp).view(b, s, n, d)
            del inp
            y = self.o(attention(q, k, v).flatten(2))
            del q, k, v
            x.addcmul_(y, gate_msa)
            del y
            # cross-attention: text context and CLIP image tokens (WanI2VCrossAttention)
            xn = self.norm3(x.to(self.norm3.weight.dtype)).to(dtype)
            cq = self.norm_cq(self.cq(xn)).view(b, -1, n, d).to(dtype)
            del xn
            ck = self.norm_ck(self.ck(context)).view(b, -1, n, d).to(dtype)
            cv = self.cv(context).view(b, -1, n, d)
            y = attention(cq, ck, cv).flatten(2)
            ki = self.norm_k_img(self.k_img(clip)).view(b, -1, n, d).to(dtype)
            vi = self.v_img(clip).view(b, -1, n, d)
            y.add_(attention(cq, ki, vi).flatten(2))
            del cq, ck, cv, ki, vi
            x += self.co(y).to(dtype)
            del y
            mod_x = torch.addcmul(shift_mlp, self.norm2(x.to(shift_mlp.dtype)), 1 + scale_mlp)
            x_ffn = self.ffn(mod_x.to(dtype))
            del mod_x
            return x.addcmul(x_ffn.to(gate_mlp.dtype), gate_mlp).to(dtype)

    class MiniWan(nn.Module):
        """Embeddings + ``n_blocks`` blocks + head, at Wan 2.1 14B I2V widths."""

        def __init__(self, n_blocks: int) -> None:
            super().__init__()
            self.patch_embedding = nn.Conv3d(36, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.text_embedding = nn.Sequential(
                nn.Linear(4096, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
            )
            self.time_embedding = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
            self.img_emb = nn.Sequential(
                nn.LayerNorm(1280), nn.Linear(1280, 1280), nn.GELU(), nn.Linear(1280, dim), nn.LayerNorm(dim)
            )
            self.blocks = nn.ModuleList(Block() for _ in range(n_blocks))
            self.head_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
            self.head = nn.Linear(dim, 4 * 16)

        def forward(self, latent: Any, t_emb: Any, text: Any, clip_feats: Any, freqs: Any) -> Any:
            dtype = next(self.blocks.parameters()).dtype
            x = self.patch_embedding(latent.to(dtype)).flatten(2).transpose(1, 2).contiguous()
            e = self.time_embedding(t_emb.to(dtype)).float()
            e0 = self.time_projection(e.to(dtype)).float().unflatten(1, (6, -1))
            context = self.text_embedding(text.to(dtype))
            clip = self.img_emb(clip_feats.to(dtype))
            for block in self.blocks:
                x = block(x, e0, freqs, context, clip)
            return self.head(self.head_norm(x.float()).to(dtype))

    return Block, MiniWan


def _rope_freqs(torch: Any, tokens: int, head_dim: int, device: Any) -> Any:
    # One 2x2 rotation per pair of channels and token, fp32 (what comfy's rope_encode gives).
    angles = torch.rand(1, tokens, 1, head_dim // 2, device=device, dtype=torch.float32)
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([cos, -sin, sin, cos], dim=-1).view(1, tokens, 1, head_dim // 2, 2, 2)


def _init_small(torch: Any, module: Any) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.02)


def _nvml_used_mib() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        used = float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / MIB
        pynvml.nvmlShutdown()
        return used
    except Exception:
        return None


def measure_cap_only() -> dict[str, Any]:
    """Only the memory-cap test, for comparing PYTORCH_CUDA_ALLOC_CONF settings in fresh processes."""
    import os

    import torch

    device = torch.device("cuda")
    _, MiniWan = _build_torch_model(torch, 5120, 40, 13824)
    model = MiniWan(n_blocks=2).to(device=device, dtype=torch.bfloat16).eval()
    _init_small(torch, model)
    clip_feats = torch.randn(1, 257, 1280, device=device, dtype=torch.bfloat16)
    t_emb = torch.randn(1, 256, device=device, dtype=torch.float32)
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "(default)")
    print(f"PYTORCH_CUDA_ALLOC_CONF={conf} backend={torch.cuda.get_allocator_backend()}", flush=True)
    rows = cap_test(torch, model, device, t_emb, clip_feats, 128)
    return {"alloc_conf": conf, "backend": torch.cuda.get_allocator_backend(), "cap": rows}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    nvml_before = _nvml_used_mib()
    device = torch.device("cuda")
    torch.cuda.init()
    props = torch.cuda.get_device_properties(0)
    result: dict[str, Any] = {
        "device": props.name,
        "total_mib": props.total_memory / MIB,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nvml_used_before_init_mib": nvml_before,
        "blocks": [],
        "model": [],
        "vae": [],
    }
    dim, heads, ffn_dim = 5120, 40, 13824
    _, MiniWan = _build_torch_model(torch, dim, heads, ffn_dim)
    backends = {
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "default": None,
    }
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends["cudnn"] = [SDPBackend.CUDNN_ATTENTION]

    model = MiniWan(n_blocks=2).to(device=device, dtype=torch.bfloat16).eval()
    _init_small(torch, model)
    torch.cuda.synchronize()
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    block_weights_bytes = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    block_params = sum(p.numel() for p in model.blocks[0].parameters())
    result["block_params"] = block_params
    result["block_weights_mib"] = block_weights_bytes / MIB
    context = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    clip_feats = torch.randn(1, 257, 1280, device=device, dtype=torch.bfloat16)
    t_emb = torch.randn(1, 256, device=device, dtype=torch.float32)

    for width, height, frames in WORKLOADS:
        tokens = tokens_for(width, height, frames)
        lat_t, lat_h, lat_w = (frames - 1) // 4 + 1, height // 8, width // 8
        for name, backend in backends.items():
            ctx = sdpa_kernel(backend) if backend is not None else None
            try:
                if ctx is not None:
                    ctx.__enter__()
                # one block on its own: peak above weights and its inputs
                with torch.inference_mode():
                    freqs = _rope_freqs(torch, tokens, dim // heads, device)
                    x = torch.randn(1, tokens, dim, device=device, dtype=torch.bfloat16)
                    e0 = torch.randn(1, 6, dim, device=device, dtype=torch.float32)
                    ctx_tokens = torch.randn(1, 512, dim, device=device, dtype=torch.bfloat16)
                    clip = torch.randn(1, 257, dim, device=device, dtype=torch.bfloat16)
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    start = time.perf_counter()
                    out = model.blocks[0](x, e0, freqs, ctx_tokens, clip)
                    torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
                    peak = torch.cuda.max_memory_allocated() - base
                    del out, x, e0, ctx_tokens, clip, freqs
                result["blocks"].append(
                    {
                        "width": width,
                        "height": height,
                        "frames": frames,
                        "tokens": tokens,
                        "backend": name,
                        "peak_mib": peak / MIB,
                        "bytes_per_token": peak / tokens,
                        "seconds": seconds,
                    }
                )
                # whole forward (embeddings, 2 blocks, head): peak above the weights
                with torch.inference_mode():
                    latent = torch.randn(1, 36, lat_t, lat_h, lat_w, device=device, dtype=torch.float32)
                    text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    freqs = _rope_freqs(torch, tokens, dim // heads, device)
                    out = model(latent, t_emb, text, clip_feats, freqs)
                    torch.cuda.synchronize()
                    peak_alloc = torch.cuda.max_memory_allocated() - base
                    peak_reserved = torch.cuda.max_memory_reserved()
                    del out, latent, text, freqs
                result["model"].append(
                    {
                        "width": width,
                        "height": height,
                        "frames": frames,
                        "tokens": tokens,
                        "backend": name,
                        "peak_mib": peak_alloc / MIB,
                        "reserved_peak_mib": peak_reserved / MIB,
                        "weights_mib": weights_bytes / MIB,
                    }
                )
                print(
                    f"{width}x{height}x{frames} tokens={tokens} {name}: block {peak / MIB:.0f} MiB, "
                    f"forward {peak_alloc / MIB:.0f} MiB",
                    flush=True,
                )
            except RuntimeError as error:  # a backend that does not support the shape
                print(f"{width}x{height}x{frames} {name}: {error}".splitlines()[0], flush=True)
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
                torch.cuda.empty_cache()
    result["cap"] = cap_test(torch, model, device, t_emb, clip_feats, dim // heads)
    del model, context, clip_feats, t_emb
    torch.cuda.empty_cache()

    # framework overhead: what the process holds on the card beyond PyTorch's caching allocator
    nvml_after = _nvml_used_mib()
    result["torch_reserved_end_mib"] = torch.cuda.memory_reserved() / MIB
    result["nvml_used_end_mib"] = nvml_after
    if nvml_after is not None and nvml_before is not None:
        result["context_overhead_mib"] = nvml_after - nvml_before - torch.cuda.memory_reserved() / MIB

    if args.vae_module:
        result["vae"] = measure_vae(torch, device, Path(args.vae_module))
    return result


def cap_test(
    torch: Any, model: Any, device: Any, t_emb: Any, clip_feats: Any, head_dim: int
) -> list[dict[str, Any]]:
    """Run the whole forward under a hard cap: what it already holds + predicted activations × (1 + margin)."""
    try:
        from zr4.core.planner import activation_bytes
    except ImportError:
        return []
    total = torch.cuda.get_device_properties(0).total_memory
    rows = []
    for width, height, frames in CAP_WORKLOADS:
        tokens = tokens_for(width, height, frames)
        predicted = activation_bytes(tokens)
        for margin in CAP_MARGINS:
            ok = True
            with torch.inference_mode():
                latent = torch.randn(
                    1, 36, (frames - 1) // 4 + 1, height // 8, width // 8, device=device, dtype=torch.float32
                )
                text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                cap = torch.cuda.memory_reserved() + predicted * (1 + margin)
                torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0))
                try:
                    freqs = _rope_freqs(torch, tokens, head_dim, device)
                    out = model(latent, t_emb, text, clip_feats, freqs)
                    torch.cuda.synchronize()
                    del out, freqs
                except torch.OutOfMemoryError:
                    ok = False
                finally:
                    torch.cuda.set_per_process_memory_fraction(1.0)
                del latent, text
                torch.cuda.empty_cache()
            rows.append(
                {
                    "width": width,
                    "height": height,
                    "frames": frames,
                    "tokens": tokens,
                    "margin": margin,
                    "ok": ok,
                }
            )
            print(
                f"cap {width}x{height}x{frames} margin {margin:.0%}: {'ok' if ok else 'out of memory'}",
                flush=True,
            )
            if ok:
                break
    return rows


def measure_vae(torch: Any, device: Any, module_path: Path) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("wan_video_vae", module_path)
    if spec is None or spec.loader is None:
        return []
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vae = module.VideoVAE_(z_dim=16).eval().requires_grad_(False)
    vae.encoder = None  # decode only; the encoder's weights are not part of the decode peak
    vae = vae.to(device=device, dtype=torch.bfloat16)
    _init_small(torch, vae)
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    scale = [torch.zeros(16), torch.ones(16)]
    rows = []
    vae.clear_cache = _decoder_only_clear_cache(module, vae)
    for width, height, frames in VAE_WORKLOADS:
        with torch.inference_mode():
            z = torch.randn(
                1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, device=device, dtype=torch.bfloat16
            )
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            out = vae.decode(z, scale)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() - base
            shape = list(out.shape)
            del out, z
            vae.clear_cache()  # the decoder keeps per-conv feature caches until the next decode
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        rows.append(
            {
                "width": width,
                "height": height,
                "frames": frames,
                "peak_mib": peak / MIB,
                "weights_mib": weights / MIB,
                "output_shape": shape,
                "seconds": seconds,
                "bytes_per_output_pixel": peak / (width * height * frames),
            }
        )
        print(
            f"VAE decode {width}x{height}x{frames}: {peak / MIB:.0f} MiB above weights, {seconds:.1f} s",
            flush=True,
        )
    return rows


def _decoder_only_clear_cache(module: Any, vae: Any) -> Any:
    def clear_cache() -> None:
        vae._conv_num = module.count_conv3d(vae.decoder)
        vae._conv_idx = [0]
        vae._feat_map = [None] * vae._conv_num

    return clear_cache


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(points)
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_x) ** 2 for p in points)
    slope = sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / var
    return slope, mean_y - slope * mean_x


def fit_vae(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Least squares of peak = a × pixels + b × pixels × frames (no intercept)."""
    s11 = s12 = s22 = t1 = t2 = 0.0
    for row in rows:
        pixels = row["width"] * row["height"]
        volume = pixels * row["frames"]
        peak = row["peak_mib"] * MIB
        s11, s12, s22 = s11 + pixels * pixels, s12 + pixels * volume, s22 + volume * volume
        t1, t2 = t1 + pixels * peak, t2 + volume * peak
    det = s11 * s22 - s12 * s12
    return (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Device: {result['device']} ({result['total_mib']:.0f} MiB), "
        f"torch {result['torch']}, CUDA {result['cuda']}",
        f"One block: {result['block_params'] / 1e6:.1f} M parameters, "
        f"{result['block_weights_mib']:.0f} MiB in bf16",
    ]
    if "context_overhead_mib" in result:
        lines.append(
            f"CUDA context + kernels outside PyTorch's allocator: {result['context_overhead_mib']:.0f} MiB "
            f"(NVML used {result['nvml_used_end_mib']:.0f} MiB, "
            f"torch reserved {result['torch_reserved_end_mib']:.0f} MiB)"
        )
    try:
        from zr4.core.planner import activation_bytes
    except ImportError:  # run without PYTHONPATH=src
        activation_bytes = None
    lines += ["", "### One block, peak above weights and inputs", ""]
    lines += ["| workload | tokens | backend | peak MiB | bytes/token |", "|---|---:|---|---:|---:|"]
    for row in result["blocks"]:
        lines.append(
            f"| {row['width']}×{row['height']}×{row['frames']} | {row['tokens']:,} | {row['backend']} | "
            f"{row['peak_mib']:.0f} | {row['bytes_per_token']:,.0f} |"
        )
    lines += ["", "### Whole forward (embeddings, 2 blocks, head), peak above weights", ""]
    header = "| workload | tokens | backend | measured MiB | reserved peak MiB |"
    sep = "|---|---:|---|---:|---:|"
    if activation_bytes is not None:
        header += " planner MiB | error |"
        sep += "---:|---:|"
    lines += [header, sep]
    errors = []
    for row in result["model"]:
        line = (
            f"| {row['width']}×{row['height']}×{row['frames']} | {row['tokens']:,} | {row['backend']} | "
            f"{row['peak_mib']:.0f} | {row['reserved_peak_mib']:.0f} |"
        )
        if activation_bytes is not None:
            predicted = activation_bytes(row["tokens"], attention=_planner_attention(row["backend"])) / MIB
            error = (predicted - row["peak_mib"]) / row["peak_mib"]
            errors.append(abs(error))
            line += f" {predicted:.0f} | {error:+.1%} |"
        lines.append(line)
    for backend in sorted({row["backend"] for row in result["model"]}):
        points = [
            (row["tokens"], row["peak_mib"] * MIB) for row in result["model"] if row["backend"] == backend
        ]
        if len(points) >= 2:
            slope, intercept = fit_line(points)
            lines.append(f"\nfit ({backend}): {slope:,.0f} bytes/token + {intercept / MIB:,.0f} MiB")
    if errors:
        lines.append(f"\nlargest |planner − measured| / measured: {max(errors):.1%}")
    if result.get("cap"):
        lines += [
            "",
            "### Whole forward under a hard memory cap (held + planner activations × (1 + margin))",
            "",
        ]
        lines += ["| workload | tokens | margin | result |", "|---|---:|---:|---|"]
        for row in result["cap"]:
            lines.append(
                f"| {row['width']}×{row['height']}×{row['frames']} | {row['tokens']:,} | {row['margin']:.0%} | "
                f"{'ran' if row['ok'] else 'out of memory'} |"
            )
    if result.get("vae"):
        lines += ["", "### Wan 2.1 VAE decode (random bf16 weights), peak above weights", ""]
        lines += ["| output | peak MiB | bytes/output pixel | seconds |", "|---|---:|---:|---:|"]
        for row in result["vae"]:
            lines.append(
                f"| {row['width']}×{row['height']}×{row['frames']} | {row['peak_mib']:.0f} | "
                f"{row['bytes_per_output_pixel']:.1f} | {row['seconds']:.1f} |"
            )
        lines.append(f"\nVAE decoder weights: {result['vae'][0]['weights_mib']:.0f} MiB (bf16)")
        per_pixel, per_pixel_frame = fit_vae(result["vae"])
        lines.append(f"fit: {per_pixel:,.0f} B × W×H + {per_pixel_frame:,.1f} B × W×H×frames")
        try:
            from zr4.core.planner import vae_decode_bytes
        except ImportError:
            vae_decode_bytes = None
        if vae_decode_bytes is not None:
            lines += ["", "| output | measured MiB | planner MiB | error |", "|---|---:|---:|---:|"]
            for row in result["vae"]:
                predicted = vae_decode_bytes(row["width"], row["height"], row["frames"], tiled=False) / MIB
                error = (predicted - row["peak_mib"]) / row["peak_mib"] if row["peak_mib"] else float("nan")
                lines.append(
                    f"| {row['width']}×{row['height']}×{row['frames']} | {row['peak_mib']:.0f} | "
                    f"{predicted:.0f} | {error:+.1%} |"
                )
    return "\n".join(lines) + "\n"


def _planner_attention(backend: str) -> str:
    return "flash_attn" if backend == "flash" else "sdpa"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--vae-module", default=None, help="path to WanVideoWrapper's wan_video_vae.py")
    parser.add_argument("--from-json", type=Path, default=None, help="re-print a saved calibration.json")
    parser.add_argument("--cap-only", action="store_true", help="only the memory-cap test (prints JSON)")
    args = parser.parse_args(argv)
    if args.cap_only:
        print(json.dumps(measure_cap_only()))
        return 0
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        result = measure(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "calibration.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    if not args.from_json:
        (args.out / "calibration.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
