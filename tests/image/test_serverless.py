"""The RunPod Serverless worker: its contract through the runpod SDK's own local test mode
(``--test_input``), the stand-in ComfyUI API for the jobs and moto's S3 server for R2."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import s3_server
from support.fake_comfyui import PNG_BYTES
from support.fake_comfyui_api import Behaviour, FakeComfyAPI
from support.runpod_queue import RunPodQueue, start_worker, stop_worker
from zr4.client.dance import JobEvent
from zr4.core.workflow import NODE_IDS, WorkflowSpec, build_steadydancer_workflow, load_object_info
from zr4.image.serverless import (
    JobInputError,
    ProgressReporter,
    WorkerConfig,
    local_api_args,
    parse_input,
    run,
)

pytest.importorskip("runpod", reason="needs the runpod SDK: pip install -e '.[test]'")

moto_server = s3_server.moto_server  # module-scoped server fixture
MP4_BYTES = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 200
GGUF_FILE = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"


def behaviour(**changes: object) -> Behaviour:
    return Behaviour(known_types=frozenset(load_object_info("v0.7.0")), **changes)  # type: ignore[arg-type]


@pytest.fixture
def comfy(tmp_path: Path):
    with FakeComfyAPI(tmp_path / "comfy", behaviour()) as server:
        server.install_workflow(
            "steadydancer-gguf.json",
            build_steadydancer_workflow(WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE)),
        )
        (server.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)  # served by /view: an http(s) input
        yield server


def worker_env(comfy: FakeComfyAPI, moto: s3_server.MotoS3 | None, tmp_path: Path) -> dict[str, str]:
    env = {
        "ZR4_COMFYUI_URLS": comfy.url,
        "OUTPUT_DIR": str(comfy.state.output_dir),
        "R2_SYNC_STATE_DIR": str(tmp_path / "sync-state"),
        "RUNPOD_POD_ID": "worker-1",
        "ZR4_PROFILE": str(tmp_path / "no-profile.json"),
    }
    if moto is not None:
        env |= {
            "R2_ENDPOINT": moto.endpoint,
            "R2_ACCESS_KEY_ID": moto.access_key,
            "R2_SECRET_ACCESS_KEY": moto.secret_key,
            "R2_BUCKET": moto.bucket,
        }
    return env


def job_input(comfy: FakeComfyAPI, **extra: object) -> dict[str, object]:
    return {
        "image": base64.b64encode(PNG_BYTES * 40).decode(),
        "video": f"{comfy.url}/view?filename=clip.mp4&type=input",
        **extra,
    }


def test_job_uploads_to_r2_and_returns_a_presigned_url(
    comfy: FakeComfyAPI, moto_server, tmp_path: Path
) -> None:
    env = worker_env(comfy, moto_server, tmp_path)
    events: list[JobEvent] = []
    output = run(
        {"id": "j1", "input": job_input(comfy, seed=11, frames=17, steps=2)},
        WorkerConfig.from_env(env),
        env,
        events.append,
    )
    assert "error" not in output, output
    r2 = output["r2"]
    assert (
        r2["bucket"] == moto_server.bucket
        and r2["key"].startswith("outputs/20")
        and r2["key"].endswith(".mp4")
    )
    video = (comfy.state.output_dir / output["filename"]).read_bytes()
    with urllib.request.urlopen(r2["url"], timeout=10) as response:  # the presigned URL works as it is
        assert response.read() == video
    assert output["seed"] == 11 and output["frames"] == 17 and output["size_bytes"] == len(video)
    assert "video_base64" not in output
    queued = comfy.state.prompts[-1]["prompt"]
    assert queued[NODE_IDS["sampler_settings"]]["inputs"]["seed"] == 11
    timings = output["timings"]
    assert 0 < timings["execution_started"] <= timings["executed"] <= timings["stored"]
    assert [e.value for e in events if e.kind == "progress"] == [1, 2]


def test_base64_only_when_asked_and_small(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    env = worker_env(comfy, None, tmp_path)
    config = WorkerConfig.from_env(env)
    output = run({"id": "j2", "input": job_input(comfy, return_base64=True)}, config, env)
    video = (comfy.state.output_dir / output["filename"]).read_bytes()
    assert base64.b64decode(output["video_base64"]) == video
    assert output["r2"] is None and "R2 is not configured" in output["warning"]
    small = WorkerConfig.from_env({**env, "ZR4_BASE64_MAX_BYTES": "10"})
    output = run({"id": "j3", "input": job_input(comfy, return_base64=True)}, small, env)
    assert "video_base64" not in output and "above ZR4_BASE64_MAX_BYTES=10" in output["warning"]


def test_video_is_fetched_when_comfyui_writes_elsewhere(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    env = {**worker_env(comfy, None, tmp_path), "OUTPUT_DIR": str(tmp_path / "elsewhere")}
    output = run({"id": "j4", "input": job_input(comfy)}, WorkerConfig.from_env(env), env)
    copied = tmp_path / "elsewhere" / output["filename"]
    assert copied.read_bytes() == (comfy.state.output_dir / output["filename"]).read_bytes()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("not an object", "the job input must be an object"),
        ({"video": "x"}, "input.image is required"),
        ({"image": "x", "video": "y", "seeed": 1}, "unknown input field(s): seeed"),
        ({"image": "x", "video": "y", "seed": "1"}, 'input.seed must be int, got "1"'),
        ({"image": "x", "video": "y", "frames": 80}, "frames=80 must be 4n+1"),
        ({"image": "x", "video": "y", "workflow": {"nodes": []}}, "input.workflow must be an API-format"),
        ({"image": "x", "video": "y", "return_base64": "yes"}, "input.return_base64 must be true or false"),
    ],
)
def test_bad_input_is_one_line(given: object, message: str) -> None:
    with pytest.raises(JobInputError) as caught:
        parse_input(given)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_errors_come_back_as_the_error_field(tmp_path: Path) -> None:
    with FakeComfyAPI(
        tmp_path / "c",
        behaviour(
            fail_node=NODE_IDS["sampler"],
            fail_exception_type="torch.OutOfMemoryError",
            fail_exception_message="CUDA out of memory",
            vram_total=16 * 1024**3,
        ),
    ) as comfy:
        comfy.install_workflow(
            "steadydancer-gguf.json",
            build_steadydancer_workflow(WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE)),
        )
        (comfy.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)
        env = worker_env(comfy, None, tmp_path)
        output = run({"id": "j5", "input": job_input(comfy, frames=81)}, WorkerConfig.from_env(env), env)
    assert output["error"].startswith(
        f"out of memory in node {NODE_IDS['sampler']} (WanVideoSamplerFromSettings): "
    )
    assert "zr4 plan --vram-gib 16" in output["error"]
    env = worker_env(comfy, None, tmp_path)  # the server is gone now
    inline = job_input(comfy, video="data:video/mp4;base64," + base64.b64encode(MP4_BYTES).decode())
    output = run({"id": "j6", "input": inline}, WorkerConfig.from_env(env), env)
    assert output["error"].startswith(f"ComfyUI is not reachable at {comfy.url} (")
    output = run({"id": "j7", "input": job_input(comfy)}, WorkerConfig.from_env(env), env)
    assert output["error"].startswith(f"cannot download {comfy.url}/view?filename=clip.mp4&type=input: ")


def test_an_error_result_shows_no_credentials(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    """The error field goes back to RunPod as it is: a URL's password must not be in it."""
    env = worker_env(comfy, None, tmp_path)
    dead = f"http://clipuser:Cl1p-pa55word@127.0.0.1:{s3_server.free_port()}/clip.mp4"
    output = run({"id": "j8", "input": job_input(comfy, video=dead)}, WorkerConfig.from_env(env), env)
    assert output["error"].startswith("cannot download http://***@127.0.0.1:")
    assert "Cl1p-pa55word" not in output["error"] and "clipuser" not in output["error"]


