"""Where things live inside the image: the one contract between the Dockerfile template and the runtime.

The renderer writes these paths into the Dockerfile (and its ENV lines); the runtime falls back to
them when the environment does not say otherwise. Keeping them here means a path can never differ
between what the image builds and what its boot code looks for. The shutdown timeouts live here for
the same reason: the rendered compose file gives the container the time the boot waits at its stop.
"""

from __future__ import annotations

import os
import tempfile

PYTHON_DIR = "/opt/python"  # uv-managed CPython, the same path in builder and runtime stages
VENV_DIR = "/opt/venv"  # ComfyUI's venv
COMFYUI_DIR = "/opt/ComfyUI"
COMFYUI_PYTHON = f"{VENV_DIR}/bin/python"
ZR4_DIR = "/opt/zr4"  # zr4's own venv, plus the baked context files
PROFILE_JSON = f"{ZR4_DIR}/profile.json"
# RunPod's persistent volume (docs.runpod.io/pods/storage/types): models, outputs and sync state outlive the pod.
WORKSPACE_DIR = "/workspace"
MODELS_DIR = f"{WORKSPACE_DIR}/models"
OUTPUT_DIR = f"{WORKSPACE_DIR}/outputs"
SYNC_STATE_DIR = f"{WORKSPACE_DIR}/.zr4/sync"
# The auth proxy's folder: its access token when ZR4_AUTH_TOKEN is not set (generated once, 0600).
AUTH_DIR = f"{WORKSPACE_DIR}/.zr4/auth"
# The ComfyUI instances' own state while they run (a temp folder and database each), and the file that
# lists their public URLs, comma-separated, for a `zr4 dance` typed in the container: zr4.image.instances
# writes them, zr4.client.comfy_api reads the URLs. Under the temp folder: nothing outlives the container.
INSTANCES_STATE_DIR = os.path.join(tempfile.gettempdir(), "zr4-comfyui")
INSTANCE_URLS_FILE = os.path.join(INSTANCES_STATE_DIR, "urls")
# What the boot is doing (phase, model download progress, ComfyUI ready, failures with their fix):
# written by `zr4 start`, read by the auth proxy's status page, `zr4 health` and jobs
# (zr4.core.boot_status). In the container's temp folder: it describes this container's boot and
# must be writable when the volume is full.
BOOT_STATUS_FILE = os.path.join(tempfile.gettempdir(), "zr4-boot", "status.json")

# How long `zr4 start` waits when the container stops: for the sync daemon, which drains in-flight
# uploads on SIGTERM for R2_SYNC_SHUTDOWN_SECONDS (default 20 s), then for the final sync pass.
SYNC_STOP_TIMEOUT_S = 30.0
FINAL_SYNC_TIMEOUT_S = 300.0
