"""Facts about ComfyUI's Python environment, printed as JSON; run BY `zr4 doctor` WITH $COMFYUI_PYTHON.

zr4 lives in its own venv, so what ComfyUI imports can only be seen from ComfyUI's interpreter.
This file is executed by path (``$COMFYUI_PYTHON doctor_probe.py '<request json>'``): standard
library only, no zr4 imports. Every probe catches its own errors and reports them as text.

Request keys: ``dists`` (distribution names), ``imports`` (module names), ``comfyui_dir``,
``flag_vectors`` (argument lists to parse with ComfyUI's ``comfy/cli_args.py`` parser), ``gpu``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import io
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def dist_versions(names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def try_import(name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as error:  # an extension can raise anything at import, even SystemExit
        return {"ok": False, "error": _error(error), "seconds": time.perf_counter() - started}
    return {
        "ok": True,
        "version": str(getattr(module, "__version__", "") or ""),
        "seconds": time.perf_counter() - started,
    }


def torch_facts() -> dict[str, Any]:
    try:
        import torch
    except BaseException as error:
        return {"error": _error(error)}
    return {
        "version": str(torch.__version__),
        "cuda": getattr(torch.version, "cuda", None),
        "arch_list": list(torch.cuda.get_arch_list()) if hasattr(torch.cuda, "get_arch_list") else [],
    }


def onnxruntime_providers() -> dict[str, Any]:
    try:
        import onnxruntime
    except BaseException as error:
        return {"error": _error(error)}
    return {"providers": list(onnxruntime.get_available_providers())}


def onnxruntime_cuda_provider() -> dict[str, Any]:
    """Load onnxruntime's CUDA provider library as a GPU session would, after ``import torch``.

    Its libcublas, libcufft, libcurand and libcudnn come from torch's nvidia-* wheels, which torch loads
    at import; the dynamic loader then reuses them by soname (onnxruntime's ``preload_dlls`` docstring:
    no preloading is needed "if `import torch` is done before `import onnxruntime`"). No GPU is needed.
    """
    with contextlib.suppress(BaseException):
        import torch  # noqa: F401  (loads the CUDA libraries the provider needs)
    try:
        import onnxruntime
    except BaseException as error:
        return {"error": _error(error)}
    library = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.is_file():
        return {"missing": str(library)}
    try:
        ctypes.CDLL(str(library))
    except OSError as error:
        return {"error": _error(error)}
    return {"loads": True}


def comfy_flags(comfyui_dir: str, vectors: list[list[str]]) -> dict[str, Any]:
    """Parse each vector with ComfyUI's own argparse parser (importing cli_args parses [] only)."""
    sys.path.insert(0, comfyui_dir)
    try:
        cli_args = importlib.import_module("comfy.cli_args")
        parser = cli_args.parser
    except BaseException as error:
        return {"error": _error(error)}
    results: dict[str, str | None] = {}
    for vector in vectors:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(vector)
            results[" ".join(vector)] = None
        except SystemExit:
            lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
            results[" ".join(vector)] = lines[-1] if lines else "rejected"
    return {"results": results}


def gpu_facts(comfyui_dir: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        import torch
    except BaseException as error:
        return {"error": _error(error)}
    facts["available"] = bool(torch.cuda.is_available())
    if not facts["available"]:
        return facts
    major, minor = torch.cuda.get_device_capability(0)
    facts["device"] = torch.cuda.get_device_name(0)
    facts["capability"] = f"{major}.{minor}"
    try:
        a = torch.randn(1024, 1024, device="cuda")
        b = torch.randn(1024, 1024, device="cuda")
        torch.cuda.synchronize()
        started = time.perf_counter()
        product = a @ b
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        reference = a.double().cpu() @ b.double().cpu()
        max_error = float((product.double().cpu() - reference).abs().max())
        facts["matmul"] = {"max_abs_error": max_error, "ms": elapsed * 1000}
    except BaseException as error:
        facts["matmul"] = {"error": _error(error)}
    try:
        from flash_attn import flash_attn_func

        q, k, v = (torch.randn(1, 256, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        out = flash_attn_func(q, k, v)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ).transpose(1, 2)
        facts["flash_attn"] = {"max_abs_error": float((out - ref).abs().max())}
    except ImportError as error:
        facts["flash_attn"] = {"missing": _error(error)}
    except BaseException as error:
        facts["flash_attn"] = {"error": _error(error)}
    try:
        from mmcv.ops import nms

        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
        scores = torch.tensor([0.9, 0.8, 0.7])
        _, kept_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
        facts["mmcv_nms"] = {"kept": [int(i) for i in kept_gpu.cpu().tolist()]}
    except ImportError as error:
        facts["mmcv_nms"] = {"missing": _error(error)}
    except BaseException as error:
        facts["mmcv_nms"] = {"error": _error(error)}
    return facts


def main() -> int:
    request = json.loads(sys.argv[1])
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "dists": dist_versions(request.get("dists", [])),
        "imports": {name: try_import(name) for name in request.get("imports", [])},
        "torch": torch_facts(),
        "onnxruntime": onnxruntime_providers(),
        "onnxruntime_cuda": onnxruntime_cuda_provider(),
    }
    if request.get("comfyui_dir") and request.get("flag_vectors"):
        report["comfy_flags"] = comfy_flags(request["comfyui_dir"], request["flag_vectors"])
    if request.get("gpu"):
        try:
            report["gpu"] = gpu_facts(request.get("comfyui_dir", ""))
        except BaseException:
            report["gpu"] = {"error": traceback.format_exc(limit=1)}
    sys.stdout.write("\n@@zr4-doctor@@" + json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
