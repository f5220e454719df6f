"""The serverless worker under load, against the real, pinned ComfyUI on the CPU.

Two ComfyUI share one output folder, each with its own temp folder and database, as `zr4 start`
runs one per GPU (:func:`zr4.image.instances.instance_argv`). The worker runs as on RunPod: the
runpod SDK's own worker loop against a stand-in of RunPod's job queue (``support.runpod_queue``),
with moto's S3 server as R2 and ``R2_DELETE_AFTER_UPLOAD=true`` as the endpoint template sets it.
Jobs run the model-free workflow (``support.tiny_dance``); a job to stop mid-run adds its slow node.
Skips without the pinned ComfyUI (``ZR4_COMFYUI_SOURCES``, ``ZR4_COMFYUI_PYTHON``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import s3_server
from support.real_comfyui import ComfySources, ComfyUIServer, copy_comfyui, start_instances
from support.runpod_queue import QueuedJob, RunPodQueue, start_worker, stop_worker
from support.tiny_dance import (
    ffmpeg_of,
    install_slow_node,
    install_workflow,
    make_media,
    slow_workflow,
    tiny_workflow,
    video_facts,
)

moto_server = s3_server.moto_server  # module-scoped S3 server fixture
STOP_WITHIN_S = 10.0  # "within a few seconds": ComfyUI checks the flag at each 0.1 s step


@dataclass(frozen=True)
class TwoGpus:
    servers: tuple[ComfyUIServer, ComfyUIServer]
    tree: Path  # the ComfyUI copy both run from (its input/ folder is shared, as in the image)
    outputs: Path  # the one output folder of both
    python: Path
    photo: Path
    clip: Path


@pytest.fixture(scope="module")
def gpus(comfy_sources: ComfySources, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoGpus]:
    root = tmp_path_factory.mktemp("serverless-load")
    tree = copy_comfyui(comfy_sources, root)
    install_workflow(tree)
    install_slow_node(tree)
    photo, clip = make_media(ffmpeg_of(comfy_sources.python), root / "media")
    (tree / "input").mkdir(exist_ok=True)
    (tree / "input" / "served-clip.mp4").write_bytes(clip.read_bytes())
    (tree / "input" / "other-photo.png").write_bytes(photo.read_bytes())
    outputs = root / "outputs"
    outputs.mkdir()
    first, second = start_instances(tree, comfy_sources.python, root, outputs)
    try:
        yield TwoGpus((first, second), tree, outputs, comfy_sources.python, photo, clip)
    finally:
        first.stop()
        second.stop()


def worker_env(gpus: TwoGpus, urls: list[str], moto: s3_server.MotoS3, tmp_path: Path) -> dict[str, str]:
    return {
        "ZR4_COMFYUI_URLS": ",".join(urls),
        "ZR4_AUTH": "off",
        "COMFYUI_DIR": str(gpus.tree),
        "OUTPUT_DIR": str(gpus.outputs),
        "R2_SYNC_STATE_DIR": str(tmp_path / "sync-state"),
        "ZR4_PROFILE": str(tmp_path / "no-profile.json"),
        "R2_ENDPOINT": moto.endpoint,
        "R2_ACCESS_KEY_ID": moto.access_key,
        "R2_SECRET_ACCESS_KEY": moto.secret_key,
        "R2_BUCKET": moto.bucket,
        "R2_DELETE_AFTER_UPLOAD": "true",
    }


def job_input(gpus: TwoGpus, workflow: dict[str, Any], **extra: object) -> dict[str, object]:
    return {
        "image": base64.b64encode(gpus.photo.read_bytes()).decode(),
        "video": f"{gpus.servers[0].url}/view?filename=served-clip.mp4&type=input",
        "workflow": workflow,
        **extra,
    }


def queue_of(server: ComfyUIServer) -> tuple[list[str], list[str]]:
    """(running, pending) prompt ids, from ComfyUI's own ``GET /queue``."""
    queue = server.get_json("/queue")
    return [item[1] for item in queue["queue_running"]], [item[1] for item in queue["queue_pending"]]


