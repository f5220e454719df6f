"""The serverless worker against the real ComfyUI: what zr4 adds to a job, and a worker's cold start.

Usage, from the repository root (needs the pinned ComfyUI: ZR4_COMFYUI_SOURCES and
ZR4_COMFYUI_PYTHON, as the conformance suite)::

    python bench/bench_serverless.py overhead [--jobs 20]
    python bench/bench_serverless.py coldstart [--boots 3]
    python bench/bench_serverless.py throughput [--jobs 8]
    python bench/bench_serverless.py cancel [--rounds 5]
    python bench/bench_serverless.py load [--jobs 20]

``overhead``: seconds from "job received" to "ComfyUI started executing" (ComfyUI's
``execution_start`` message). zr4: the worker's own job function (``zr4.image.serverless.run``,
what the runpod SDK's handler calls), which reads the inputs, picks the least busy ComfyUI, finds
the workflow the boot installed, uploads both files, fills the workflow and queues it. Reference,
in the same run, on the same ComfyUI, alternating with zr4: a minimal client written straight
against ComfyUI's API with the workflow already in hand (decode the photo, download the clip, two
``POST /upload/image``, open ``/ws``, ``POST /prompt``, wait for ``execution_start``). The
difference is zr4's overhead. Inputs: an 832×480 PNG photo as base64 and an 81-frame 480×832 H.264
clip as an http URL (a local server), as a RunPod job would send them; the workflow is the
model-free one of the conformance suite (tests/support/tiny_dance.py), so ComfyUI is idle when
each job arrives.

``coldstart``: a worker's boot with the models already on the volume (warm boots after one first
boot from a local Hub, as bench/start_times.py): from spawning ``python -m zr4.image.start`` with
``ZR4_MODE=serverless`` to ComfyUI answering ``/system_stats`` and to the worker's "ComfyUI ready"
line. Reference, alternating with it: the same ComfyUI started bare (``python main.py --cpu``) to
``/system_stats``. The difference is what zr4's start sequence adds.

``throughput``, ``cancel`` and ``load`` run the worker as on RunPod: ``python -m zr4.image.serverless``
(the runpod SDK's own worker loop) against a stand-in of RunPod's job queue (tests/support/
runpod_queue.py), two ComfyUI from one tree sharing one output folder as `zr4 start` runs one per
GPU, moto's S3 server as R2 with ``R2_DELETE_AFTER_UPLOAD=true`` (the endpoint template's setting).

``throughput``: ``--jobs`` jobs submitted at once, to a worker with both ComfyUI (two jobs at once)
and, alternating with it, to a worker with one of them (one at a time); wall time from the first
submit to the last result. Two workloads: the model-free workflow on an 81-frame 480×832 clip
(decoding, resizing and H.264 encoding: CPU work, so both ComfyUI share the machine's CPUs), and the
slow test node (4 s of 0.1 s progress steps that sleep: a stand-in for GPU time, during which a
real worker's CPU is idle too).

``cancel``: a worker with one ComfyUI (one job at a time) runs a 60 s job (the slow node); once its
steps show in ``/status``, a second job is queued and the first cancelled (``POST /cancel``). Measured
from the cancel: ComfyUI no longer lists the prompt as running (``GET /queue``, polled every 50 ms),
the worker takes the next job, ComfyUI starts it (its ``execution_started``), it completes.

``load``: ``--jobs`` jobs at once to a worker with both ComfyUI; every job must complete with its own
video: each job asks for a different frame count, and the object in R2 is decoded to check it.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "image")]

from support.real_comfyui import (  # noqa: E402
    ComfySources,
    copy_comfyui,
    find_sources,
    free_port,
    start_comfyui,
)
from support.tiny_dance import (  # noqa: E402
    ffmpeg_of,
    install_slow_node,
    install_workflow,
    slow_workflow,
    tiny_workflow,
    video_facts,
)


def machine_line() -> str:
    load = os.getloadavg()[0]
    return f"Machine: {os.cpu_count()} CPUs, load average {load:.1f} at the start, no GPU (ComfyUI --cpu)."


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"min {ordered[0] * 1000:.0f}, max {ordered[-1] * 1000:.0f}"
    )


# --- overhead --------------------------------------------------------------------------------------


def make_inputs(ffmpeg: str, folder: Path) -> tuple[Path, Path]:
    """A 480×832 PNG photo and an 81-frame 480×832 H.264 clip at 16 fps (ffmpeg's test sources)."""
    photo, clip = folder / "photo.png", folder / "clip.mp4"
    quiet = [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi"]
    subprocess.run([*quiet, "-i", "testsrc2=size=480x832", "-frames:v", "1", str(photo)], check=True)
    subprocess.run(
        [*quiet, "-i", "testsrc2=size=480x832:rate=16", "-frames:v", "81", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    return photo, clip


def serve_folder(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *_args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def reference_job(url: str, image_b64: str, video_url: str, workflow: dict[str, Any]) -> float:
    """A bare ComfyUI API client: seconds from receiving the job to ``execution_start``."""
    from websockets.sync.client import connect

    received = time.perf_counter()
    image = base64.b64decode(image_b64)
    with urllib.request.urlopen(video_url, timeout=60) as response:
        video = response.read()
    tag = uuid.uuid4().hex[:8]
    names = []
    for filename, data in ((f"ref_{tag}.png", image), (f"ref_{tag}.mp4", video)):
        body, content_type = _multipart(filename, data)
        request = urllib.request.Request(
            f"{url}/upload/image", data=body, headers={"Content-Type": content_type}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            names.append(json.loads(response.read())["name"])
    filled = json.loads(json.dumps(workflow))
    filled["1"]["inputs"]["image"], filled["2"]["inputs"]["video"] = names
    filled["4"]["inputs"]["filename_prefix"] = f"ref_{tag}"
    client_id = uuid.uuid4().hex
    with connect(
        f"ws://{url.split('://', 1)[1]}/ws?clientId={client_id}", compression=None, proxy=None
    ) as ws:
        request = urllib.request.Request(
            f"{url}/prompt",
            data=json.dumps({"prompt": filled, "client_id": client_id}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            prompt_id = json.loads(response.read())["prompt_id"]
        started: float | None = None
        while True:  # until the prompt ends, so that ComfyUI is idle for the next job
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            if event["data"].get("prompt_id") != prompt_id:
                continue
            if event["type"] == "execution_start" and started is None:
                started = time.perf_counter() - received
            if event["type"] in ("execution_success", "execution_error"):
                break
    assert started is not None
    return started


def overhead(sources: ComfySources, jobs: int) -> None:
    from zr4.image.serverless import WorkerConfig, run

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tree = copy_comfyui(sources, root)
        install_workflow(tree)
        media = root / "media"
        media.mkdir()
        photo, clip = make_inputs(ffmpeg_of(sources.python), media)
        server, base = serve_folder(media)
        comfy = start_comfyui(tree, sources.python, ("--cpu",), log_path=root / "comfyui.log")
        try:
            print(machine_line())
            print(
                f"Inputs: photo {photo.stat().st_size:,} bytes (base64), clip {clip.stat().st_size:,} bytes "
                f"(http URL); ComfyUI {comfy.url} (--cpu).\n"
            )
            env = {"ZR4_COMFYUI_URLS": comfy.url, "ZR4_AUTH": "off", "OUTPUT_DIR": str(tree / "output")}
            config = WorkerConfig.from_env(env)
            image_b64 = base64.b64encode(photo.read_bytes()).decode()
            job_input = {
                "image": image_b64,
                "video": f"{base}/clip.mp4",
                "frames": 5,
                "width": 64,
                "height": 64,
            }
            workflow = tiny_workflow()
            zr4_times: list[float] = []
            ref_times: list[float] = []
            steps: list[dict[str, float]] = []
            for index in range(jobs + 1):  # the first pair warms both paths up and is not counted
                output = run({"id": f"bench-{index}", "input": job_input}, config, env)
                assert "error" not in output, output
                reference = reference_job(comfy.url, image_b64, f"{base}/clip.mp4", workflow)
                if index:
                    zr4_times.append(output["timings"]["execution_started"])
                    ref_times.append(reference)
                    steps.append(output["timings"])
            print("| path | job received → ComfyUI started executing |")
            print("|---|---|")
            print(f"| zr4 worker (`zr4.image.serverless.run`) | {summary(zr4_times)} |")
            print(f"| reference: bare API client, workflow in hand | {summary(ref_times)} |")
            differences = [z - r for z, r in zip(zr4_times, ref_times, strict=True)]
            print(f"\nzr4 minus reference, pairwise: median {statistics.median(differences) * 1000:.0f} ms.")
            keys = ["inputs_read", "workflow_found", "inputs_uploaded", "queued", "execution_started"]
            medians = ", ".join(f"{k} {statistics.median(s[k] for s in steps) * 1000:.0f} ms" for k in keys)
            print(f"zr4's steps (median time since the job was received): {medians}.")
            print(f"{jobs} jobs each, alternating, after one warm-up pair.")
        finally:
            comfy.stop()
            server.shutdown()


# --- cold start ------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        if condition():
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def zr4_boot(pod: Any, log: Path) -> tuple[float, float, float]:
    """(ComfyUI answers, worker says ComfyUI ready, ready-to-launch of the start), seconds from spawn."""
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "zr4.image.start"],
            env={**pod.env, "ZR4_MODE": "serverless"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{pod.port}"
        answered = _wait(lambda: _answers(url), 600, "ComfyUI to answer") - began
        worker = (
            _wait(lambda: b"[zr4 worker] ComfyUI ready at" in log.read_bytes(), 120, "the worker") - began
        )
    finally:
        _stop(process)
    text = log.read_text(errors="replace")
    ready = float(text.split("ready to launch ", 1)[1].split(" s", 1)[0])
    return answered, worker, ready


def bare_boot(tree: Path, python: Path, log: Path) -> float:
    port = free_port()
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)],
            cwd=str(tree),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return _wait(lambda: _answers(f"http://127.0.0.1:{port}"), 600, "bare ComfyUI") - began
    finally:
        _stop(process)


def coldstart(sources: ComfySources, boots: int) -> None:
    from test_start_sequence import Pod

    from support.hub_server import FakeHub

    with FakeHub() as hub, tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pod = Pod(root / "pod", hub)
        shutil.rmtree(pod.comfyui)
        tree = copy_comfyui(sources, pod.comfyui.parent)  # the real ComfyUI where the image has it
        pod.env["COMFYUI_PYTHON"] = str(sources.python)
        pod.env["ZR4_COMFYUI_WAIT_S"] = "600"
        print(machine_line())
        first = zr4_boot(pod, root / "first.log")  # downloads the models onto the "volume"
        print(
            f"First boot (8 small files from the local Hub, then ComfyUI): ComfyUI answered after {first[0]:.1f} s.\n"
        )
        zr4_runs, bare_runs = [], []
        for index in range(boots):
            zr4_runs.append(zr4_boot(pod, root / f"zr4-{index}.log"))
            bare_runs.append(bare_boot(tree, sources.python, root / f"bare-{index}.log"))
        print('| boot, models on the volume | to ComfyUI answering | to the worker\'s "ComfyUI ready" |')
        print("|---|---|---|")
        answered = [r[0] for r in zr4_runs]
        worker = [r[1] for r in zr4_runs]
        print(
            f"| `zr4 start` (ZR4_MODE=serverless) | median {statistics.median(answered):.1f} s "
            f"(min {min(answered):.1f}, max {max(answered):.1f}) | median {statistics.median(worker):.1f} s |"
        )
        print(
            f"| reference: `python main.py --cpu` | median {statistics.median(bare_runs):.1f} s "
            f"(min {min(bare_runs):.1f}, max {max(bare_runs):.1f}) | — |"
        )
        ready = [r[2] for r in zr4_runs]
        print(
            f"\nzr4's start sequence before launching ComfyUI (detect, plan, models verified, workflow): "
            f"median {statistics.median(ready):.2f} s. {boots} boots each, alternating."
        )


# --- the worker as on RunPod: throughput, cancel, load --------------------------------------------


class Rig:
    """Two ComfyUI sharing one output folder, moto as R2, the inputs served over HTTP."""

    def __init__(self, sources: ComfySources, root: Path) -> None:
        from support.real_comfyui import start_instances
        from support.s3_server import MotoS3

        self.root = root
        self.python = sources.python
        self.tree = copy_comfyui(sources, root)
        install_workflow(self.tree)
        install_slow_node(self.tree)
        media = root / "media"
        media.mkdir()
        self.photo, self.clip = make_inputs(ffmpeg_of(sources.python), media)
        self.http, self.base = serve_folder(media)
        self.outputs = root / "outputs"
        self.outputs.mkdir()
        self.moto = MotoS3(log_path=root / "moto.log").start()
        self.servers = start_instances(self.tree, sources.python, root, self.outputs)
        self.image_b64 = base64.b64encode(self.photo.read_bytes()).decode()
        self.runs = 0

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.moto.stop()
        self.http.shutdown()

    def env(self, urls: list[str]) -> dict[str, str]:
        self.runs += 1
        return {
            "ZR4_COMFYUI_URLS": ",".join(urls),
            "ZR4_AUTH": "off",
            "COMFYUI_DIR": str(self.tree),
            "OUTPUT_DIR": str(self.outputs),
            "R2_SYNC_STATE_DIR": str(self.root / f"sync-{self.runs}"),
            "ZR4_PROFILE": str(self.root / "no-profile.json"),
            "R2_ENDPOINT": self.moto.endpoint,
            "R2_ACCESS_KEY_ID": self.moto.access_key,
            "R2_SECRET_ACCESS_KEY": self.moto.secret_key,
            "R2_BUCKET": self.moto.bucket,
            "R2_DELETE_AFTER_UPLOAD": "true",
        }

    def job(self, workflow: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"image": self.image_b64, "video": f"{self.base}/clip.mp4", "workflow": workflow, **extra}

    def running(self, index: int) -> list[str]:
        with urllib.request.urlopen(f"{self.servers[index].url}/queue", timeout=30) as response:
            return [item[1] for item in json.loads(response.read())["queue_running"]]


def _batch(
    rig: Rig, urls: list[str], jobs: list[dict[str, Any]], name: str, strict: bool = True
) -> tuple[float, list[Any]]:
    """Submit ``jobs`` at once to a fresh worker for ``urls``; (seconds to the last result, results).
    ``strict``: a failed job stops the measurement."""
    from support.runpod_queue import RunPodQueue, start_worker, stop_worker

    with RunPodQueue() as queue:
        worker = start_worker(rig.env(urls) | queue.worker_env(name), rig.root / f"{name}.log")
        try:
            _wait(lambda: b"ComfyUI ready at" in (rig.root / f"{name}.log").read_bytes(), 120, "the worker")
            began = time.monotonic()
            ids = [queue.submit(job) for job in jobs]
            results = [queue.wait(job_id, timeout_s=1800) for job_id in ids]
            wall = max(r.finished_at or time.monotonic() for r in results) - began
        finally:
            stop_worker(worker)
    failed = [r.error for r in results if r.status != "COMPLETED"]
    if failed and strict:
        raise RuntimeError(f"{len(failed)} job(s) failed, first: {failed[0]}")
    return wall, results


def throughput(sources: ComfySources, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        rig = Rig(sources, Path(folder))
        try:
            print(machine_line())
            both, one = [s.url for s in rig.servers], [rig.servers[0].url]
            workloads = [
                (
                    "model-free workflow, 81-frame 480×832 clip (CPU work)",
                    lambda: rig.job(tiny_workflow(frames=81), frames=81, width=480, height=832),
                ),
                (
                    "slow node, 4 s of sleeping steps (stands for GPU time)",
                    lambda: rig.job(slow_workflow(steps=40, step_s=0.1)),
                ),
            ]
            print(f"{jobs} jobs submitted at once per run; each row alternates the two workers twice.\n")
            print("| workload | one at a time (1 ComfyUI) | two at once (2 ComfyUI) | speed-up |")
            print("|---|---|---|---|")
            for label, make in workloads:
                _batch(rig, both, [make()], "warm-up")
                walls: dict[int, list[float]] = {1: [], 2: []}
                spread: set[str] = set()
                for _round in range(2):
                    for urls in (one, both):
                        wall, results = _batch(rig, urls, [make() for _ in range(jobs)], f"tp-{len(urls)}")
                        walls[len(urls)].append(wall)
                        if len(urls) == 2:
                            spread |= {r.output["comfyui"] for r in results}
                single, double = statistics.median(walls[1]), statistics.median(walls[2])
                print(
                    f"| {label} | {single:.1f} s ({jobs / single * 60:.1f} jobs/min) | {double:.1f} s "
                    f"({jobs / double * 60:.1f} jobs/min; {len(spread)} ComfyUI used) | {single / double:.2f}× |"
                )
            print("\nSeconds: the median of the two runs, first submit to last result.")
        finally:
            rig.close()


def cancel(sources: ComfySources, rounds: int) -> None:
    from support.runpod_queue import RunPodQueue, start_worker, stop_worker

    with tempfile.TemporaryDirectory() as folder:
        rig = Rig(sources, Path(folder))
        try:
            print(machine_line())
            columns: dict[str, list[float]] = {"stopped": [], "taken": [], "started": [], "completed": []}
            failures: list[str] = []
            with RunPodQueue() as queue:
                log = rig.root / "cancel.log"
                worker = start_worker(rig.env([rig.servers[0].url]) | queue.worker_env("bench-cancel"), log)
                try:
                    for index in range(rounds):
                        first = queue.submit(rig.job(slow_workflow(steps=600), seed=index))
                        queue.wait_for(
                            lambda first=first: any(
                                update.get("node") == "Slow pass" for _t, update in queue.jobs[first].progress
                            ),
                            300,
                            "the slow node's steps",
                        )
                        (prompt_id,) = rig.running(0)
                        second = queue.submit(rig.job(tiny_workflow(frames=9), seed=1000 + index))
                        queue.cancel(first)
                        cancelled = time.monotonic()
                        while prompt_id in rig.running(0):
                            time.sleep(0.05)
                        columns["stopped"].append(time.monotonic() - cancelled)
                        done = queue.wait(second, timeout_s=300)
                        assert done.taken_at is not None and done.finished_at is not None
                        if done.status != "COMPLETED":
                            failures.append(
                                f"round {index + 1}: the next job ended {done.status} "
                                f"{done.finished_at - cancelled:.1f} s after the cancel: {done.error}"
                            )
                            continue
                        columns["taken"].append(done.taken_at - cancelled)
                        columns["started"].append(
                            done.taken_at + done.output["timings"]["execution_started"] - cancelled
                        )
                        columns["completed"].append(done.finished_at - cancelled)
                finally:
                    stop_worker(worker)
            print(
                f"{rounds} rounds: a 60 s job cancelled once its steps show, the next job already queued.\n"
            )
            print("| from the cancel to | median | min | max |")
            print("|---|---|---|---|")
            names = {
                "stopped": "ComfyUI no longer runs the cancelled prompt",
                "taken": "the worker takes the next job",
                "started": "ComfyUI starts executing the next job",
                "completed": "the next job completed (in R2)",
            }
            for key, label in names.items():
                values = columns[key]
                if values:
                    print(
                        f"| {label} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s |"
                    )
            for failure in failures:
                print(f"\n{failure}")
        finally:
            rig.close()


def load(sources: ComfySources, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        rig = Rig(sources, Path(folder))
        try:
            print(machine_line())
            frames = [(1, 5, 9)[index % 3] for index in range(jobs)]
            batch = [
                rig.job(tiny_workflow(frames=9), frames=count, width=64, height=64, seed=index)
                for index, count in enumerate(frames)
            ]
            wall, results = _batch(rig, [s.url for s in rig.servers], batch, "load", strict=False)
            failed = [r.error for r in results if r.status != "COMPLETED"]
            results = [r for r in results if r.status == "COMPLETED"]
            client = rig.moto.client()
            own = 0
            for index, result in enumerate(results):
                video = rig.root / f"load-{index}.mp4"
                video.write_bytes(
                    client.get_object(Bucket=rig.moto.bucket, Key=result.output["r2"]["key"])["Body"].read()
                )
                own += video_facts(rig.python, video)["frames"] == result.output["frames"] + 1
            keys = {r.output["r2"]["key"] for r in results}
            per_server = {s.url: sum(r.output["comfyui"] == s.url for r in results) for s in rig.servers}
            left = [p.name for p in rig.outputs.iterdir()]
            uploads = [
                p.name for p in (rig.tree / "input").iterdir() if p.name[:8].isalnum() and p.name[8:9] == "_"
            ]
            print(
                f"{jobs} jobs at once, one worker, two ComfyUI sharing one output folder, "
                f"R2_DELETE_AFTER_UPLOAD=true: {len(results)} completed in "
                f"{wall:.1f} s; {own} R2 objects decode to their own job's frame count; {len(keys)} distinct keys; "
                f"jobs per ComfyUI {sorted(per_server.values())}; files left in the output folder: {len(left)}; "
                f"uploads left in ComfyUI's input folder: {len(uploads)}."
            )
            if failed:
                print(f"\n{len(failed)} failed; the first: {failed[0]}")
        finally:
            rig.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("overhead").add_argument("--jobs", type=int, default=20)
    sub.add_parser("coldstart").add_argument("--boots", type=int, default=3)
    sub.add_parser("throughput").add_argument("--jobs", type=int, default=8)
    sub.add_parser("cancel").add_argument("--rounds", type=int, default=5)
    sub.add_parser("load").add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    sources = find_sources()
    print(f"## {args.what} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    if args.what == "overhead":
        overhead(sources, args.jobs)
    elif args.what == "coldstart":
        coldstart(sources, args.boots)
    elif args.what == "throughput":
        throughput(sources, args.jobs)
    elif args.what == "cancel":
        cancel(sources, args.rounds)
    else:
        load(sources, args.jobs)


if __name__ == "__main__":
    main()
