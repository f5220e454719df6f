"""`zr4 start` and `zr4 doctor` against the real ComfyUI v0.7.0 with the pinned node packs, on the CPU.

`zr4 start` runs as the container runs it (``python -m zr4.image.start``), on a private copy
of the pinned ComfyUI, with model files (placeholder bytes) downloaded from the local Hub server
(``support/hub_server.py``) and hostile ``COMFYUI_ARGS`` (a memory flag and a feature flag whose
package the venv lacks, both of which once killed ComfyUI on a machine without a GPU). It must
reach a healthy state with the planned flags, install the boot's workflow in the UI format, and
that workflow, opened from the real frontend's Workflows sidebar, must turn (through the
frontend's own ``graphToPrompt``) into a prompt ``POST /prompt`` accepts with no node errors.

`zr4 doctor --build-time` runs on the same fetched sources and venv; the venv was installed from
the lock on a machine without CUDA compilers, so it has no flash-attn and no mmcv: the profile is
the 3090's (ONNX pose backend) with ``features.flash_attn=false``, for which neither is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from image.test_start_sequence import container_env, manifest_for_tests
from support.browser import Browser
from support.comfy_frontend import VIEWPORT, click_workflow, open_sidebar
from support.hub_server import FakeHub, deterministic_bytes
from support.real_comfyui import ComfySources, copy_comfyui, free_port
from zr4.profile import load_profile
from zr4.render import render_files

pytestmark = pytest.mark.slow

GGUF_REPO = "MCG-NJU/SteadyDancer-GGUF"
# How MCG-NJU/SteadyDancer-GGUF names its files (test data; zr4 lists the repository).
GGUF_Q4 = "Wan21_I2V_SteadyDancer_fp16-Q4_K_M_fix_5d_tensor.gguf"
FILE_BYTES = 4096
HOSTILE_ARGS = "--lowvram --use-sage-attention"
BOOT_TIMEOUT_S = 600.0


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, process: subprocess.Popen[str]
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"zr4 start exited with {process.returncode} while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class RealPod:
    """One container's folders and environment around a copy of the real ComfyUI."""

    def __init__(self, root: Path, sources: ComfySources, hub: FakeHub) -> None:
        self.root = root
        self.comfyui = copy_comfyui(sources, root / "opt")
        self.workspace = root / "workspace"
        self.models = self.workspace / "models"
        self.outputs = self.workspace / "outputs"
        self.manifest = manifest_for_tests(root / "models.yaml")
        for entry in yaml.safe_load(self.manifest.read_text())["files"]:
            if entry.get("repo") and entry.get("path"):
                hub.add_file(entry["repo"], entry["path"], deterministic_bytes(FILE_BYTES, entry["path"]))
        hub.add_file(GGUF_REPO, GGUF_Q4, deterministic_bytes(FILE_BYTES * 2, GGUF_Q4))
        profile = load_profile("4080super", ["features.pose_backend=onnx", "model.variant=gguf"])
        self.profile = root / "profile.json"
        self.profile.write_text(profile.model_dump_json(), encoding="utf-8")
        self.port = free_port()
        self.backend_port = free_port()
        self.env = container_env(self, str(sources.python), hub) | {"COMFYUI_ARGS": HOSTILE_ARGS}
        self.log = root / "start.log"

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "zr4.image.start"],
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def health(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zr4.image.health"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def backend(self, path: str, body: Any = None) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.backend_port}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                text = answer.read()
                return answer.status, json.loads(text) if text.strip() else None
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


@pytest.fixture(scope="module")
def booted(comfy_sources: ComfySources, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPod]:
    """`zr4 start` run until healthy; stopped with SIGTERM (as ``docker stop``) afterwards."""
    with FakeHub() as hub:
        pod = RealPod(tmp_path_factory.mktemp("pod"), comfy_sources, hub)
        process = pod.start()
        try:
            wait_for(lambda: pod.health().returncode == 0, BOOT_TIMEOUT_S, "zr4 health to pass", process)
            yield pod
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # as `docker stop`: to the first process only
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            print(pod.log.read_text(errors="replace")[-6000:])
        log = pod.log.read_text(errors="replace")
        assert "signal 15: passing it to ComfyUI" in log, log[-4000:]
        # The real ComfyUI has no SIGTERM handler: it dies of the signal, reported as a shell does.
        assert process.returncode in (0, 128 + signal.SIGTERM), log[-4000:]


@pytest.mark.timeout(1200)
def test_zr4_start_boots_the_real_comfyui_with_the_planned_flags(booted: RealPod) -> None:
    log = booted.log.read_text(errors="replace")
    keep_for_the_record("start", "\n".join(line for line in log.splitlines() if line.startswith("[zr4 ")))
    for number in range(1, 6):
        assert f"step {number}/5" in log, log[-4000:]
    status, stats = booted.backend("/system_stats")
    assert status == 200, stats
    argv = stats["system"]["argv"]  # what the real ComfyUI process was started with
    assert argv[1:7] == ["--listen", "127.0.0.1", "--port", str(booted.backend_port),
                         "--output-directory", str(booted.outputs)]  # fmt: skip
    # No GPU here: the plan's --cpu stays although COMFYUI_ARGS asked for --lowvram; the
    # sageattention flag is dropped because the venv lacks the package, with a warning naming it.
    assert "--cpu" in argv and "--lowvram" not in argv and "--use-sage-attention" not in argv, argv
    assert "sageattention" in log and "--use-sage-attention" in log
    assert stats["system"]["comfyui_version"] == "0.7.0"


@pytest.mark.timeout(900)
def test_the_installed_workflow_opens_from_the_sidebar_and_validates(
    chromium: str, booted: RealPod, tmp_path: Path
) -> None:

    installed = booted.comfyui / "user" / "default" / "workflows" / "steadydancer-gguf.json"
    ui = json.loads(installed.read_text(encoding="utf-8"))
    loader = next(node for node in ui["nodes"] if node["type"] == "WanVideoModelLoader")
    assert loader["widgets_values"][0] == GGUF_Q4  # the file the model manager resolved this boot

    async def session() -> dict[str, Any]:
        async with Browser(tmp_path / "chromium", chromium) as browser:
            page = await browser.new_page()
            await page.set_viewport(*VIEWPORT)
            await open_sidebar(page, f"http://127.0.0.1:{booted.backend_port}")
            state = await click_workflow(page, installed.name)
            await page.screenshot(tmp_path / "installed.png")
            return state

    state = asyncio.run(session())
    assert sorted(state["nodes"]) == sorted([n["id"], n["type"]] for n in ui["nodes"])
    assert sorted(state["links"]) == sorted(ui["links"])
    assert state["alerts"] == []
    # The input files the workflow names, then the frontend's prompt through ComfyUI's validation.
    inputs = booted.comfyui / "input"
    for node in state["prompt"].values():
        if node["class_type"] == "LoadImage":
            (inputs / node["inputs"]["image"]).write_bytes(PNG_1X1)
        elif node["class_type"].startswith("VHS_LoadVideo"):
            (inputs / node["inputs"]["video"]).write_bytes(b"\0" * 64)
    status, answer = booted.backend("/prompt", {"prompt": state["prompt"], "client_id": "zr4-conformance"})
    booted.backend("/queue", {"clear": True})
    booted.backend("/interrupt", {})
    assert status == 200 and isinstance(answer, dict) and answer.get("node_errors") == {}, answer


@pytest.mark.timeout(600)
def test_zr4_dance_queues_the_installed_workflow_through_the_proxy(
    booted: RealPod, comfy_sources: ComfySources, tmp_path: Path
) -> None:
    """`zr4 dance` in the pod, with no --workflow and no URL: through the auth proxy (the generated
    token) it finds the API-format twin of the installed workflow in user/zr4/ (the sidebar's file
    is UI format), uploads, queues, and the real ComfyUI runs it until the first loader fails on
    the test Hub's stand-in model bytes: one line naming the node."""
    from support.tiny_dance import ffmpeg_of, make_media

    assert (booted.comfyui / "user" / "default" / "zr4" / "steadydancer-gguf.json").is_file()
    photo, clip = make_media(ffmpeg_of(comfy_sources.python), tmp_path)
    env = {k: v for k, v in booted.env.items() if k != "COMFYUI_ARGS"}
    done = subprocess.run(
        [sys.executable, "-m", "zr4.cli.main", "dance", "--image", str(photo), "--video", str(clip),
         "--frames", "5", "--width", "64", "--height", "64", "--out", str(tmp_path / "never.mp4"), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    booted.backend("/queue", {"clear": True})
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["error"].startswith("node ") and " failed: " in result["error"]
    assert "queued as prompt" in done.stderr and "ComfyUI started executing" in done.stderr
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.timeout(1800)
def test_zr4_doctor_passes_on_the_fetched_stack(comfy_sources: ComfySources, tmp_path: Path) -> None:
    profile = load_profile("3090", ["features.flash_attn=false"])
    context = {f.path: f.content for f in render_files(profile)}
    (tmp_path / "profile.json").write_bytes(context["profile.json"])
    (tmp_path / "requirements.lock").write_bytes(context["requirements.lock"])
    comfy = copy_comfyui(comfy_sources, tmp_path / "image")
    before = snapshot(comfy)
    argv = [str(Path(sys.executable).with_name("zr4")), "doctor", "--build-time"]
    argv += ["--profile-json", str(tmp_path / "profile.json"), "--lock", str(tmp_path / "requirements.lock")]
    argv += ["--comfyui-dir", str(comfy), "--python", str(comfy_sources.python)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    keep_for_the_record("doctor", result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith(" 0 failed")
    assert "ComfyUI v0.7.0 starts (--cpu --quick-test-for-ci)" in result.stdout
    assert snapshot(comfy) == before, "zr4 doctor wrote into ComfyUI's folder (root-owned in the image)"


def keep_for_the_record(name: str, text: str) -> None:
    """With ZR4_CONFORMANCE_OUT set (bench/conformance.py), leave ``text`` there for its record."""
    out = os.environ.get("ZR4_CONFORMANCE_OUT")
    if out:
        (Path(out) / f"conformance-{name}.txt").write_text(text, encoding="utf-8")


def snapshot(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*") if "__pycache__" not in p.parts}


PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