def test_progress_updates_are_throttled_and_logged(capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[object] = []
    reporter = ProgressReporter({"id": "j7"}, lambda _job, payload: sent.append(payload))
    for step in range(1, 6):
        reporter(JobEvent("progress", node_id="25", node_title="Sampler", value=step, maximum=5))
    reporter(JobEvent("done"))
    assert sent[0] == {
        "stage": "progress",
        "node": "Sampler",
        "step": 1,
        "steps": 5,
        "nodes_done": 0,
        "nodes_total": 0,
    }
    assert sent[-1]["stage"] == "done" and len(sent) == 2  # steps 2-5 came within the same second
    assert capsys.readouterr().out.count("[zr4 worker] job j7:") == 6


# --- the SDK's own local test mode -------------------------------------------------------------


def sdk_test(env: dict[str, str], test_input: dict[str, object]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "R2_", "ENABLE_R2"))}
    return subprocess.run(
        [sys.executable, "-m", "zr4.image.serverless", "--test_input", json.dumps(test_input)],
        env={**full, "ZR4_COMFYUI_WAIT_S": "20", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_sdk_local_test_runs_a_job(comfy: FakeComfyAPI, moto_server, tmp_path: Path) -> None:
    result = sdk_test(worker_env(comfy, moto_server, tmp_path), {"input": job_input(comfy, seed=3)})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "--- Starting Serverless Worker |" in log and "Job local_test completed successfully." in log
    assert "'key': 'outputs/20" in log and "'seed': 3" in log
    assert "[zr4 worker] job local_test:" in log and "ComfyUI ready at" in log


def test_sdk_local_test_fails_a_bad_job(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    result = sdk_test(
        worker_env(comfy, None, tmp_path), {"input": {"image": "x", "video": "y", "frames": 80}}
    )
    log = result.stdout + result.stderr
    assert result.returncode == 1, log
    assert "Job local_test failed with error: input: frames=80 must be 4n+1" in log


def test_worker_waits_for_comfyui_then_gives_up(tmp_path: Path) -> None:
    env = {"ZR4_COMFYUI_URLS": "http://127.0.0.1:9", "ZR4_COMFYUI_WAIT_S": "0.5", "OUTPUT_DIR": str(tmp_path)}
    result = sdk_test(env, {"input": {}})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: ComfyUI did not answer within 0.5 s at http://127.0.0.1:9"


def test_jobs_spread_over_several_comfyui(tmp_path: Path) -> None:
    """Two jobs at once on two ComfyUI (one per GPU): each server gets one."""
    rule = behaviour(node_delay_s=0.02)
    workflow = build_steadydancer_workflow(WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE))
    with (
        FakeComfyAPI(tmp_path / "a", rule) as first,
        FakeComfyAPI(tmp_path / "b", behaviour(node_delay_s=0.02)) as second,
    ):
        for server in (first, second):
            server.install_workflow("steadydancer-gguf.json", workflow)
            (server.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)
        env = {**worker_env(first, None, tmp_path), "ZR4_COMFYUI_URLS": f"{first.url},{second.url}"}
        config = WorkerConfig.from_env(env)
        outputs: list[dict[str, object]] = []
        first.state.pending = 1  # the first server looks busy when the first job arrives
        threads = [
            threading.Thread(
                target=lambda: outputs.append(run({"id": "a", "input": job_input(first)}, config, env))
            ),
        ]
        threads[0].start()
        threads[0].join(timeout=60)
        first.state.pending = 0
        second.state.pending = 1
        outputs.append(run({"id": "b", "input": job_input(first)}, config, env))
    assert [o["comfyui"] for o in outputs] == [second.url, first.url]


# --- the SDK's local API server, with the request example of docs/how-to/serverless.md -----------

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "serverless.md"


def doc_json_after(heading: str) -> dict[str, Any]:
    """The first ```json block after ``heading`` in the serverless how-to."""
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(heading) :].split("```json\n", 1)[1].split("```", 1)[0]
    return dict(json.loads(block))


def post(url: str, body: object) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return dict(json.loads(response.read()))


def test_the_documented_request_runs_through_the_sdk_api_server(
    comfy: FakeComfyAPI, moto_server, tmp_path: Path
) -> None:
    """The SDK's local stand-in for /run, /runsync and /status (``--rp_serve_api``, which the worker
    picks by itself outside RunPod), fed the request example of the how-to; the answer carries
    every field of its response example."""
    port = s3_server.free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "R2_", "ENABLE_R2"))}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "zr4.image.serverless"],  # no RunPod, no test job: the local API
        env={
            **full,
            "ZR4_COMFYUI_WAIT_S": "20",
            "ZR4_WORKER_API_PORT": str(port),
            **worker_env(comfy, moto_server, tmp_path),
        },
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        s3_server._wait_port(port, worker, timeout_s=60)  # type: ignore[arg-type]
        request = doc_json_after("## Request")
        request["input"] |= job_input(comfy)  # the example's URLs point nowhere: the stand-in's
        answer = post(f"http://127.0.0.1:{port}/runsync", request)
        documented = doc_json_after("## Response")
        assert answer["status"] == documented["status"] == "COMPLETED", answer
        output = answer["output"]
        assert set(documented["output"]) <= set(output), answer
        assert set(documented["output"]["r2"]) == set(output["r2"])
        assert set(documented["output"]["timings"]) == set(output["timings"])
        assert output["seed"] == request["input"]["seed"] and output["frames"] == request["input"]["frames"]
        with urllib.request.urlopen(output["r2"]["url"], timeout=10) as response:
            assert response.read() == (comfy.state.output_dir / output["filename"]).read_bytes()
        # /run answers an id at once; /status (POST in the SDK's stand-in) runs it and answers.
        queued = post(f"http://127.0.0.1:{port}/run", request)
        assert queued["status"] == "IN_PROGRESS" and queued["id"].startswith("test-")
        done = post(f"http://127.0.0.1:{port}/status/{queued['id']}", {})
        assert done["status"] == "COMPLETED" and done["output"]["seed"] == request["input"]["seed"]
        failed = post(f"http://127.0.0.1:{port}/runsync", {"input": {**request["input"], "frames": 80}})
        assert (
            failed["status"] == "FAILED"
            and failed["error"] == "input: frames=80 must be 4n+1 (81 = 5 s at 16 fps)"
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    text = (tmp_path / "worker.log").read_text()
    assert (
        f"[zr4 worker] not on RunPod: serving the SDK's local API (/run, /runsync, /status) on http://127.0.0.1:{port}"
        in text
    )


def test_local_api_only_outside_runpod_and_without_a_test_job(tmp_path: Path) -> None:
    api = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", "8000"]
    assert local_api_args({}, [], tmp_path) == api
    assert local_api_args({"ZR4_WORKER_API_HOST": "0.0.0.0", "ZR4_WORKER_API_PORT": "9000"}, [], tmp_path) == [
        "--rp_serve_api", "--rp_api_host", "0.0.0.0", "--rp_api_port", "9000",
    ]  # fmt: skip
    assert (
        local_api_args({"RUNPOD_WEBHOOK_GET_JOB": "https://api.runpod.ai/v2/x/job-take/$ID"}, [], tmp_path)
        == []
    )
    assert local_api_args({}, ["--test_input", "{}"], tmp_path) == []
    assert local_api_args({}, ["--rp_serve_api", "--rp_api_port", "8001"], tmp_path) == []
    (tmp_path / "test_input.json").write_text('{"input": {}}')
    assert local_api_args({}, [], tmp_path) == []
    with pytest.raises(JobInputError, match=r"^ZR4_WORKER_API_PORT='http' is not a port number$"):
        local_api_args({"ZR4_WORKER_API_PORT": "http"}, [], tmp_path / "elsewhere")


# --- under load: the worker in RunPod mode, against a stand-in of RunPod's job queue ------------


def boot_workflow() -> dict[str, Any]:
    return build_steadydancer_workflow(WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE))


