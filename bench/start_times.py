"""Boot times of `zr4 start` on this machine: first boot (models fetched) and warm boots.

Usage, from the repository root:  python bench/start_times.py [warm boots, default 5]

The same set-up as tests/image/test_start_sequence.py: the local Hub (8 small model files,
300-600 KB each), the stand-in ComfyUI, no GPU (the planner's CPU plan), sync off. Measured from
spawning ``python -m zr4.image.start`` to the stand-in ComfyUI's first line of Python (its
recorded start time), and the start's own "ready to launch" figure (process start -> spawn).
Also the import time of the Typer CLI (``import zr4.cli.main``), which `zr4 start` through the
console script pays on top.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "image")]

from test_start_sequence import Pod, stop, wait_for  # noqa: E402

from support.hub_server import FakeHub  # noqa: E402


def boot(pod: Pod) -> tuple[float, float]:
    (pod.state / "argv.json").unlink(missing_ok=True)
    began = time.time()
    process = pod.start()
    record = wait_for(pod.comfyui_record, 120, "ComfyUI")
    output = stop(process)
    ready = next(line for line in output.splitlines() if "ready to launch" in line)
    return record["started_at"] - began, float(ready.split("ready to launch ")[1].split(" s")[0])  # type: ignore[index,operator]


def main(warm_boots: int) -> None:
    with FakeHub() as hub, tempfile.TemporaryDirectory() as folder:
        pod = Pod(Path(folder), hub)
        cold, cold_ready = boot(pod)
        print(
            f"first boot (8 files from the local Hub): ComfyUI started after {cold:.2f} s (ready {cold_ready:.2f} s)"
        )
        warm = [boot(pod) for _ in range(warm_boots)]
        spawn = [w[0] for w in warm]
        ready = [w[1] for w in warm]
        print(
            f"warm boot x{warm_boots}: ComfyUI started after median {statistics.median(spawn):.2f} s "
            f"(min {min(spawn):.2f}, max {max(spawn):.2f}); ready to launch median {statistics.median(ready):.2f} s "
            f"(max {max(ready):.2f})"
        )
    imports = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import zr4.cli.main"], check=True)
        imports.append(time.perf_counter() - began)
    baseline = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import zr4.image.start"], check=True)
        baseline.append(time.perf_counter() - began)
    print(
        f"python -c 'import zr4.cli.main' (the Typer CLI): median {statistics.median(imports):.2f} s; "
        f"python -c 'import zr4.image.start': median {statistics.median(baseline):.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
