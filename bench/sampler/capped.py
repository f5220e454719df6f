"""Run ComfyUI's main.py as if the GPU were a smaller card, and record per-node memory and time.

Why: the H100/H200 has 80-140 GiB; the product targets a 16 GB card. Capping only PyTorch's
allocator (torch.cuda.set_per_process_memory_fraction) is not enough: under cudaMallocAsync, the
allocator ComfyUI picks, the cap bounds the bytes PyTorch has handed out, not the memory its pool
holds (c10/cuda/CUDAMallocAsyncAllocator.cpp checks ``pytorch_used_bytes + size`` against the
limit), and ComfyUI decides what to keep on the GPU from torch.cuda.mem_get_info, which still
reports the whole card. So this launcher takes the memory the imitated card does not have away
from the device itself: right after the CUDA context exists it allocates a ballast with the
driver's cuMemAlloc (outside PyTorch's pool), leaving card MiB minus this device's idle use (the
driver's reserve, which NVML counts as used) minus the context, as on a real card of that size. It
also caps the allocator at the CUDA-visible size of the imitated card and makes mem_get_info
report that size as the total. Then main.py runs unchanged.

Per executed node it appends one JSON line to $ZR4_BENCH_STATS: seconds, PyTorch's allocated and
reserved peaks (kept across the resets the nodes make themselves: WanVideoWrapper calls
torch.cuda.reset_peak_memory_stats inside its sampler and VAE), NVML device use of this process
(minus the idle baseline and the ballast; sampled every 20 ms), host RSS peak, and the times of
ComfyUI progress-bar updates (the sampler's steps).

    ZR4_BENCH_CARD_MIB=16376 ZR4_BENCH_STATS=stats.jsonl python capped.py main.py --listen 127.0.0.1 ...
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MIB = 1024 * 1024


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run a callback right after a module has executed, whoever imports it and when.

    Why: the cap must be in place before ComfyUI first asks torch for free memory, yet torch must
    not be imported before main.py has set its environment (main.py warns if it was)."""

    def __init__(self, hooks: dict[str, Callable[[Any], None]]) -> None:
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.hooks:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        # Not popped here: cuda_malloc.py calls importlib.util.find_spec("torch") without importing.
        loader, hooks = spec.loader, self.hooks

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                hook = hooks.pop(name, None)
                if hook is not None:
                    hook(module)

        spec.loader = Loader()
        return spec


class _Sampler:
    """Background sampling of NVML device use and host RSS, with per-node maxima."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.handle: Any = None
        self.baseline = 0
        # Without NVML the process-level peaks read 0: the launcher record says why (nvml_error).
        self.nvml_error: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.baseline = pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
        except Exception as error:  # ImportError or any pynvml.NVMLError subclass
            self.nvml = None
            self.handle = None
            self.nvml_error = f"{type(error).__name__}: {error}"
        self.ballast = 0  # bytes taken by the launcher's ballast, not by ComfyUI
        self.lock = threading.Lock()
        self.nvml_max = 0
        self.rss_max = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def nvml_used(self) -> int:
        if self.handle is None:
            return 0
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) - self.baseline - self.ballast

    def _loop(self) -> None:
        while True:
            used = self.nvml_used()
            rss = self.proc.memory_info().rss
            with self.lock:
                self.nvml_max = max(self.nvml_max, used)
                self.rss_max = max(self.rss_max, rss)
            time.sleep(0.02)

    def reset(self) -> None:
        with self.lock:
            self.nvml_max = self.nvml_used()
            self.rss_max = self.proc.memory_info().rss

    def peaks(self) -> tuple[int, int]:
        with self.lock:
            return self.nvml_max, self.rss_max


class _Peaks:
    """PyTorch's allocated and reserved peaks over one node, kept across the resets the node makes.

    Why: WanVideoWrapper calls torch.cuda.reset_peak_memory_stats inside its sampler and VAE nodes,
    which would otherwise leave only the peak after its last reset for the node's record."""

    def __init__(self) -> None:
        self.allocated = 0
        self.reserved = 0
        self.torch: Any = None
        self._reset: Callable[..., None] | None = None

    def install(self, torch: Any) -> None:
        """Route every reset_peak_memory_stats through ``_fold`` first."""
        self.torch, self._reset = torch, torch.cuda.memory.reset_peak_memory_stats

        def reset_keeping_peaks(device: Any = None) -> None:
            self._fold(device)
            assert self._reset is not None
            self._reset(device)

        torch.cuda.reset_peak_memory_stats = reset_keeping_peaks
        torch.cuda.memory.reset_peak_memory_stats = reset_keeping_peaks

    def _fold(self, device: Any = None) -> None:
        self.allocated = max(self.allocated, self.torch.cuda.max_memory_allocated(device))
        self.reserved = max(self.reserved, self.torch.cuda.max_memory_reserved(device))

    def start(self) -> None:
        """A node begins: forget the previous node's peaks."""
        if self._reset is not None:
            self._reset()
        self.allocated = self.reserved = 0

    def read(self) -> tuple[int, int]:
        """(allocated, reserved) peak bytes since ``start``; 0, 0 without CUDA."""
        if self._reset is None:
            return 0, 0
        self._fold()
        return self.allocated, self.reserved


