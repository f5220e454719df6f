"""Run the GPU part of `zr4 doctor` (what `zr4 doctor --gpu` prints) on the machine's own Python.

Usage (from the repository root, no install needed):
    PYTHONPATH=src python3 bench/doctor_gpu.py h100 4080super

The machine's interpreter plays $COMFYUI_PYTHON; there is no ComfyUI, so only the GPU rows are
shown (CUDA, compute capability vs torch's arch list and the profile's arches, a matmul, a
flash-attn call, an mmcv CUDA op). Packages that are not installed show as "not installed".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from zr4.image.doctor import format_table, run_doctor
from zr4.profile import load_profile


def main(names: list[str]) -> int:
    worst = 0
    for name in names or ["h100"]:
        profile = load_profile(name)
        print(f"## zr4 doctor --gpu, profile {name} (TORCH_CUDA_ARCH_LIST {profile.gpu.cuda_arch_list})")
        started = time.perf_counter()
        rows = run_doctor(
            profile, python=sys.executable, comfyui_dir=Path("/nonexistent"), build_time=False, gpu=True
        )
        for line in format_table(rows):
            print(line)
        print(f"({time.perf_counter() - started:.1f} s)\n")
        worst = max(worst, int(any(row.status == "FAIL" for row in rows)))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