def serve(server: FakeComfyAPI) -> FakeComfyAPI:
    server.install_workflow("steadydancer-gguf.json", boot_workflow())
    (server.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)
    return server


def stored_object(moto: s3_server.MotoS3, key: str) -> bytes:
    return bytes(moto.client().get_object(Bucket=moto.bucket, Key=key)["Body"].read())


def own_inputs(comfy: FakeComfyAPI) -> list[str]:
    """What a job left in ComfyUI's input folder (the served clip is the test's own)."""
    return sorted(p.name for p in comfy.state.input_dir.iterdir() if p.name != "clip.mp4")


@pytest.fixture
def slow(tmp_path: Path):
    """A ComfyUI whose sampler takes 0.1 s a step: a job of 100 steps runs 10 s."""
    with FakeComfyAPI(tmp_path / "slow", behaviour(step_delay_s=0.1)) as server:
        yield serve(server)


def test_a_cancel_stops_the_prompt_in_comfyui_and_the_next_job_runs(
    slow: FakeComfyAPI, moto_server, tmp_path: Path
) -> None:
    """RunPod's /cancel (and its execution timeout) reaches the worker as a cancelled handler task.
    The worker interrupts its prompt in ComfyUI (only after seeing it is the one running), sends no
    more progress, uploads nothing, and frees its slot: the next job runs at once and completes."""
    with RunPodQueue() as queue:
        env = worker_env(slow, moto_server, tmp_path) | queue.worker_env("worker-cancel")
        env |= {"COMFYUI_DIR": str(slow.state.root), "R2_DELETE_AFTER_UPLOAD": "true"}
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            first = queue.submit(job_input(slow, steps=100))
            queue.wait_for(
                lambda: any(update.get("stage") == "progress" for _t, update in queue.jobs[first].progress),
                60,
                "the first job's progress",
            )
            prompt_id = slow.state.current
            assert prompt_id is not None
            queue.cancel(first)
            cancelled = time.monotonic()
            second = queue.submit(job_input(slow, steps=2, seed=2))
            done = queue.wait(second, timeout_s=60)
            stopped_within = time.monotonic() - cancelled
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done.status == "COMPLETED", (done.answer(), log[-3000:])
    assert slow.state.interrupts == [(prompt_id, True)], log[-3000:]
    entry = slow.state.history[prompt_id]
    assert entry["status"]["status_str"] == "error"
    assert [event for event, _data in entry["status"]["messages"]][-1] == "execution_interrupted"
    assert stopped_within < 10  # the first job had 8 s of steps left; the second one ran after the stop
    # Nothing of the stopped job after the stop: no progress update, no result, no object in R2.
    assert [data for at, data in queue.jobs[first].late_posts if at > cancelled + 1.0] == []
    keys = [
        o["Key"] for o in moto_server.client().list_objects_v2(Bucket=moto_server.bucket).get("Contents", [])
    ]
    assert not any(
        prompt_id.encode() in stored_object(moto_server, key) for key in keys if key.endswith(".mp4")
    )
    assert stored_object(moto_server, done.output["r2"]["key"]).endswith(done.output["prompt_id"].encode())
    assert (
        f"[zr4 worker] job {first}: " in log
        and f"cancelled: prompt {prompt_id} interrupted in ComfyUI" in log
    )
    assert own_inputs(slow) == []  # both jobs' uploads are gone from ComfyUI's input folder