def ballast_bytes(card_mib: int, idle_used: int, free: int, total: int) -> tuple[int, int]:
    """(CUDA-visible bytes of the imitated card, bytes to take from this device) for a card that
    reports ``card_mib`` to NVML.

    The driver's own reserve is taken to be this device's: NVML counts ``idle_used`` bytes as used
    with no process on the card, memory CUDA does not count in its total. What this process already
    holds (``total - free``: its context) stays inside the imitated card, so after the ballast the
    process has exactly what it would have on that card."""
    visible = card_mib * MIB - idle_used
    held = total - free
    return visible, max(0, free - (visible - held))


def _ballast(size: int) -> None:
    """Allocate ``size`` bytes of device memory with the driver API, outside PyTorch's pool, for good.

    Why the driver API: PyTorch's allocators would count it (and a cudaMallocAsync pool could
    hand it back); this memory is simply gone for the process, as on a smaller card."""
    libcuda = ctypes.CDLL("libcuda.so.1")
    pointer = ctypes.c_uint64()
    status = libcuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(size))
    if status != 0:
        raise RuntimeError(f"cuMemAlloc of the {size // MIB} MiB ballast failed with CUresult {status}")


def _cap(card_mib: int, sampler: _Sampler, peaks: _Peaks) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None}
    torch.zeros(1, device="cuda")
    free_before, real_total = torch.cuda.mem_get_info()
    visible, ballast = ballast_bytes(card_mib, sampler.baseline, free_before, real_total)
    _ballast(ballast)
    sampler.ballast = ballast
    torch.cuda.set_per_process_memory_fraction(min(1.0, visible / real_total))
    real = torch.cuda.mem_get_info

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        free, _total = real(device)
        return free, visible

    torch.cuda.mem_get_info = mem_get_info
    torch.cuda.memory.mem_get_info = mem_get_info

    peaks.install(torch)
    free_after, _ = real()
    return {
        "gpu": torch.cuda.get_device_name(),
        "real_total_mib": real_total // MIB,
        "card_mib": card_mib,
        "cuda_visible_mib": visible // MIB,
        "ballast_mib": ballast // MIB,
        "free_after_ballast_mib": free_after // MIB,
        "backend": torch.cuda.get_allocator_backend(),
    }


def _instrument(
    stats_path: str, sampler: _Sampler, state: dict[str, Any], peaks: _Peaks, execution: Any
) -> None:
    """Wrap execution.execute: one stats line per executed node."""
    import torch

    cuda = torch.cuda.is_available()
    original = execution.execute

    async def execute(
        server: Any, dynprompt: Any, caches: Any, current_item: Any, *args: Any, **kwargs: Any
    ) -> Any:
        class_type = dynprompt.get_node(current_item)["class_type"]
        if cuda:
            torch.cuda.synchronize()
        peaks.start()
        sampler.reset()
        state["steps"] = []
        start = time.monotonic()
        try:
            return await original(server, dynprompt, caches, current_item, *args, **kwargs)
        finally:
            if cuda:
                torch.cuda.synchronize()
            seconds = time.monotonic() - start
            nvml, rss = sampler.peaks()
            allocated, reserved = peaks.read()
            record = {
                "node": str(current_item),
                "class_type": class_type,
                "s": round(seconds, 3),
                "allocated_peak_mib": round(allocated / MIB, 1),
                "reserved_peak_mib": round(reserved / MIB, 1),
                "reserved_end_mib": round(torch.cuda.memory_reserved() / MIB, 1) if cuda else 0,
                "nvml_peak_mib": round(nvml / MIB, 1),
                "rss_peak_mib": round(rss / MIB, 1),
                "steps": [[round(t - start, 3), v, total] for t, v, total in state["steps"]],
            }
            with open(stats_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    execution.execute = execute


def _progress(state: dict[str, Any], utils: Any) -> None:
    """Record every ComfyUI progress-bar update (the sampler's steps among them)."""
    update = utils.ProgressBar.update_absolute

    def update_absolute(self: Any, value: Any, total: Any = None, preview: Any = None) -> Any:
        state["steps"].append((time.monotonic(), value, total if total is not None else self.total))
        return update(self, value, total, preview)

    utils.ProgressBar.update_absolute = update_absolute


def main() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    comfy = os.path.dirname(os.path.abspath(script))
    sys.path.insert(0, comfy)
    os.chdir(comfy)
    sampler = _Sampler()
    stats = os.environ["ZR4_BENCH_STATS"]
    state: dict[str, Any] = {"steps": []}
    peaks = _Peaks()

    def on_torch(_torch: Any) -> None:
        info = _cap(int(os.environ["ZR4_BENCH_CARD_MIB"]), sampler, peaks)
        info["nvml_baseline_mib"] = sampler.baseline // MIB
        info["nvml_after_init_mib"] = sampler.nvml_used() // MIB
        info["nvml_error"] = sampler.nvml_error
        info["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
        with open(stats, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"launcher": info}) + "\n")

    sys.meta_path.insert(
        0,
        _AfterImport(
            {
                "torch": on_torch,
                "execution": lambda module: _instrument(stats, sampler, state, peaks, module),
                "comfy.utils": lambda module: _progress(state, module),
            }
        ),
    )
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
