"""The stand-in ComfyUI honours SIGTERM from the moment it reports its start (argv.json).

The start-sequence tests send SIGTERM as soon as argv.json appears; the stand-in used to write that
file before installing its handler, so under load the signal could kill it outright.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def test_sigterm_right_after_argv_json_is_handled(tmp_path: Path) -> None:
    root = tmp_path / "ComfyUI"
    # A slow custom node widens the window between argv.json and serving, as a loaded machine does.
    (root / "custom_nodes" / "slow").mkdir(parents=True)
    (root / "custom_nodes" / "slow" / "__init__.py").write_text("import time\ntime.sleep(1.0)\n")
    (root / "main.py").symlink_to(SUPPORT / "fake_comfyui.py")
    state = tmp_path / "state"
    env = {**os.environ, "FAKE_COMFYUI_STATE": str(state)}
    process = subprocess.Popen(
        [sys.executable, str(root / "main.py"), "--port", "0", "--output-directory", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (state / "argv.json").exists():
            assert time.monotonic() < deadline and process.poll() is None, "the stand-in never started"
            time.sleep(0.001)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (state / "sigterm").read_text() == str(int(signal.SIGTERM))