def test_a_cancel_of_a_waiting_prompt_takes_it_off_the_queue_and_interrupts_nothing(
    slow: FakeComfyAPI, tmp_path: Path
) -> None:
    """ComfyUI busy with another client's prompt: the job's prompt waits in the queue. Cancelled, it
    is removed from the queue; ``/interrupt`` would stop the other client's prompt and is not sent."""
    other: dict[str, Any] = {"prompt": boot_workflow(), "client_id": "someone-else"}
    other["prompt"][NODE_IDS["sampler_settings"]]["inputs"]["steps"] = 60  # 6 s of steps
    other["prompt"][NODE_IDS["image"]]["inputs"]["image"] = "clip.mp4"
    other["prompt"][NODE_IDS["video"]]["inputs"]["video"] = "clip.mp4"
    with RunPodQueue() as queue:
        env = worker_env(slow, None, tmp_path) | queue.worker_env("worker-queued")
        env |= {"COMFYUI_DIR": str(slow.state.root)}
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            assert post(f"{slow.url}/prompt", other)["prompt_id"]
            job = queue.submit(job_input(slow, steps=2, return_base64=True))
            ours = lambda: [p["prompt_id"] for p in slow.state.prompts if p["client_id"] != "someone-else"]  # noqa: E731
            queue.wait_for(ours, 60, "the job's prompt to be queued")
            (waiting,) = ours()
            assert [pid for _n, pid in slow.state.waiting] == [waiting]
            queue.cancel(job)
            queue.wait_for(lambda: waiting in slow.state.deleted, 10, "the waiting prompt to be removed")
            later = queue.submit(job_input(slow, steps=2, return_base64=True))
            done = queue.wait(later, timeout_s=60)
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done.status == "COMPLETED", (done.answer(), log[-3000:])
    assert slow.state.interrupts == []
    assert waiting not in slow.state.history  # it never ran
    other_id = slow.state.prompts[0]["prompt_id"]
    assert slow.state.history[other_id]["status"]["status_str"] == "success"
    assert f"cancelled: prompt {waiting} removed from ComfyUI's queue before it started" in log


