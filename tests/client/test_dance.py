"""`zr4 dance` and the job runner against the stand-in ComfyUI API (upload, queue, websocket, history)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import s3_server
from support.fake_comfyui import PNG_BYTES
from support.fake_comfyui_api import Behaviour, FakeComfyAPI
from support.starting_pod import StartingPod
from zr4.client.comfy_api import ComfyClient, ComfyUnreachable, ExecutionFailed, PromptRejected
from zr4.client.dance import JobEvent, JobRequest, oom_advice, pick_client, run_job
from zr4.client.job_workflow import DanceParams, JobWorkflowError, fill_workflow
from zr4.client.media import MediaError, load_media, sniff
from zr4.core.workflow import NODE_IDS, WorkflowSpec, build_steadydancer_workflow, load_object_info

moto_server = s3_server.moto_server  # module-scoped server fixture
MP4_BYTES = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 200
GGUF_FILE = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"


def boot_workflow() -> dict:
    return build_steadydancer_workflow(WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE))


def behaviour(**changes: object) -> Behaviour:
    return Behaviour(known_types=frozenset(load_object_info("v0.7.0")), **changes)  # type: ignore[arg-type]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    image, video = tmp_path / "me.png", tmp_path / "moves.mp4"
    image.write_bytes(PNG_BYTES)
    video.write_bytes(MP4_BYTES)
    return image, video


@pytest.fixture
def comfy(tmp_path: Path):
    with FakeComfyAPI(tmp_path / "comfy", behaviour()) as server:
        server.install_workflow("steadydancer-gguf.json", boot_workflow())
        yield server


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    if "ENABLE_R2_SYNC" not in (env or {}):
        full_env.pop("ENABLE_R2_SYNC", None)
    return subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "dance", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )


# --- the whole job ------------------------------------------------------------------------------


def test_job_uploads_fills_queues_follows_and_downloads(comfy: FakeComfyAPI, inputs, tmp_path: Path) -> None:
    image, video = inputs
    events: list[JobEvent] = []
    out = tmp_path / "result.mp4"
    result = run_job(
        [ComfyClient(comfy.url)],
        JobRequest(str(image), str(video), DanceParams(seed=7, frames=33, width=480, height=832, steps=2)),
        on_event=events.append,
        destination=lambda _output: out,
    )
    # uploaded under a unique name, filled into the workflow that ComfyUI ran
    queued = comfy.state.prompts[-1]["prompt"]
    image_name = queued[NODE_IDS["image"]]["inputs"]["image"]
    video_name = queued[NODE_IDS["video"]]["inputs"]["video"]
    assert (comfy.state.input_dir / image_name).read_bytes() == PNG_BYTES
    assert (comfy.state.input_dir / video_name).read_bytes() == MP4_BYTES
    assert image_name.endswith("_me.png") and video_name.endswith("_moves.mp4")
    assert queued[NODE_IDS["sampler_settings"]]["inputs"]["seed"] == 7
    assert queued[NODE_IDS["sampler_settings"]]["inputs"]["steps"] == 2
    assert queued[NODE_IDS["video"]]["inputs"]["frame_load_cap"] == 33
    assert queued[NODE_IDS["video"]]["inputs"]["custom_width"] == 480
    # the video of this prompt, downloaded whole
    assert out.read_bytes() == (comfy.state.output_dir / result.output.filename).read_bytes()
    assert result.output.filename.startswith("SteadyDancer_") and result.output.filename.endswith(".mp4")
    assert result.seed == 7 and result.size_bytes == out.stat().st_size
    assert (result.width, result.height, result.frames) == (480, 832, 33)
    # the sampler's steps came through the websocket, in order, between queueing and the end
    steps = [(e.value, e.maximum) for e in events if e.kind == "progress"]
    assert steps == [(1, 2), (2, 2)]
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "done" and "started" in kinds
    assert {e.node_title for e in events if e.kind == "node"} >= {"Sampler settings", "Reference image"}
    timings = result.timings
    assert (
        0 < timings["queued"] <= timings["execution_started"] <= timings["executed"] <= timings["downloaded"]
    )


def test_the_boot_install_is_found_beside_its_ui_twin(tmp_path: Path, inputs) -> None:
    """What `zr4 start` installs: the UI format in workflows/ (the only one the sidebar opens) and
    the API format in zr4/, which the job queues."""
    from zr4.core.workflow.install import install_workflow

    image, video = inputs
    spec = WorkflowSpec(variant="gguf", diffusion_model_file=GGUF_FILE)
    with FakeComfyAPI(tmp_path / "comfy", behaviour()) as comfy:
        ui_file = install_workflow(comfy.state.root, spec)
        assert ui_file == comfy.state.user_dir / "workflows" / "steadydancer-gguf.json"
        assert "nodes" in json.loads(ui_file.read_text())  # UI format: no job could queue it
        result = run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
        assert result.workflow_source == f"{comfy.url} user/zr4/steadydancer-gguf.json"
        queued = comfy.state.prompts[-1]["prompt"]
        assert {n: node["class_type"] for n, node in queued.items()} == {
            n: node["class_type"] for n, node in build_steadydancer_workflow(spec).items()
        }
        (comfy.state.user_dir / "zr4" / "steadydancer-gguf.json").unlink()
        with pytest.raises(JobWorkflowError) as caught:
            run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
    assert str(caught.value) == (
        f"ComfyUI at {comfy.url} has no API-format SteadyDancer workflow in its user folders zr4/ or "
        "workflows/ (`zr4 start` writes one at boot); pass --workflow FILE"
    )


def test_random_seed_is_reported_and_used(comfy: FakeComfyAPI, inputs) -> None:
    image, video = inputs
    first = run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
    second = run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
    seeds = [p["prompt"][NODE_IDS["sampler_settings"]]["inputs"]["seed"] for p in comfy.state.prompts]
    assert seeds == [first.seed, second.seed] and first.seed != second.seed
    assert first.output.filename != second.output.filename  # each job has its own output prefix


def test_history_finishes_a_job_whose_websocket_dropped(tmp_path: Path, inputs) -> None:
    image, video = inputs
    with FakeComfyAPI(tmp_path / "c", behaviour(drop_ws_after_queue=True, node_delay_s=0.01)) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        result = run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
    assert result.output.filename.endswith(".mp4")


def test_bearer_token_is_sent_on_http_and_websocket(tmp_path: Path, inputs) -> None:
    image, video = inputs
    with FakeComfyAPI(tmp_path / "c", behaviour(token="s3cret")) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        with pytest.raises(Exception, match="HTTP 401: set ZR4_AUTH_TOKEN"):
            run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
        run_job([ComfyClient(comfy.url, token="s3cret")], JobRequest(str(image), str(video)))
        seen = comfy.state.requests
    authorised = [(method, path) for method, path, auth in seen if auth == "Bearer s3cret"]
    paths = {path.split("?")[0] for _method, path in authorised}
    assert {"/system_stats", "/upload/image", "/prompt", "/ws", "/view"} - paths == {"/view"}
    assert any(path.startswith("/history/") for path in paths)


# --- errors: one clear line ---------------------------------------------------------------------


def test_unreachable_comfyui_is_one_line(inputs) -> None:
    image, video = inputs
    with pytest.raises(ComfyUnreachable, match=r"^ComfyUI is not reachable at http://127.0.0.1:9 \("):
        run_job([ComfyClient("http://127.0.0.1:9")], JobRequest(str(image), str(video)))


def test_node_error_names_node_and_input(comfy: FakeComfyAPI, inputs) -> None:
    image, video = inputs
    workflow = boot_workflow()
    workflow["30"] = {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}
    workflow["30"]["_meta"] = {"title": "second image"}
    # the runner fills every LoadImage; a workflow with a link-less loader it cannot fill is refused by ComfyUI
    workflow[NODE_IDS["video"]]["inputs"]["video"] = ["99", 0]  # a link: not ours to replace
    with pytest.raises(PromptRejected) as caught:
        run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video), workflow=workflow))
    message = str(caught.value)
    assert "\n" not in message
    assert f"node {NODE_IDS['video']} (VHS_LoadVideo) input 'video': video - Invalid video file" in message


def test_execution_error_is_one_line(tmp_path: Path, inputs) -> None:
    image, video = inputs
    with FakeComfyAPI(
        tmp_path / "c",
        behaviour(
            fail_node=NODE_IDS["pose"],
            fail_exception_type="onnxruntime.capi.Fail",
            fail_exception_message="bad model\nmore",
        ),
    ) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        with pytest.raises(ExecutionFailed) as caught:
            run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
    assert (
        str(caught.value)
        == f"node {NODE_IDS['pose']} (PoseDetectionOneToAllAnimation) failed: Fail: bad model"
    )
    assert not caught.value.out_of_memory


def test_out_of_memory_gives_the_planners_advice(tmp_path: Path, inputs) -> None:
    result = _cli_in(
        tmp_path,
        inputs,
        behaviour(
            fail_node=NODE_IDS["sampler"],
            fail_exception_type="torch.OutOfMemoryError",
            fail_exception_message="Allocation on device \nThis error means you ran out of memory on your GPU.",
            vram_total=8 * 1024**3,
        ),
        "--profile",
        "4080super",
        "--frames",
        "81",
    )
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: out of memory in node {NODE_IDS['sampler']} (WanVideoSamplerFromSettings): "
    )
    assert "`zr4 plan --vram-gib 8 --resolution 480x832 --frames 81`" in line


def test_oom_advice_lists_alternatives_when_the_plan_does_not_fit() -> None:
    stats = {"devices": [{"name": "cuda:0 small", "vram_total": 6 * 1024**3}]}
    profile = {
        "model": {"variant": "fp16"},
        "memory": {"mode": "full"},
        "workload": {"width": 832, "height": 480, "frames": 81},
    }
    advice = oom_advice(stats, profile, None, None, None)
    assert advice.startswith("`zr4 plan --vram-gib 6 --resolution 832x480 --frames 81` suggests: ")
    assert "GPU_MEMORY_MODE=auto" in advice


def test_inputs_are_checked_before_anything_is_sent(comfy: FakeComfyAPI, tmp_path: Path, inputs) -> None:
    image, video = inputs
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(MediaError, match=r"notes.txt is not an image \(unrecognised file content\)$"):
        run_job([ComfyClient(comfy.url)], JobRequest(str(text), str(video)))
    with pytest.raises(
        MediaError, match=r"me.png is not a video: it is PNG \(MP4, MOV, WebM, MKV or GIF expected\)$"
    ):
        run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(image)))
    with pytest.raises(MediaError, match=r"nowhere.png: no such file$"):
        run_job([ComfyClient(comfy.url)], JobRequest(str(tmp_path / "nowhere.png"), str(video)))
    assert comfy.state.requests == []


def test_inputs_from_http_urls(comfy: FakeComfyAPI) -> None:
    # The stand-in's own /view serves files from its input folder: a real http(s) source.
    (comfy.state.input_dir / "remote.png").write_bytes(PNG_BYTES)
    (comfy.state.input_dir / "remote.mp4").write_bytes(MP4_BYTES)
    result = run_job(
        [ComfyClient(comfy.url)],
        JobRequest(
            f"{comfy.url}/view?filename=remote.png&type=input",
            f"{comfy.url}/view?filename=remote.mp4&type=input",
        ),
    )
    queued = comfy.state.prompts[-1]["prompt"]
    assert queued[NODE_IDS["image"]]["inputs"]["image"].endswith("_view.png")
    assert result.output.filename.endswith(".mp4")


def test_base64_only_where_allowed(tmp_path: Path) -> None:
    import base64

    encoded = base64.b64encode(PNG_BYTES * 20).decode()
    media = load_media(encoded, "image", allow_base64=True)
    assert media.data == PNG_BYTES * 20 and media.filename == "input.png"
    assert load_media("data:image/png;base64," + encoded, "image", allow_base64=True).format == "png"
    with pytest.raises(MediaError, match=r"^iVBOR\S+… is not a file path or an http\(s\) URL$"):
        load_media(encoded, "image", allow_base64=False)


def test_a_network_job_takes_short_base64_and_never_a_local_path(tmp_path: Path) -> None:
    import base64

    short = base64.b64encode(PNG_BYTES).decode()  # a tiny PNG: far below any length heuristic
    assert load_media(short, "image", allow_base64=True).data == PNG_BYTES
    local = tmp_path / "photo.png"
    local.write_bytes(PNG_BYTES)
    assert load_media(str(local), "image").data == PNG_BYTES  # `zr4 dance` reads paths
    with pytest.raises(MediaError, match=r" is neither an http\(s\) URL nor valid base64$"):
        load_media(str(local), "image", allow_base64=True)  # the worker never reads its own files


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG_BYTES, ("image", "png")),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, ("image", "jpeg")),
        (b"RIFF\0\0\0\0WEBPVP8 ", ("image", "webp")),
        (MP4_BYTES, ("video", "mp4")),
        (b"\0\0\0\x14ftypqt  \0\0\0\0", ("video", "mov")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", ("video", "webm")),
        (b"GIF89a\x01\x00", ("video", "gif")),
        (b"hello world", None),
    ],
)
def test_sniff(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected


def test_params_are_checked() -> None:
    with pytest.raises(JobWorkflowError, match=r"frames=80 must be 4n\+1"):
        fill_workflow(boot_workflow(), "a.png", "b.mp4", DanceParams(frames=80), "t")
    with pytest.raises(JobWorkflowError, match="give width and height together"):
        fill_workflow(boot_workflow(), "a.png", "b.mp4", DanceParams(width=480), "t")
    with pytest.raises(JobWorkflowError, match="no VHS_LoadVideo node"):
        fill_workflow({"1": {"class_type": "LoadImage", "inputs": {}}}, "a.png", "b.mp4", DanceParams(), "t")


def test_least_busy_server_gets_the_job(tmp_path: Path) -> None:
    with FakeComfyAPI(tmp_path / "a", behaviour()) as busy, FakeComfyAPI(tmp_path / "b", behaviour()) as idle:
        busy.state.pending = 2
        assert pick_client([ComfyClient(busy.url), ComfyClient(idle.url)]).base_url == idle.url
        assert pick_client([ComfyClient("http://127.0.0.1:9"), ComfyClient(busy.url)]).base_url == busy.url


# --- the command --------------------------------------------------------------------------------


def _cli_in(tmp_path: Path, inputs, rule: Behaviour, *args: str, env: dict[str, str] | None = None):
    image, video = inputs
    with FakeComfyAPI(tmp_path / "cli", rule) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        return run_cli(
            "--image", str(image), "--video", str(video), "--comfyui", comfy.url, *args, env=env, cwd=tmp_path
        )


def test_cli_json_result(tmp_path: Path, inputs) -> None:
    result = _cli_in(
        tmp_path, inputs, behaviour(), "--json", "--seed", "42", "--out", str(tmp_path / "v.mp4")
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["seed"] == 42 and data["file"] == str(tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").stat().st_size == data["size_bytes"] > 0
    assert data["r2"] is None
    # not a terminal: one line per update in the log
    assert "node 25 (Sampler): step 1/4" in result.stderr and "queued as prompt" in result.stderr


def test_cli_human_result_and_default_out(tmp_path: Path, inputs) -> None:
    result = _cli_in(tmp_path, inputs, behaviour(), "--seed", "5")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"video: {tmp_path}/SteadyDancer_") and "seed 5" in line


def test_cli_unreachable_is_one_line(inputs) -> None:
    image, video = inputs
    result = run_cli("--image", str(image), "--video", str(video), "--comfyui", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ComfyUI is not reachable")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "it contains a space or a control character (separate several URLs with commas)"),
        ("http://127.0.0.1:abc", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("http://", "it has no host: use http://HOST:PORT"),
        ("ftp://127.0.0.1:8188", "the scheme must be http:// or https://, not ftp://"),
        ("http://127.0.0.1:8188/?x=1", "remove the ?query / #fragment part"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_cli_a_bad_comfyui_option_is_one_line_exit_2(inputs, url: str, reason: str, as_json: bool) -> None:
    image, video = inputs
    result = run_cli(
        "--image", str(image), "--video", str(video), "--comfyui", url, *(["--json"] if as_json else [])
    )
    message = f"--comfyui: {url!r} is not a ComfyUI URL: {reason}"
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
    assert result.stdout == (json.dumps({"ok": False, "error": message}) + "\n" if as_json else "")


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"ZR4_COMFYUI_URLS": "a b"},
            "error: ZR4_COMFYUI_URLS: 'a b' is not a ComfyUI URL: it contains a space or a control "
            "character (separate several URLs with commas)",
        ),
        (
            {"ZR4_COMFYUI_URLS": "http://127.0.0.1:9,http://"},
            "error: ZR4_COMFYUI_URLS: 'http://' is not a ComfyUI URL: it has no host: use http://HOST:PORT",
        ),
        ({"COMFYUI_PORT": "abc"}, "error: COMFYUI_PORT='abc' is not a port number (1-65535)"),
    ],
)
def test_cli_a_bad_comfyui_variable_is_one_line_naming_it(inputs, tmp_path: Path, env, line: str) -> None:
    image, video = inputs
    result = run_cli(
        "--image", str(image), "--video", str(video), "--json", env={"TMPDIR": str(tmp_path), **env}
    )
    assert (result.returncode, result.stderr) == (1, line + "\n")
    assert json.loads(result.stdout) == {"ok": False, "error": line.removeprefix("error: ")}


def test_a_url_with_credentials_is_refused_without_showing_them(inputs) -> None:
    image, video = inputs
    result = run_cli(
        "--image", str(image), "--video", str(video), "--comfyui", "http://me:pw-Zr4x9@127.0.0.1:9"
    )
    assert result.returncode == 2 and "pw-Zr4x9" not in result.stderr
    assert result.stderr.startswith(
        "error: --comfyui: 'http://***@127.0.0.1:9' is not a ComfyUI URL: it holds"
    )


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8188", "http://127.0.0.1:8188"),
        (" https://pod-8188.proxy.example/ ", "https://pod-8188.proxy.example"),
        ("http://[::1]:8189/comfy/", "http://[::1]:8189/comfy"),
    ],
)
def test_good_comfyui_urls_are_normalised(given: str, url: str) -> None:
    assert ComfyClient(given).base_url == url


def test_cli_usage_errors_exit_2(inputs) -> None:
    image, video = inputs
    result = run_cli(
        "--image", str(image), "--video", str(video), "--frames", "80", "--comfyui", "http://127.0.0.1:9"
    )
    assert result.returncode == 2 and "frames=80 must be 4n+1" in result.stderr


def test_cli_json_error(tmp_path: Path, inputs) -> None:
    result = _cli_in(tmp_path, inputs, behaviour(fail_node=NODE_IDS["decode"]), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": f"node {NODE_IDS['decode']} (WanVideoDecode) failed: RuntimeError: boom",
        "out_of_memory": False,
    }


def test_cli_reports_the_synced_copy(tmp_path: Path, inputs, moto_server) -> None:
    """The real sync pass uploads the job's video; `zr4 dance` finds it under the daemon's key."""
    import threading

    from support.s3_server import sync_settings
    from zr4.image.sync import sync_once

    image, video = inputs
    env = {
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": moto_server.endpoint,
        "R2_ACCESS_KEY_ID": moto_server.access_key,
        "R2_SECRET_ACCESS_KEY": moto_server.secret_key,
        "R2_BUCKET": moto_server.bucket,
        "RUNPOD_POD_ID": "pod-a",
    }
    stop = threading.Event()
    with FakeComfyAPI(tmp_path / "cli", behaviour()) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        settings = sync_settings(moto_server, tmp_path / "sync").with_(output_dir=comfy.state.output_dir)

        def daemon() -> None:  # what `zr4 sync run` does on the pod, one pass at a time
            while not stop.wait(0.3):
                if any(comfy.state.output_dir.glob("*.mp4")):
                    sync_once(settings, wait_incomplete_s=5)

        thread = threading.Thread(target=daemon, daemon=True)
        thread.start()
        try:
            result = run_cli(
                "--image",
                str(image),
                "--video",
                str(video),
                "--comfyui",
                comfy.url,
                "--sync-wait",
                "30",
                env=env,
                cwd=tmp_path,
            )
        finally:
            stop.set()
            thread.join(timeout=30)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("r2: synced to s3://runpod/outputs/20") and line.endswith(".mp4"), line
    key = line.split("s3://runpod/", 1)[1]
    assert moto_server.client().head_object(Bucket="runpod", Key=key)["ContentLength"] > 0


def test_help_names_the_options_it_speaks_of() -> None:
    """The summary names --image and --video, the options a user types, not metavars that exist nowhere."""
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    summary = " ".join(result.stdout.split("╭")[0].split())
    assert "Animate the --image photo with the motion of the --video clip." in summary
    assert "PHOTO" not in result.stdout and "CLIP" not in result.stdout


# --- stopping a job ------------------------------------------------------------------------------


def test_ctrl_c_interrupts_the_prompt_in_comfyui(tmp_path: Path, inputs) -> None:
    """Ctrl-C in `zr4 dance` does not leave the prompt running on the GPU: it is interrupted (only
    after ``/queue`` showed it is the one running), then the command ends with ``aborted``."""
    import signal
    import time

    image, video = inputs
    with FakeComfyAPI(tmp_path / "c", behaviour(step_delay_s=0.1)) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        process = subprocess.Popen(
            [sys.executable, "-m", "zr4.cli.main", "dance", "--image", str(image), "--video", str(video),
             "--comfyui", comfy.url, "--steps", "150", "--out", str(tmp_path / "never.mp4")],
            env={k: v for k, v in os.environ.items() if not k.startswith("ENABLE_R2")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while comfy.state.current is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        prompt_id = comfy.state.current
        time.sleep(0.3)  # a few steps in
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        entry = comfy.state.history.get(str(prompt_id))
    assert process.returncode == 130, stderr
    assert prompt_id is not None and comfy.state.interrupts == [(prompt_id, True)]
    assert entry is not None and entry["status"]["messages"][-1][0] == "execution_interrupted"
    last = stderr.strip().splitlines()[-1]  # typer ends a Ctrl-C with exit status 130, silently
    assert last.endswith(f"  cancelled: prompt {prompt_id} interrupted in ComfyUI"), stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "never.mp4").exists() and stdout == ""


def test_a_stop_before_the_prompt_is_queued_queues_nothing(tmp_path: Path, inputs) -> None:
    import threading

    from zr4.client.job_cancel import JobCancelled, JobControl

    image, video = inputs
    control = JobControl()
    with FakeComfyAPI(tmp_path / "c", behaviour(upload_delay_s=0.5)) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        threading.Timer(0.2, control.cancel, args=("stopped by the test",)).start()
        with pytest.raises(JobCancelled, match=r"^stopped by the test$"):
            run_job(
                [ComfyClient(comfy.url)],
                JobRequest(str(image), str(video)),
                control=control,
                input_dir=comfy.state.input_dir,
            )
    assert comfy.state.prompts == [] and list(comfy.state.input_dir.iterdir()) == []


def test_dance_deletes_its_uploads_from_a_local_comfyui(tmp_path: Path, inputs) -> None:
    """In the container's terminal ComfyUI's input folder is local (COMFYUI_DIR): the two uploads of
    the job are removed when it ends, and nothing else there is touched."""
    image, video = inputs
    with FakeComfyAPI(tmp_path / "cli", behaviour()) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        (comfy.state.input_dir / "mine.png").write_bytes(PNG_BYTES)
        result = run_cli(
            "--image", str(image), "--video", str(video), "--comfyui", comfy.url, "--out", str(tmp_path),
            env={"COMFYUI_DIR": str(comfy.state.root)}, cwd=tmp_path,
        )  # fmt: skip
        queued = comfy.state.prompts[-1]["prompt"][NODE_IDS["video"]]["inputs"]["video"]
        left = sorted(p.name for p in comfy.state.input_dir.iterdir())
    assert result.returncode == 0, result.stderr
    assert queued.endswith("_moves.mp4") and left == ["mine.png"]


# --- a pod still starting: the job waits for its boot -------------------------------------------


def test_dance_waits_for_the_models_the_pod_downloads_then_runs(tmp_path: Path, inputs) -> None:
    from support.auth_stack import TOKEN
    from support.hub_server import FakeHub

    image, video = inputs
    with FakeHub() as hub, StartingPod(tmp_path / "pod", hub, behaviour(), rate=60_000) as pod:
        assert pod.download.running
        done = run_cli(
            "--image", str(image), "--video", str(video), "--comfyui", pod.url, "--json",
            "-o", str(tmp_path / "out.mp4"),
            env={"ZR4_AUTH_TOKEN": TOKEN, "ZR4_BOOT_STATUS": str(tmp_path / "none.json")},
        )  # fmt: skip
        complete_s = pod.report.timings.get("models_complete_s")
        prompts = list(pod.comfy.state.prompts)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True and (tmp_path / "out.mp4").is_file()
    waits = [line for line in done.stderr.splitlines() if "waiting for the models:" in line]
    assert any(
        re.search(r"[\d.]+ [KM]B of [\d.]+ MB \(\d+ %\).* left; \d of 8 files done", w) for w in waits
    ), waits
    # Queued once, after the files were in (the stand-in checks each loader's file, as ComfyUI does).
    assert complete_s is not None and len(prompts) == 1, done.stderr


def test_dance_stops_in_one_line_when_the_pods_download_failed(tmp_path: Path, inputs) -> None:
    from support.auth_stack import TOKEN
    from support.hub_server import FakeHub

    image, video = inputs
    with (
        FakeHub() as hub,
        StartingPod(tmp_path / "pod", hub, behaviour(), private_repo="Kijai/WanVideo_comfy") as pod,
    ):
        done = run_cli(
            "--image", str(image), "--video", str(video), "--comfyui", pod.url,
            env={"ZR4_AUTH_TOKEN": TOKEN, "ZR4_BOOT_STATUS": str(tmp_path / "none.json")},
        )  # fmt: skip
        prompts = list(pod.comfy.state.prompts)
    assert done.returncode == 1, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the pod's model download failed: HTTP 401"), done.stderr
    assert "fix: set HF_TOKEN" in error and "hf_private" not in done.stderr
    assert prompts == [] and "Traceback" not in done.stderr


def test_a_model_file_comfyui_lacks_is_named_before_anything_is_queued(tmp_path: Path, inputs) -> None:
    image, video = inputs
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    with FakeComfyAPI(tmp_path / "comfy", behaviour(models_root=models)) as comfy:
        comfy.install_workflow("steadydancer-gguf.json", boot_workflow())
        with pytest.raises(Exception, match=r"does not have the model file\(s\) the workflow loads: node 2 "):
            run_job([ComfyClient(comfy.url)], JobRequest(str(image), str(video)))
        assert comfy.state.prompts == [] and list(comfy.state.input_dir.iterdir()) == []