def history_events(server: ComfyUIServer, prompt_id: str) -> list[str]:
    entry = server.get_json(f"/history/{prompt_id}").get(prompt_id) or {}
    return [event for event, _data in (entry.get("status") or {}).get("messages", [])]


def wait_until(condition: Any, timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


def own_inputs(gpus: TwoGpus) -> list[str]:
    """What jobs left in ComfyUI's input folder: their uploads, named ``<job tag>_<name>``."""
    return sorted(p.name for p in (gpus.tree / "input").iterdir() if re.match(r"[0-9a-f]{8}_", p.name))


def in_bucket(moto: s3_server.MotoS3, key: str) -> bytes:
    return bytes(moto.client().get_object(Bucket=moto.bucket, Key=key)["Body"].read())


def saying_progress(job: QueuedJob, node: str) -> bool:
    return any(update.get("node") == node for _at, update in job.progress)


@pytest.mark.timeout(600)
def test_a_cancel_mid_run_stops_comfyui_within_seconds_and_the_next_job_completes(
    gpus: TwoGpus, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    """One ComfyUI, so one job at a time: a 60 s job is cancelled while its slow node steps; ComfyUI
    reports it interrupted within seconds, and the next job runs and lands in R2."""
    server = gpus.servers[0]
    with RunPodQueue() as queue:
        env = worker_env(gpus, [server.url], moto_server, tmp_path) | queue.worker_env("live-cancel")
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            first = queue.submit(job_input(gpus, slow_workflow(steps=600), seed=1))
            queue.wait_for(
                lambda: saying_progress(queue.jobs[first], "Slow pass"), 240, "the slow node's steps"
            )
            (prompt_id,), _ = queue_of(server)
            queue.cancel(first)
            cancelled = time.monotonic()
            stopped_s = wait_until(
                lambda: prompt_id not in queue_of(server)[0], 60, "ComfyUI to stop the prompt"
            )
            second = queue.submit(job_input(gpus, tiny_workflow(frames=5), seed=2))
            done = queue.wait(second, timeout_s=240)
            next_done_s = time.monotonic() - cancelled
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    print(
        f"\ncancel -> ComfyUI no longer runs the prompt: {stopped_s:.2f} s; cancel -> next job completed: {next_done_s:.1f} s"
    )
    assert stopped_s < STOP_WITHIN_S, log[-3000:]
    assert history_events(server, prompt_id)[-1] == "execution_interrupted"
    assert done.status == "COMPLETED", (done.answer(), log[-3000:])
    video = tmp_path / "second.mp4"
    video.write_bytes(in_bucket(moto_server, done.output["r2"]["key"]))
    assert video_facts(gpus.python, video)["frames"] == 6
    assert [data for at, data in queue.jobs[first].late_posts if at > cancelled + 1.0] == []
    assert f"cancelled: prompt {prompt_id} interrupted in ComfyUI" in log
    assert own_inputs(gpus) == []  # both jobs' uploads are gone from ComfyUI's input folder


@pytest.mark.timeout(600)
def test_a_cancelled_waiting_prompt_leaves_the_queue_and_the_running_prompt_runs_on(
    gpus: TwoGpus, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    """Another client's prompt runs; the job's prompt waits behind it. The cancel removes the job's
    prompt from ComfyUI's queue and does not interrupt the other one (``/interrupt`` is for the
    prompt that runs, and that one is not the job's)."""
    server = gpus.servers[1]
    other = slow_workflow(steps=150, step_s=0.1)
    other["1"]["inputs"]["image"] = "other-photo.png"
    other["2"]["inputs"]["video"] = "served-clip.mp4"
    status, answer = server.post_json("/prompt", {"prompt": other, "client_id": "someone-else"})
    assert status == 200, answer
    other_id = answer["prompt_id"]
    with RunPodQueue() as queue:
        env = worker_env(gpus, [server.url], moto_server, tmp_path) | queue.worker_env("live-queued")
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            job = queue.submit(job_input(gpus, tiny_workflow(frames=5), seed=3))
            wait_until(
                lambda: len(queue_of(server)[1]) == 1, 120, "the job's prompt to wait in ComfyUI's queue"
            )
            (waiting,) = queue_of(server)[1]
            queue.cancel(job)
            removed_s = wait_until(
                lambda: waiting not in queue_of(server)[1], 60, "the prompt to leave the queue"
            )
            running, _ = queue_of(server)
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    print(f"\ncancel -> the waiting prompt left ComfyUI's queue: {removed_s:.2f} s")
    assert removed_s < STOP_WITHIN_S, log[-3000:]
    assert running == [other_id]  # the other client's prompt still runs
    wait_until(lambda: other_id not in queue_of(server)[0], 120, "the other client's prompt to finish")
    assert history_events(server, other_id)[-1] == "execution_success"
    assert history_events(server, waiting) == []  # it never ran
    assert f"cancelled: prompt {waiting} removed from ComfyUI's queue before it started" in log


@pytest.mark.timeout(900)
def test_jobs_at_once_on_two_comfyui_each_get_their_own_video(
    gpus: TwoGpus, moto_server: s3_server.MotoS3, tmp_path: Path
) -> None:
    """Six jobs at once, two ComfyUI sharing the output folder, R2_DELETE_AFTER_UPLOAD=true: all
    complete, both ComfyUI take jobs, and each R2 object is the video of its own job (its frame count)."""
    urls = [server.url for server in gpus.servers]
    frames = [1, 5, 9, 1, 5, 9]
    with RunPodQueue() as queue:
        env = worker_env(gpus, urls, moto_server, tmp_path) | queue.worker_env("live-load")
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            ids = [
                queue.submit(job_input(gpus, tiny_workflow(frames=9), seed=index, frames=count))
                for index, count in enumerate(frames)
            ]
            results = [queue.wait(job, timeout_s=600) for job in ids]
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert {r.id: r.error for r in results if r.status != "COMPLETED"} == {}, log[-3000:]
    for index, result in enumerate(results):
        video = tmp_path / f"job-{index}.mp4"
        video.write_bytes(in_bucket(moto_server, result.output["r2"]["key"]))
        assert video_facts(gpus.python, video)["frames"] == frames[index] + 1  # its frames, then the photo
    assert len({r.output["r2"]["key"] for r in results}) == len(results)
    assert {r.output["comfyui"] for r in results} == set(urls)
    # Every file of these jobs uploaded, verified, deleted (another test's client left its own there).
    ours = [r.output["filename"] for r in results]
    ours += [name.replace(".mp4", ".png") for name in ours]
    assert [name for name in ours if (gpus.outputs / name).exists()] == []
    assert own_inputs(gpus) == []


@pytest.mark.timeout(600)
def test_ctrl_c_in_zr4_dance_interrupts_the_real_prompt(gpus: TwoGpus, tmp_path: Path) -> None:
    server = gpus.servers[0]
    workflow = tmp_path / "slow.json"
    workflow.write_text(json.dumps(slow_workflow(steps=600)))
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("ZR4_COMFYUI_URLS", "R2_", "ENABLE_R2"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "dance", "--comfyui", server.url, "--workflow", str(workflow),
         "--image", str(gpus.photo), "--video", str(gpus.clip), "--out", str(tmp_path / "never.mp4")],
        env={**clean, "ZR4_AUTH": "off", "COMFYUI_DIR": str(gpus.tree)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: bool(queue_of(server)[0]), 240, "the prompt to run")
        (prompt_id,), _ = queue_of(server)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _stdout, stderr = process.communicate(timeout=120)
        ended_s = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"\nCtrl-C -> zr4 dance ended, ComfyUI's prompt stopped: {ended_s:.2f} s; its last lines:")
    print("\n".join(stderr.strip().splitlines()[-3:]))
    assert process.returncode == 130, stderr
    assert queue_of(server)[0] == [] and history_events(server, prompt_id)[-1] == "execution_interrupted"
    assert stderr.strip().splitlines()[-1].endswith(f"cancelled: prompt {prompt_id} interrupted in ComfyUI")
    assert ended_s < STOP_WITHIN_S and not (tmp_path / "never.mp4").exists()
    assert own_inputs(gpus) == []
