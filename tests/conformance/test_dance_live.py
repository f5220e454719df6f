"""`zr4 dance` and the RunPod Serverless worker against the real, pinned ComfyUI on the CPU.

A model-free workflow of real nodes (``support.tiny_dance``) runs the whole job for real: upload,
``POST /prompt``, the websocket's progress, ``/history``, ``/view``, and for the worker the upload to
R2 (moto's S3 server) and the runpod SDK's own ``--test_input`` mode. The bundled SteadyDancer
workflow runs with placeholder model files: it gets through upload, validation and queueing and
fails in its first loader, which is the execution-error path. Skips without the pinned ComfyUI
(``ZR4_COMFYUI_SOURCES``, ``ZR4_COMFYUI_PYTHON``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.conftest import profile_model_files
from image.test_instances import serves_worker_api
from support import s3_server
from support.real_comfyui import (
    ComfySources,
    ComfyUIServer,
    copy_comfyui,
    free_port,
    place_placeholder_models,
    start_comfyui,
)
from support.tiny_dance import (
    CLIP_FRAMES,
    INSTALLED_NAME,
    ffmpeg_of,
    install_workflow,
    make_media,
    tiny_workflow,
    video_facts,
)

REPO = Path(__file__).resolve().parents[2]
moto_server = s3_server.moto_server  # module-scoped S3 server fixture


@dataclass(frozen=True)
class LiveDance:
    server: ComfyUIServer
    tree: Path  # the private ComfyUI copy (its input/ and output/ folders)
    python: Path  # ComfyUI's venv python (imageio-ffmpeg to read videos back)
    photo: Path
    clip: Path


@pytest.fixture(scope="module")
def live(comfy_sources: ComfySources, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDance]:
    """A private ComfyUI (placeholder models, the tiny workflow installed, the clip in input/)."""
    root = tmp_path_factory.mktemp("dance-live")
    tree = copy_comfyui(comfy_sources, root)
    place_placeholder_models(tree / "models", profile_model_files())
    install_workflow(tree)
    photo, clip = make_media(ffmpeg_of(comfy_sources.python), root / "media")
    (tree / "input").mkdir(exist_ok=True)
    (tree / "input" / "served-clip.mp4").write_bytes(clip.read_bytes())  # an http(s) input via /view
    server = start_comfyui(tree, comfy_sources.python, ("--cpu",), log_path=root / "comfyui.log")
    try:
        yield LiveDance(server, tree, comfy_sources.python, photo, clip)
    finally:
        server.stop()


def zr4_dance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("ZR4_COMFYUI_URLS", "R2_", "ENABLE_R2"))
    }
    return subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "dance", *args],
        env={**clean, "ZR4_AUTH": "off", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dance_runs_the_installed_workflow_to_a_video(live: LiveDance, tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    done = zr4_dance(
        "--comfyui", live.server.url, "--image", str(live.photo), "--video", str(live.clip),
        "--out", str(out), "--seed", "7", "--frames", "5", "--width", "96", "--height", "64", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["seed"] == 7
    assert result["workflow"] == f"{live.server.url} user/workflows/{INSTALLED_NAME}"
    saved = live.tree / "output" / result["output"]["filename"]
    assert out.read_bytes() == saved.read_bytes() and result["size_bytes"] == out.stat().st_size
    # The parameters reached the real nodes: 5 frames of the clip at 96x64, then the photo.
    assert video_facts(live.python, out) == {"frames": 6, "size": [96, 64]}
    # The progress came from ComfyUI's websocket, one line per update (stderr is not a terminal).
    log = done.stderr
    assert "ComfyUI started executing" in log and "running node 4 (Save video)" in log
    assert "node 2 (Dance clip): step 5/5" in log and "node 4 (Save video) finished" in log
    timings = result["timings"]
    assert (
        timings["inputs_uploaded"] <= timings["queued"] <= timings["execution_started"] <= timings["executed"]
    )


def test_dance_uses_the_whole_clip_when_frames_are_not_given(live: LiveDance, tmp_path: Path) -> None:
    workflow = tmp_path / "all-frames.json"
    workflow.write_text(json.dumps(tiny_workflow(frames=0)))  # 0 = VideoHelperSuite loads every frame
    done = zr4_dance(
        "--comfyui", live.server.url, "--workflow", str(workflow), "--image", str(live.photo),
        "--video", str(live.clip), "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"video: {tmp_path}/tiny_") and "seed " in done.stdout
    (video,) = tmp_path.glob("tiny_*.mp4")
    assert video_facts(live.python, video)["frames"] == CLIP_FRAMES + 1


def test_a_refused_workflow_names_the_node_and_the_input(live: LiveDance, tmp_path: Path) -> None:
    broken = tiny_workflow()
    del broken["3"]["inputs"]["image2"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    out = tmp_path / "never.mp4"
    done = zr4_dance(
        "--comfyui", live.server.url, "--workflow", str(path), "--image", str(live.photo),
        "--video", str(live.clip), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: ComfyUI at {live.server.url} refused the workflow: "
        "node 3 (ImageBatch) input 'image2': Required input is missing"
    )


def test_a_node_failing_in_the_bundled_workflow_is_one_line(live: LiveDance, tmp_path: Path) -> None:
    """The real SteadyDancer workflow with placeholder models: queued, started, then its VAE loader
    fails on the 16-byte file; the error names the node, its type and the exception."""
    done = zr4_dance(
        "--comfyui", live.server.url, "--workflow", str(REPO / "docker" / "workflows" / "steadydancer-gguf.json"),
        "--image", str(live.photo), "--video", str(live.clip), "--out", str(tmp_path / "x.mp4"),
        "--frames", "5", "--width", "64", "--height", "64", "--json",
    )  # fmt: skip
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["out_of_memory"] is False
    assert result["error"].startswith("node ") and " failed: SafetensorError: " in result["error"]
    assert "\n" not in result["error"] and "Traceback" not in done.stderr
    assert "ComfyUI started executing" in done.stderr


def test_not_a_video_is_refused_before_anything_is_uploaded(live: LiveDance, tmp_path: Path) -> None:
    before = sorted(p.name for p in (live.tree / "input").iterdir())
    done = zr4_dance("--comfyui", live.server.url, "--image", str(live.photo), "--video", str(live.photo))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {live.photo} is not a video: it is PNG (MP4, MOV, WebM, MKV or GIF expected)"
    )
    assert sorted(p.name for p in (live.tree / "input").iterdir()) == before


# --- the serverless worker -------------------------------------------------------------------


def worker_env(live: LiveDance, moto: s3_server.MotoS3, tmp_path: Path) -> dict[str, str]:
    return {
        "ZR4_COMFYUI_URLS": live.server.url,
        "ZR4_AUTH": "off",
        "OUTPUT_DIR": str(live.tree / "output"),
        "R2_SYNC_STATE_DIR": str(tmp_path / "sync-state"),
        "RUNPOD_POD_ID": "worker-live",
        "ZR4_PROFILE": str(tmp_path / "no-profile.json"),
        "R2_ENDPOINT": moto.endpoint,
        "R2_ACCESS_KEY_ID": moto.access_key,
        "R2_SECRET_ACCESS_KEY": moto.secret_key,
        "R2_BUCKET": moto.bucket,
    }


def job_input(live: LiveDance, **extra: object) -> dict[str, object]:
    """The photo as base64, the clip as an http URL (ComfyUI's own /view of a file in input/)."""
    return {
        "image": base64.b64encode(live.photo.read_bytes()).decode(),
        "video": f"{live.server.url}/view?filename=served-clip.mp4&type=input",
        **extra,
    }


def test_worker_job_goes_to_r2_with_a_working_presigned_url(
    live: LiveDance, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    from zr4.image.serverless import WorkerConfig, run

    env = worker_env(live, moto_server, tmp_path)
    output = run(
        {
            "id": "live-1",
            "input": job_input(live, seed=21, frames=9, width=64, height=64, return_base64=True),
        },
        WorkerConfig.from_env(env),
        env,
    )
    assert "error" not in output, output
    video = (live.tree / "output" / output["filename"]).read_bytes()
    with urllib.request.urlopen(output["r2"]["url"], timeout=30) as response:
        assert response.read() == video
    assert base64.b64decode(output["video_base64"]) == video
    assert output["seed"] == 21 and output["size_bytes"] == len(video)
    assert video_facts(live.python, live.tree / "output" / output["filename"]) == {
        "frames": 10,
        "size": [64, 64],
    }
    timings = output["timings"]
    assert 0 < timings["execution_started"] <= timings["executed"] <= timings["stored"]


def test_sdk_local_test_mode_runs_a_job_on_the_real_comfyui(
    live: LiveDance, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    """``python -m zr4.image.serverless --test_input …``: the runpod SDK's own local test."""
    env = worker_env(live, moto_server, tmp_path)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "R2_", "ENABLE_R2"))}
    test_input = {"input": job_input(live, seed=5, workflow=tiny_workflow(frames=3))}
    done = subprocess.run(
        [sys.executable, "-m", "zr4.image.serverless", "--test_input", json.dumps(test_input)],
        env={**full, **env, "ZR4_COMFYUI_WAIT_S": "60"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Job local_test completed successfully." in log and "'seed': 5" in log
    assert "[zr4 worker] job local_test:" in log and "ComfyUI started executing" in log
    match = re.search(r"'key': '([^']+)'", log)
    assert match, log
    body = moto_server.client().get_object(Bucket=moto_server.bucket, Key=match.group(1))["Body"].read()
    (saved,) = [p for p in (live.tree / "output").glob("tiny_*.mp4") if p.read_bytes() == body]
    assert video_facts(live.python, saved)["frames"] == 4  # 3 frames of the clip, then the photo


# --- the image in serverless mode, end to end --------------------------------------------------


def _post(url: str, body: object, timeout_s: float = 300) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return dict(json.loads(response.read()))


@pytest.mark.timeout(1200)
def test_serverless_mode_of_zr4_start_takes_a_job_into_r2(
    comfy_sources: ComfySources, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    """`zr4 start` with ZR4_MODE=serverless on the real ComfyUI (models from the test Hub, ComfyUI
    on loopback, no proxy); outside RunPod the worker serves the SDK's local API, which takes a job
    with the photo and the clip as base64 and the model-free workflow; the video lands in R2."""
    import signal

    from conformance.test_start_doctor_live import BOOT_TIMEOUT_S, RealPod, wait_for
    from support.hub_server import FakeHub

    photo, clip = make_media(ffmpeg_of(comfy_sources.python), tmp_path / "media")
    api_port = free_port()
    with FakeHub() as hub:
        pod = RealPod(tmp_path / "pod", comfy_sources, hub)
        pod.env.pop("COMFYUI_ARGS")
        pod.env |= {
            "ZR4_MODE": "serverless",
            "ZR4_WORKER_API_PORT": str(api_port),
            "RUNPOD_POD_ID": "worker-e2e",
            "R2_SYNC_STATE_DIR": str(tmp_path / "sync-state"),
            "R2_ENDPOINT": moto_server.endpoint,
            "R2_ACCESS_KEY_ID": moto_server.access_key,
            "R2_SECRET_ACCESS_KEY": moto_server.secret_key,
            "R2_BUCKET": moto_server.bucket,
        }
        process = pod.start()
        try:
            wait_for(lambda: serves_worker_api(api_port), BOOT_TIMEOUT_S, "the worker's local API", process)
            job = {
                "image": base64.b64encode(photo.read_bytes()).decode(),
                "video": "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode(),
                "seed": 9,
                "workflow": tiny_workflow(frames=3),
            }
            answer = _post(f"http://127.0.0.1:{api_port}/runsync", {"input": job})
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    log = pod.log.read_text(errors="replace")
    assert answer.get("status") == "COMPLETED", (answer, log[-4000:])
    output = answer["output"]
    assert isinstance(output, dict) and output["seed"] == 9
    assert output["comfyui"] == f"http://127.0.0.1:{pod.port}"  # ComfyUI on loopback, no proxy
    video = (pod.outputs / output["filename"]).read_bytes()
    stored = (
        moto_server.client().get_object(Bucket=moto_server.bucket, Key=output["r2"]["key"])["Body"].read()
    )
    assert stored == video
    assert video_facts(comfy_sources.python, pod.outputs / output["filename"])["frames"] == 4
    assert "authentication on" not in log and "restarting in" not in log  # no proxy, no worker restarts