def test_twenty_jobs_at_once_on_two_comfyui_each_get_their_own_video(moto_server, tmp_path: Path) -> None:
    """One worker, two ComfyUI sharing one output folder (as `zr4 start` runs one per GPU), the
    endpoint's ``R2_DELETE_AFTER_UPLOAD=true``: every job completes, with the video its own prompt made."""
    shared = tmp_path / "outputs"
    rule = behaviour(step_delay_s=0.02)
    with (
        FakeComfyAPI(tmp_path / "gpu0", rule, output_dir=shared) as gpu0,
        FakeComfyAPI(tmp_path / "gpu1", behaviour(step_delay_s=0.02), output_dir=shared) as gpu1,
        RunPodQueue() as queue,
    ):
        for server in (gpu0, gpu1):
            serve(server)
        env = worker_env(gpu0, moto_server, tmp_path) | queue.worker_env("worker-load")
        env |= {"ZR4_COMFYUI_URLS": f"{gpu0.url},{gpu1.url}", "R2_DELETE_AFTER_UPLOAD": "true"}
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            jobs = [queue.submit(job_input(gpu0, steps=4, seed=index)) for index in range(20)]
            results = [queue.wait(job, timeout_s=180) for job in jobs]
        finally:
            stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    failed = {r.id: r.error for r in results if r.status != "COMPLETED"}
    assert failed == {}, log[-3000:]
    outputs = [r.output for r in results]
    assert sorted(o["seed"] for o in outputs) == list(range(20))
    for output in outputs:
        assert stored_object(moto_server, output["r2"]["key"]).endswith(output["prompt_id"].encode())
    assert len({o["r2"]["key"] for o in outputs}) == 20
    assert {o["comfyui"] for o in outputs} == {gpu0.url, gpu1.url}
    assert list(shared.iterdir()) == []  # each video (and its PNG) deleted once it was verified in R2


