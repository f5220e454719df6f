"""The RunPod Serverless worker: its contract through the runpod SDK's own local test mode
(``--test_input``), the stand-in ComfyUI API for the jobs and moto's S3 server for R2."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import s3_server
from support.fake_comfyui import PNG_BYTES
from support.fake_comfyui_api import Behaviour, FakeComfyAPI
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
