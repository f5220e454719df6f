"""One ComfyUI per GPU and the serverless mode of `zr4 start`: the plan with several fake devices,
then the whole start with a real nvidia-smi stand-in listing two GPUs and the stand-in ComfyUI."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest

from core.test_gpu import MEMINFO, smi_script
from image.test_start_sequence import Pod, hub, stop, wait_for  # noqa: F401  (hub: fixture)
from support.s3_server import free_port
from zr4.client.comfy_api import comfyui_urls
from zr4.core.comfy_launch import LaunchPlan
from zr4.core.env import EnvError
from zr4.core.gpu import detect
from zr4.image.instances import Instance, instance_argv, plan_instances, serverless

TWO_4080S = """\
0, NVIDIA GeForce RTX 4080 SUPER, 16376, 15890, 8.9, 580.159.04
1, NVIDIA GeForce RTX 4080 SUPER, 16376, 15890, 8.9, 580.159.04
"""
FOUR_H200 = "".join(f"{i}, NVIDIA H200, 143771, 143156, 9.0, 580.159.04\n" for i in range(4))


def detected_indices(tmp_path: Path, query: str) -> list[int]:
    """GPU indices as `zr4 start` detects them: NVML absent, then the nvidia-smi stand-in."""
    folder = smi_script(tmp_path, query)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(MEMINFO)
    detection = detect({"PATH": str(folder)}, nvml=object(), root=tmp_path)
    return [gpu.index for gpu in detection.gpus]


def test_four_fake_gpus_give_four_instances(tmp_path: Path) -> None:
    gpus = detected_indices(tmp_path, FOUR_H200)
    assert gpus == [0, 1, 2, 3]
    assert plan_instances(gpus, 8188, {}) == [
        Instance(0, 8188, "0"),
        Instance(1, 8189, "1"),
        Instance(2, 8190, "2"),
        Instance(3, 8191, "3"),
    ]
    assert [i.url for i in plan_instances(gpus, 8188, {})][-1] == "http://127.0.0.1:8191"


@pytest.mark.parametrize(
    ("gpus", "env", "expected"),
    [
        ([], {}, [Instance(0, 8188, None)]),  # CPU only
        ([0], {}, [Instance(0, 8188, None)]),  # one GPU: nothing pinned
        ([0, 1], {"ZR4_COMFYUI_PER_GPU": "false"}, [Instance(0, 8188, None)]),
        ([0, 1], {"CUDA_VISIBLE_DEVICES": "2,3"}, [Instance(0, 8188, "2"), Instance(1, 8189, "3")]),
        (
            [0, 1],
            {"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"},
            [Instance(0, 8188, "GPU-aa"), Instance(1, 8189, "GPU-bb")],
        ),
    ],
)
def test_plan_instances(gpus: list[int], env: dict[str, str], expected: list[Instance]) -> None:
    assert plan_instances(gpus, 8188, env) == expected


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(EnvError, match="leaves no room for 2 ComfyUI ports"):
        plan_instances([0, 1], 65535, {})
    with pytest.raises(EnvError, match="ZR4_MODE='worker' is not one of: pod, serverless"):
        serverless({"ZR4_MODE": "worker"})
    assert serverless({"ZR4_MODE": "Serverless"}) and not serverless({})


def test_instance_argv_has_its_own_port_temp_and_database(tmp_path: Path) -> None:
    plan = LaunchPlan(argv=("py", "main.py", "--listen", "0.0.0.0", "--port", "8188", "--cpu"), cwd=tmp_path)
    assert instance_argv(plan, "0.0.0.0", 8188, Instance(0, 8188, None), tmp_path, 1) == plan.argv
    # behind the auth proxy: ComfyUI on loopback at its backend port, with its own temp folder and database
    argv = instance_argv(plan, "127.0.0.1", 18189, Instance(1, 8189, "1"), tmp_path, 2)
    own = tmp_path / "comfyui-1"
    assert argv == (
        *("py", "main.py", "--listen", "127.0.0.1", "--port", "18189", "--cpu"),
        *("--temp-directory", str(own), "--database-url", f"sqlite:///{own}/comfyui.db"),
    )
    assert own.is_dir()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


TOKEN = "instances-test-token-0123456789"


def _answers(port: int) -> bool:
    """ComfyUI answers on ``port`` (through the auth proxy, which wants the Bearer token)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/system_stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())["system"]["comfyui_version"] == "0.7.0"
    except OSError:
        return False