def test_two_jobs_assigned_together_take_both_comfyui(tmp_path: Path) -> None:
    """Jobs taken in one batch are assigned before either has queued its prompt (uploads take time):
    the second one must not read the first server as idle too."""
    with (
        FakeComfyAPI(tmp_path / "a", behaviour(upload_delay_s=0.3)) as first,
        FakeComfyAPI(tmp_path / "b", behaviour(upload_delay_s=0.3)) as second,
    ):
        for server in (first, second):
            serve(server)
        env = {**worker_env(first, None, tmp_path), "ZR4_COMFYUI_URLS": f"{first.url},{second.url}"}
        config = WorkerConfig.from_env(env)
        start = threading.Barrier(2)
        outputs: list[dict[str, Any]] = []

        def one(index: int) -> None:
            start.wait()
            outputs.append(run({"id": f"pair-{index}", "input": job_input(first, seed=index)}, config, env))

        threads = [threading.Thread(target=one, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert all("error" not in o for o in outputs), outputs
    assert sorted(o["comfyui"] for o in outputs) == sorted([first.url, second.url])


def on_runpod(env: dict[str, str]) -> dict[str, str]:
    return {**env, "RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:9/v2/x/job-take/$ID?gpu=x"}


def test_a_video_that_reaches_its_user_by_no_route_fails_the_job(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    """On RunPod without R2 the worker's disk is no route to the user: base64 too large for the video,
    or not asked for, fails the job with the line that says what to configure."""
    env = on_runpod({**worker_env(comfy, None, tmp_path), "ZR4_BASE64_MAX_BYTES": "10"})
    config = WorkerConfig.from_env(env)
    output = run({"id": "big", "input": job_input(comfy, return_base64=True)}, config, env)
    assert set(output) == {"error"}, output
    assert output["error"].startswith("the video is ") and "above ZR4_BASE64_MAX_BYTES=10" in output["error"]
    assert "set R2_ENDPOINT (or R2_ACCOUNT_ID), R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY" in output["error"]
    before = len(comfy.state.prompts)
    output = run({"id": "none", "input": job_input(comfy)}, config, env)
    assert output["error"].startswith("the video would reach you by no route: R2 is not configured and ")
    assert len(comfy.state.prompts) == before  # refused before anything ran
    # Outside RunPod the video stays on this machine, and the output says where; both warnings stay.
    local = {**worker_env(comfy, None, tmp_path), "ZR4_BASE64_MAX_BYTES": "10"}
    output = run(
        {"id": "here", "input": job_input(comfy, return_base64=True)}, WorkerConfig.from_env(local), local
    )
    assert output["file"] == str(comfy.state.output_dir / output["filename"])
    assert "video_base64 left out" in output["warning"] and "R2 is not configured" in output["warning"]


def test_a_jobs_inputs_are_deleted_when_it_ends(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    env = {**worker_env(comfy, None, tmp_path), "COMFYUI_DIR": str(comfy.state.root)}
    config = WorkerConfig.from_env(env)
    inline = job_input(comfy, video="data:video/mp4;base64," + base64.b64encode(MP4_BYTES).decode())
    output = run({"id": "ok", "input": inline}, config, env)
    assert "error" not in output, output
    uploaded = comfy.state.prompts[-1]["prompt"][NODE_IDS["video"]]["inputs"]["video"]
    assert uploaded.endswith(".mp4") and own_inputs(comfy) == []
    comfy.behaviour.fail_node = NODE_IDS["sampler"]
    output = run({"id": "failed", "input": inline}, config, env)
    assert output["error"].startswith(f"node {NODE_IDS['sampler']} ")
    assert own_inputs(comfy) == []


def test_without_r2_the_output_folder_keeps_the_last_jobs_only(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    env = {**worker_env(comfy, None, tmp_path), "ZR4_KEEP_OUTPUTS": "2"}
    config = WorkerConfig.from_env(env)
    names = []
    for index in range(4):
        output = run({"id": f"keep-{index}", "input": job_input(comfy, return_base64=True)}, config, env)
        names.append(output["filename"])
    kept = sorted(p.name for p in comfy.state.output_dir.iterdir())
    assert kept == sorted([*names[2:], *(n.replace(".mp4", ".png") for n in names[2:])])
    assert "keeps the files of its last 2 jobs" in output["warning"]


def test_an_oversized_base64_input_gets_the_advice_to_send_a_url() -> None:
    """RunPod takes bodies up to 10 MB on /run: the worker refuses a base64 field above that (what
    works on the SDK's local API would fail on RunPod), with the way out."""
    huge = "A" * (10 * 1000 * 1000 + 4)  # RunPod's /run limit, the worker's default
    with pytest.raises(JobInputError) as caught:
        parse_input({"image": "https://example.com/me.png", "video": huge})
    message = str(caught.value)
    assert message.startswith(
        "input.video is 10.0 MB of base64, above ZR4_INPUT_BASE64_MAX_BYTES=10,000,000:"
    )
    assert "10 MB on /run and 20 MB on /runsync" in message
    assert message.endswith("send a clip over a few MB as an http(s) URL (a presigned R2 or S3 URL works)")
    assert "AAAA" not in message
    parse_input({"image": "https://example.com/me.png", "video": "https://example.com/" + "a" * 20_000_000})


def test_runpod_refuses_bodies_over_its_limits_and_the_worker_explains_the_rest(
    comfy: FakeComfyAPI, tmp_path: Path
) -> None:
    """A 7.5 MB clip is 10 MB of base64: over /run's limit. Below it, the stand-in's /runsync (20 MB)
    takes an 11 MB field that the worker answers with the advice."""
    clip = "data:video/mp4;base64," + base64.b64encode(MP4_BYTES + b"\0" * 7_500_000).decode()
    with RunPodQueue() as queue:
        body = json.dumps({"input": {"image": "x", "video": clip}}).encode()
        request = urllib.request.Request(f"{queue.url}/v2/zr4-test/run", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        env = worker_env(comfy, None, tmp_path) | queue.worker_env("worker-limits")
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            answer = post(
                f"{queue.url}/v2/zr4-test/runsync?wait=60000", {"input": job_input(comfy, video=clip)}
            )
        finally:
            stop_worker(worker)
    assert answer["status"] == "FAILED", answer
    assert answer["error"].startswith("input.video is 10.0 MB of base64, above ZR4_INPUT_BASE64_MAX_BYTES")


def test_a_video_input_that_is_not_a_video_is_named_by_its_field(comfy: FakeComfyAPI, tmp_path: Path) -> None:
    env = worker_env(comfy, None, tmp_path)
    photo = base64.b64encode(PNG_BYTES * 40).decode()
    output = run({"id": "png", "input": job_input(comfy, video=photo)}, WorkerConfig.from_env(env), env)
    assert output == {"error": "input.video is not a video: it is PNG (MP4, MOV, WebM, MKV or GIF expected)"}
    output = run(
        {"id": "junk", "input": job_input(comfy, video="not base64 at all!")}, WorkerConfig.from_env(env), env
    )
    assert output == {"error": "input.video is neither an http(s) URL nor valid base64"}


def test_done_is_reported_once_the_video_is_in_r2(comfy: FakeComfyAPI, moto_server, tmp_path: Path) -> None:
    env = worker_env(comfy, moto_server, tmp_path)
    in_bucket_at_done: list[int] = []

    def progress(event: JobEvent) -> None:
        if event.kind == "done":
            listed = moto_server.client().list_objects_v2(Bucket=moto_server.bucket, Prefix="outputs/")
            in_bucket_at_done.append(sum(o["Key"].endswith(".mp4") for o in listed.get("Contents", [])))

    before = sum(
        o["Key"].endswith(".mp4")
        for o in moto_server.client().list_objects_v2(Bucket=moto_server.bucket).get("Contents", [])
    )
    output = run({"id": "done", "input": job_input(comfy)}, WorkerConfig.from_env(env), env, progress)
    assert "error" not in output, output
    assert in_bucket_at_done == [before + 1]


def test_with_the_sync_daemon_running_a_job_waits_for_its_upload(
    comfy: FakeComfyAPI, moto_server, tmp_path: Path
) -> None:
    """ENABLE_R2_SYNC=true runs `zr4 sync run`, which holds the journal: the job does not fail on
    the lock, it waits for the daemon's object and presigns that one."""
    from zr4.image.sync import daemon_is_alive, settings_from_env

    env = {
        **worker_env(comfy, moto_server, tmp_path),
        "ENABLE_R2_SYNC": "true",
        "R2_SYNC_STABLE_SECONDS": "0.2",
    }
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "R2_", "ENABLE_R2"))}
    daemon_env = {**full, **env, "R2_SYNC_OUTPUT_DIR": env["OUTPUT_DIR"]}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "zr4.cli.main", "sync", "run"],
        env=daemon_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = settings_from_env(daemon_env)
        deadline = time.monotonic() + 30
        while not daemon_is_alive(settings, max_age_s=10) and time.monotonic() < deadline:
            time.sleep(0.1)
        output = run({"id": "beside-daemon", "input": job_input(comfy)}, WorkerConfig.from_env(env), env)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert "error" not in output, output
    with urllib.request.urlopen(output["r2"]["url"], timeout=10) as response:
        assert response.read().endswith(output["prompt_id"].encode())


# --- a job that arrives while the pod's boot still fetches the models ---------------------------


def test_a_job_during_the_boot_waits_for_the_models_then_runs(tmp_path: Path) -> None:
    from support.hub_server import FakeHub
    from support.starting_pod import StartingPod

    sent: list[dict[str, Any]] = []
    with FakeHub() as hub, StartingPod(tmp_path / "pod", hub, behaviour(), rate=60_000, proxy=False) as pod:
        (pod.comfy.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)
        env = worker_env(pod.comfy, None, tmp_path) | {"ZR4_BOOT_STATUS": str(pod.report.path)}
        job = {"id": "j1", "input": job_input(pod.comfy, return_base64=True)}
        events: list[JobEvent] = []
        reporter = ProgressReporter(job, lambda _job, payload: sent.append(dict(payload)))

        def both(event: JobEvent) -> None:
            events.append(event)
            reporter(event)

        output = run(job, WorkerConfig.from_env(env), env, both)
        prompts = list(pod.comfy.state.prompts)
    assert "error" not in output, output
    waits = [event.detail for event in events if event.kind == "models"]
    assert waits and all(line.startswith("waiting for the models: ") for line in waits), waits
    assert any(payload.get("stage") == "models" and "files done" in payload["detail"] for payload in sent)
    timings = output["timings"]
    assert timings["boot_ready"] < timings["execution_started"] and len(prompts) == 1


def test_a_job_gets_the_failed_downloads_reason_and_fix(tmp_path: Path) -> None:
    from support.hub_server import FakeHub
    from support.starting_pod import StartingPod

    with (
        FakeHub() as hub,
        StartingPod(
            tmp_path / "pod", hub, behaviour(), private_repo="Kijai/WanVideo_comfy", proxy=False
        ) as pod,
    ):
        (pod.comfy.state.input_dir / "clip.mp4").write_bytes(MP4_BYTES)
        env = worker_env(pod.comfy, None, tmp_path) | {"ZR4_BOOT_STATUS": str(pod.report.path)}
        output = run({"id": "j1", "input": job_input(pod.comfy)}, WorkerConfig.from_env(env), env)
        prompts = list(pod.comfy.state.prompts)
    assert output["error"].startswith("the pod's model download failed: HTTP 401 for Kijai/WanVideo_comfy")
    assert "fix: set HF_TOKEN" in output["error"] and prompts == []
