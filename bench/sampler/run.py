"""One benchmark run: zr4's GGUF workflow with a plan's decisions, through the real ComfyUI.

Why: `zr4 plan` predicts per-phase VRAM peaks; this measures them on the real sampler. It starts
ComfyUI under capped.py (a smaller card imitated), queues the workflow zr4 installs
(built by workflows.py as `zr4 start` builds it for the planned card, API format) over HTTP, waits
for it, checks that VHS_VideoCombine wrote an mp4, and writes per-node and per-phase numbers as JSON.

The pose nodes (ONNX YOLOv10m + ViTPose-H) are taken out and their consumer fed the driving frames:
the device machine has only the CPU onnxruntime, and random ONNX graphs of those two networks are
not something this benchmark can generate, so the pose phase is not measured here.

    python run.py --comfyui ComfyUI --workflow workflow-q4km-16g.json --plan plan-q4km-16g.json \
        --card-mib 16376 --name q4km-16g --out result.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POSE_CLASSES = ("PoseDetectionOneToAllAnimation", "OnnxDetectionModelLoader")
PHASES = {
    "PoseDetectionOneToAllAnimation": "pose",
    "OnnxDetectionModelLoader": "pose",
    "WanVideoTextEncodeCached": "text",
    "WanVideoTextEncode": "text",
    "LoadWanVideoT5TextEncoder": "text",
    "CLIPVisionLoader": "image",
    "WanVideoClipVisionEncode": "image",
    "WanVideoVAELoader": "encode",
    "WanVideoImageToVideoEncode": "encode",
    "WanVideoEncode": "encode",
    "WanVideoModelLoader": "load",
    "WanVideoSetBlockSwap": "load",
    "WanVideoSetLoRAs": "load",
    "WanVideoLoraSelect": "load",
    "WanVideoBlockSwap": "load",
    "WanVideoSamplerFromSettings": "sample",
    "WanVideoSampler": "sample",
    "WanVideoDecode": "decode",
    "VHS_VideoCombine": "output",
    "VHS_LoadVideo": "input",
    "LoadImage": "input",
    "ImageResizeKJv2": "input",
    "GetImageSizeAndCount": "input",
    "GetImageRangeFromBatch": "input",
}


def apply_plan(workflow: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The workflow with the plan's decisions that the workflow itself does not carry; pose bypassed.

    workflows.py already built it with the plan's level and block swap; the text encoder device
    and VAE tiling are set here too, so a plan that moves them is measured as planned."""
    wf = json.loads(json.dumps(workflow))
    pose_inputs: dict[str, Any] = {}
    for node_id, node in list(wf.items()):
        if node["class_type"] == "PoseDetectionOneToAllAnimation":
            pose_inputs[node_id] = node["inputs"]["images"]
        if node["class_type"] in POSE_CLASSES:
            del wf[node_id]
    for node in wf.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and value and value[0] in pose_inputs:
                node["inputs"][key] = pose_inputs[value[0]]
        cls, inputs = node["class_type"], node["inputs"]
        tiled = bool(plan["vae_tiling"])
        if cls == "WanVideoBlockSwap":
            inputs["blocks_to_swap"] = int(plan["block_swap"])
            inputs["prefetch_blocks"] = int(plan["prefetch_blocks"])
        elif cls == "WanVideoTextEncodeCached":
            inputs["device"] = "gpu" if plan["text_encoder_device"] == "gpu" else "cpu"
        elif cls in ("WanVideoDecode", "WanVideoEncode"):
            inputs["enable_vae_tiling"] = tiled
        elif cls == "WanVideoImageToVideoEncode":
            inputs["tiled_vae"] = tiled
    return wf


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}") | {"http_status": e.code}


def summarize(records: list[dict[str, Any]], sampler_steps: int) -> dict[str, Any]:
    """Per-phase peaks (max over the phase's nodes), seconds (sum) and sampler s/step."""
    phases: dict[str, dict[str, float]] = {}
    for r in records:
        phase = PHASES.get(r["class_type"], "other")
        p = phases.setdefault(
            phase,
            {
                "s": 0.0,
                "allocated_peak_mib": 0.0,
                "reserved_peak_mib": 0.0,
                "nvml_peak_mib": 0.0,
                "rss_peak_mib": 0.0,
            },
        )
        p["s"] = round(p["s"] + r["s"], 3)
        for key in ("allocated_peak_mib", "reserved_peak_mib", "nvml_peak_mib", "rss_peak_mib"):
            p[key] = max(p[key], r[key])
    # The sampler's own progress bar counts 1..steps; load_weights' bar (per parameter) is skipped.
    marks: list[tuple[float, int]] = []
    for r in records:
        if PHASES.get(r["class_type"]) == "sample":
            # Each step is reported twice (value, then preview); the first report of a value counts.
            seen: dict[int, float] = {}
            for t, v, total in r["steps"]:
                if total == sampler_steps and v > 0:
                    seen.setdefault(v, t)
            marks = sorted((t, v) for v, t in seen.items())
    first = marks[0][0] if marks else None
    steps = [round(b[0] - a[0], 3) for a, b in itertools.pairwise(marks)]
    return {"phases": phases, "step_s": steps, "first_step_done_s": first}


