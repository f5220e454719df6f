"""A model-free dance job for the real ComfyUI: the conformance suite and ``bench/bench_serverless.py``.

The SteadyDancer workflow needs 20+ GB of models and a GPU. This API-format workflow has the same
input and output nodes that `zr4 dance` and the serverless worker fill in (``LoadImage`` for the
photo, ``VHS_LoadVideo`` for the clip with its size and frame cap, ``VHS_VideoCombine`` saving an
H.264 MP4) and one core node between them (``ImageBatch``: the clip's frames, then the photo scaled
to their size). On the CPU it runs in well under a second, so every step of a job (upload,
``/prompt``, websocket progress, ``/history``, ``/view``) runs for real, against the pinned nodes.

Its file name holds "steadydancer" so that a job without a workflow finds it among ComfyUI's user
workflows, as it finds the one `zr4 start` installs.

To stop a job mid-run the job must run long enough, at no cost to a shared CPU: :func:`slow_workflow`
adds one node (:data:`SLOW_NODE`, put into the private ComfyUI copy's ``custom_nodes/`` by
:func:`install_slow_node`) that passes the frames through after ``steps`` steps of ``step_s`` seconds,
each reported through ComfyUI's own ``comfy.utils.ProgressBar``. That is where ComfyUI checks for an
interrupt in a sampler too (``main.py`` ``hijack_progress`` calls
``throw_exception_if_processing_interrupted``, comfyanonymous/ComfyUI@f59f71cf), so a stop reaches
it within a step.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

INSTALLED_NAME = "steadydancer-tiny.json"
CLIP_FRAMES = 9  # frames in the clip made by make_media (8 fps)


def tiny_workflow(frames: int = 5, size: int = 64) -> dict[str, dict[str, Any]]:
    """``frames`` frames of the clip at ``size``×``size`` plus the photo: ``frames + 1`` frames out."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "Photo"}},
        "2": {
            "class_type": "VHS_LoadVideo",
            "inputs": {
                "video": "placeholder.mp4",
                "force_rate": 8.0,
                "custom_width": size,
                "custom_height": size,
                "frame_load_cap": frames,
                "skip_first_frames": 0,
                "select_every_nth": 1,
                "format": "AnimateDiff",
            },
            "_meta": {"title": "Dance clip"},
        },
        "3": {
            "class_type": "ImageBatch",
            "inputs": {"image1": ["2", 0], "image2": ["1", 0]},
            "_meta": {"title": "Clip + photo"},
        },
        "4": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["3", 0],
                "frame_rate": 8.0,
                "loop_count": 0,
                "filename_prefix": "tiny",
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
                "pix_fmt": "yuv420p",
                "crf": 19,
                "save_metadata": True,
                "trim_to_audio": False,
            },
            "_meta": {"title": "Save video"},
        },
    }


SLOW_NODE_FILE = "zr4_test_slow.py"
SLOW_NODE = '''"""A test node: the frames pass through after `steps` progress steps of `step_s` seconds."""
import time

import comfy.utils


class Zr4TestSlowPass:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "steps": ("INT", {"default": 10, "min": 1, "max": 100000}),
                "step_s": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "zr4/test"

    def run(self, images, steps, step_s):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(step_s)
            bar.update(1)  # ComfyUI's progress hook: an interrupt is raised here
        return (images,)


NODE_CLASS_MAPPINGS = {"Zr4TestSlowPass": Zr4TestSlowPass}
'''


def install_slow_node(comfyui_dir: Path) -> Path:
    """Put :data:`SLOW_NODE` into ``custom_nodes/`` of a private ComfyUI copy (before it starts)."""
    target = comfyui_dir / "custom_nodes" / SLOW_NODE_FILE
    target.write_text(SLOW_NODE, encoding="utf-8")
    return target


def slow_workflow(
    steps: int, step_s: float = 0.1, frames: int = 5, size: int = 64
) -> dict[str, dict[str, Any]]:
    """:func:`tiny_workflow` with the slow node between the batch and the video: ``steps * step_s`` s."""
    workflow = tiny_workflow(frames, size)
    workflow["5"] = {
        "class_type": "Zr4TestSlowPass",
        "inputs": {"images": ["3", 0], "steps": steps, "step_s": step_s},
        "_meta": {"title": "Slow pass"},
    }
    workflow["4"]["inputs"]["images"] = ["5", 0]
    return workflow


def install_workflow(comfyui_dir: Path, workflow: dict[str, Any] | None = None) -> Path:
    """Put the workflow where ComfyUI's ``/userdata?dir=workflows`` lists it (the default user)."""
    target = comfyui_dir / "user" / "default" / "workflows" / INSTALLED_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(workflow or tiny_workflow(), indent=2), encoding="utf-8")
    return target


def ffmpeg_of(comfy_python: Path | str) -> str:
    """The ffmpeg that VideoHelperSuite itself uses (imageio-ffmpeg's, in ComfyUI's venv)."""
    return subprocess.run(
        [str(comfy_python), "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def make_media(ffmpeg: str, folder: Path) -> tuple[Path, Path]:
    """A real 80×80 PNG photo and a real 96×96 H.264 clip of CLIP_FRAMES frames (ffmpeg's test sources)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, clip = folder / "photo.png", folder / "clip.mp4"
    quiet = [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi"]
    subprocess.run(
        [
            *quiet,
            "-i",
            "testsrc=size=96x96:rate=8",
            "-frames:v",
            str(CLIP_FRAMES),
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [*quiet, "-i", "color=c=red:size=80x80", "-frames:v", "1", str(photo)], check=True, timeout=60
    )
    return photo, clip


def video_facts(comfy_python: Path | str, path: Path) -> dict[str, Any]:
    """Frame count and size of a video, read by decoding it (imageio-ffmpeg, in ComfyUI's venv)."""
    code = (
        "import json, sys, imageio_ffmpeg as f\n"
        "reader = f.read_frames(sys.argv[1])\n"
        "meta = next(reader)\n"
        "print(json.dumps({'frames': sum(1 for _ in reader), 'size': list(meta['size'])}))\n"
    )
    done = subprocess.run(
        [str(comfy_python), "-c", code, str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(done.stdout))