def serves_worker_api(port: int) -> bool:
    """The serverless worker's local API answers on ``port`` (FastAPI's schema lists /runsync)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=2) as response:
            return "/runsync" in json.loads(response.read())["paths"]
    except OSError:
        return False


def test_start_runs_one_comfyui_per_gpu(tmp_path: Path, hub) -> None:  # noqa: F811
    pod = Pod(tmp_path / "pod", hub)
    smi = smi_script(tmp_path, TWO_4080S)
    temp = tmp_path / "tmp"  # the container's /tmp: per-instance state and the list of URLs
    temp.mkdir()
    process = pod.start(PATH=f"{smi}:{pod.env['PATH']}", ZR4_AUTH_TOKEN=TOKEN, TMPDIR=str(temp))
    urls_file = temp / "zr4-comfyui" / "urls"
    try:
        wait_for(lambda: _answers(pod.port) and _answers(pod.port + 1), 120, "two ComfyUI to answer")
        # `zr4 dance` in the container's terminal finds both (public ports, behind the proxy).
        both = [f"http://127.0.0.1:{pod.port}", f"http://127.0.0.1:{pod.port + 1}"]
        assert comfyui_urls({}, urls_file=urls_file) == both
        assert comfyui_urls({"ZR4_COMFYUI_URLS": both[1]}, urls_file=urls_file) == both[1:]
        comfyuis = [
            pid for pid in _children(process.pid) if "main.py" in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        pinned = sorted(_environ(pid).get("CUDA_VISIBLE_DEVICES") for pid in comfyuis)
        assert pinned == ["0", "1"]
    finally:
        output = stop(process)
        print(output)  # pytest shows it beside a failure: what `zr4 start` said while the test waited
    assert process.returncode == 0, output
    assert (
        f"ComfyUI 0 on GPU 0, port {pod.port}" in output
        and f"ComfyUI 1 on GPU 1, port {pod.port + 1}" in output
    )
    assert (pod.state / "sigterm").read_text() == str(int(signal.SIGTERM)), output
    assert not _answers(pod.port) and not _answers(pod.port + 1)
    assert not urls_file.exists()  # gone with the instances: a later `zr4 dance` uses COMFYUI_PORT
    assert comfyui_urls({"COMFYUI_PORT": "8200"}, urls_file=urls_file) == ["http://127.0.0.1:8200"]


def test_serverless_mode_keeps_comfyui_private_and_starts_the_worker(tmp_path: Path, hub) -> None:  # noqa: F811
    pytest.importorskip("runpod", reason="needs the runpod SDK: pip install -e '.[test]'")
    pod = Pod(tmp_path / "pod", hub)
    api_port = free_port()
    process = pod.start(ZR4_MODE="serverless", ZR4_WORKER_API_PORT=str(api_port))
    try:
        record = wait_for(pod.comfyui_record, 120, "ComfyUI to start")
        wait_for(lambda: _answers(pod.port), 60, "ComfyUI to answer")
        # Not on RunPod: the worker serves the SDK's local API (FastAPI's schema answers) and stays up.
        wait_for(lambda: serves_worker_api(api_port), 120, "the worker's local API")
    finally:
        output = stop(process)
    argv = record["argv"]  # type: ignore[index]
    assert argv[:4] == ["--listen", "127.0.0.1", "--port", str(pod.port)]
    assert f"serverless worker started for http://127.0.0.1:{pod.port}" in output
    assert "[zr4 worker] not on RunPod: serving the SDK's local API" in output
    assert "restarting in" not in output, output  # the worker stayed up (no restart loop)