def run(opts: argparse.Namespace) -> dict[str, Any]:
    comfy = opts.comfyui.resolve()
    plan = json.loads(opts.plan.read_text())
    original = json.loads(opts.workflow.read_text())
    workflow = apply_plan(original, plan)
    changed = {
        f"{k}.{key}": value
        for k, node in workflow.items()
        for key, value in node["inputs"].items()
        if original[k]["inputs"].get(key) != value
    }
    inputs = comfy / "input"
    inputs.mkdir(exist_ok=True)
    shutil.copyfile(opts.video, inputs / "steadydancer_driving.mp4")
    shutil.copyfile(opts.image, inputs / "steadydancer_reference.png")
    cache = comfy / "custom_nodes" / "ComfyUI-WanVideoWrapper" / "text_embed_cache"
    shutil.rmtree(cache, ignore_errors=True)  # encode the prompt every run: the text phase is measured
    stats = opts.out.with_suffix(".stats.jsonl")
    stats.unlink(missing_ok=True)
    log = opts.out.with_suffix(".comfyui.log")
    front = Path("/tmp/zr4-bench-frontend")
    front.mkdir(exist_ok=True)
    (front / "index.html").write_text("<!doctype html><title>bench</title>")
    env = os.environ | {
        "ZR4_BENCH_CARD_MIB": str(opts.card_mib),
        "ZR4_BENCH_STATS": str(stats),
        "PYTHONUNBUFFERED": "1",
    }
    args = [
        sys.executable,
        str(HERE / "capped.py"),
        str(comfy / "main.py"),
        "--listen",
        "127.0.0.1",
        "--port",
        str(opts.port),
        "--front-end-root",
        str(front),
        *plan["comfyui_args"],
        *opts.extra_arg,
    ]
    started = time.monotonic()
    result: dict[str, Any] = {
        "name": opts.name,
        "card_mib": opts.card_mib,
        "plan": {
            k: plan[k]
            for k in (
                "gguf_level",
                "memory_mode",
                "block_swap",
                "prefetch_blocks",
                "text_encoder_device",
                "vae_tiling",
                "comfyui_args",
                "phase_mib",
                "peak_mib",
                "card_mib",
            )
        },
        "comfyui_argv": args[3:],
        "workflow": opts.workflow.name,
        "pose_bypassed": sorted(set(original) - set(workflow)),
        "inputs_changed": changed,
    }
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=comfy, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{opts.port}"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode} before it listened")
            try:
                result["system_stats"] = _get(f"{url}/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() - started > opts.start_timeout:
                    raise RuntimeError("ComfyUI did not listen in time") from None
                time.sleep(0.5)
        result["start_s"] = round(time.monotonic() - started, 1)
        queued = time.monotonic()
        answer = _post(f"{url}/prompt", {"prompt": workflow, "client_id": "zr4-bench"})
        if "prompt_id" not in answer:
            result["error"] = {"prompt_rejected": answer}
            return result
        prompt_id = answer["prompt_id"]
        while True:
            history = _get(f"{url}/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") == "error" or entry["status"].get("completed"):
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode} while running")
            if time.monotonic() - queued > opts.run_timeout:
                raise RuntimeError("the workflow did not finish in time")
            time.sleep(1)
        result["total_s"] = round(time.monotonic() - queued, 1)
        result["status"] = entry["status"].get("status_str")
        errors = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
        if errors:
            detail = errors[0][1]
            result["error"] = {k: detail.get(k) for k in ("node_type", "exception_type", "exception_message")}
        videos = []
        for out in entry.get("outputs", {}).values():
            for item in out.get("gifs", []):
                path = comfy / "output" / item.get("subfolder", "") / item["filename"]
                videos.append(
                    {
                        "file": item["filename"],
                        "format": item.get("format"),
                        "bytes": path.stat().st_size if path.exists() else None,
                        "frames": _frames(path),
                    }
                )
        result["videos"] = videos
    except RuntimeError as e:
        result["error"] = {"runner": str(e)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        lines = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
        result["launcher"] = next((x["launcher"] for x in lines if "launcher" in x), None)
        records = [x for x in lines if "launcher" not in x]
        result["nodes"] = records
        steps = [
            n["inputs"]["steps"] for n in workflow.values() if n["class_type"] == "WanVideoSamplerSettings"
        ]
        result |= summarize(records, steps[0] if steps else 4)
        text = log.read_text(errors="replace") if log.exists() else ""
        result["oom_in_log"] = "OutOfMemoryError" in text or "out of memory" in text.lower()
        result["log_tail"] = text[-3000:]
        opts.out.write_text(json.dumps(result, indent=1))
    return result


def _frames(path: Path) -> int | None:
    try:
        import cv2

        cap = cv2.VideoCapture(str(path))
        n = 0
        while cap.read()[0]:
            n += 1
        return n
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--workflow", type=Path, required=True, help="workflows.py output (API format)")
    parser.add_argument("--plan", type=Path, required=True, help="`zr4 plan --json` output")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--card-mib", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--extra-arg", action="append", default=[])
    parser.add_argument("--start-timeout", type=float, default=180)
    parser.add_argument("--run-timeout", type=float, default=420)
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args()
    result = run(opts)
    brief = {
        k: result.get(k)
        for k in (
            "name",
            "status",
            "error",
            "total_s",
            "start_s",
            "step_s",
            "videos",
            "oom_in_log",
            "launcher",
        )
    }
    print(json.dumps(brief, indent=1))
    for phase, p in result.get("phases", {}).items():
        print(f"  {phase:8} {p}")


if __name__ == "__main__":
    main()
