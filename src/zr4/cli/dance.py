"""`zr4 dance`: a photo and a dance clip in, the finished video out, through a running ComfyUI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from zr4.errors import UsageError, Zr4Error


class DanceFailed(Zr4Error):
    """The job failed; the message is the one line to print."""

    def __init__(self, message: str, out_of_memory: bool) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


@contextmanager
def _errors_as_json(as_json: bool) -> Iterator[None]:
    """With ``--json``, every error (a bad option included) is also one JSON object on stdout: a
    script reading stdout gets an answer, never nothing."""
    try:
        yield
    except Zr4Error as error:
        if as_json:
            document: dict[str, Any] = {"ok": False, "error": str(error)}
            if isinstance(error, DanceFailed):
                document["out_of_memory"] = error.out_of_memory
            typer.echo(json.dumps(document))
        raise


def _profile_data(profile: str | None) -> dict[str, Any] | None:
    """The profile for out-of-memory advice: ``--profile``, else the baked one (``ZR4_PROFILE``)."""
    if profile is not None:
        from zr4.profile import load_profile

        return load_profile(profile).model_dump(mode="json")
    from zr4.core.tune import read_profile

    data, _ = read_profile(None, os.environ)
    return data


class _Progress:
    """A rich progress bar on a terminal; one line per update otherwise (logs, CI, pipes)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self._progress: Any = None
        self._task: Any = None
        self._last_line = ""

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("connecting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def __call__(self, event: Any) -> None:
        if self.live:
            if event.kind == "cancelled":  # Ctrl-C: say how ComfyUI's work ended, above the bar
                self._progress.console.print(event.describe().strip(), markup=False, highlight=False)
            elif event.kind == "models":  # the pod is still starting: its download's progress
                self._progress.update(self._task, description=event.detail, completed=0, total=None)
            elif event.kind == "progress":
                self._progress.update(
                    self._task,
                    description=f"node {event.node_id} {event.node_title}",
                    completed=event.value,
                    total=event.maximum,
                )
            elif event.kind in ("node", "cached", "started", "queued"):
                label = f"node {event.node_id} {event.node_title}" if event.node_id else event.kind
                self._progress.update(
                    self._task, description=label, completed=event.nodes_done, total=event.nodes_total or None
                )
            return
        line = event.describe()
        if line != self._last_line:
            print(line, file=sys.stderr, flush=True)
            self._last_line = line


def _local_input_dir() -> Path:
    """ComfyUI's input folder when ComfyUI runs on this machine (the container's terminal): the job
    deletes its uploads there when it ends. Elsewhere the folder is absent and nothing is deleted."""
    from zr4.core import image_layout

    return Path(os.environ.get("COMFYUI_DIR") or image_layout.COMFYUI_DIR) / "input"


def _destination(out: Path | None):  # type: ignore[no-untyped-def]
    def where(output: Any) -> Path:
        if out is None:
            return Path.cwd() / output.filename
        if out.is_dir():
            return out / output.filename
        return out

    return where


def dance(
    image: str = typer.Option(..., "--image", help="The photo: a file path or an http(s) URL."),
    video: str = typer.Option(..., "--video", help="The dance clip: a file path or an http(s) URL."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to save the video (a file or a folder; default: ./<ComfyUI's name>)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Sampler seed (default: a random one, printed)."),
    frames: int | None = typer.Option(
        None, "--frames", help="Frames to generate, 4n+1 (81 = 5 s at 16 fps)."
    ),
    width: int | None = typer.Option(None, "--width", help="Output width, a multiple of 16 (with --height)."),
    height: int | None = typer.Option(
        None, "--height", help="Output height, a multiple of 16 (with --width)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps (default: the workflow's)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Positive prompt (default: the workflow's)."),
    comfyui: list[str] = typer.Option(
        [],
        "--comfyui",
        help=(
            "ComfyUI URL (repeatable: jobs go to the least busy). Default: $ZR4_COMFYUI_URLS, else every "
            "ComfyUI `zr4 start` runs in this container, else http://127.0.0.1:$COMFYUI_PORT (8188)."
        ),
    ),
    workflow: Path | None = typer.Option(
        None, "--workflow", help="An API-format workflow to use instead of the one the boot installed."
    ),
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="Profile for out-of-memory advice (default: the baked one)."
    ),
    sync_wait: float = typer.Option(
        30.0, "--sync-wait", min=0.0, help="Seconds to wait for the R2 copy when ENABLE_R2_SYNC=true."
    ),
    models_wait: float = typer.Option(
        3600.0,
        "--models-wait",
        min=0.0,
        help="Seconds to wait, on a pod still starting, for ComfyUI and the models it downloads.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result (or the error) as JSON on stdout."),
) -> None:
    """Animate the --image photo with the motion of the --video clip.

    Uploads both, queues the workflow, follows it and downloads the video.
    """
    with _errors_as_json(as_json):
        from zr4.client.boot_wait import status_over_http_or_file
        from zr4.client.comfy_api import ComfyClient, ExecutionFailed, auth_token, comfyui_urls
        from zr4.client.dance import JobRequest, load_workflow_file, oom_advice, run_job
        from zr4.client.job_workflow import DanceParams
        from zr4.image.synced_copy import find_synced_copy

        if out is not None and out.exists() and not out.is_dir() and not out.is_file():
            raise UsageError(f"--out {out} is neither a file nor a folder")
        params = DanceParams(seed=seed, frames=frames, width=width, height=height, steps=steps, prompt=prompt)
        problems = params.problems()
        if problems:
            raise UsageError("; ".join(problems))
        urls = comfyui_urls(os.environ, comfyui)
        token = auth_token(os.environ)
        clients = [ComfyClient(url, token=token) for url in urls]
        loaded, source = load_workflow_file(workflow) if workflow is not None else (None, "")
        request = JobRequest(image=image, video=video, params=params, workflow=loaded, workflow_source=source)
        try:
            with _Progress(live=sys.stderr.isatty() and not as_json) as progress:
                result = run_job(
                    clients,
                    request,
                    on_event=progress,
                    destination=_destination(out),
                    input_dir=_local_input_dir(),
                    boot_status=status_over_http_or_file(os.environ),
                    models_wait_s=models_wait,
                )
        except ExecutionFailed as error:
            message = str(error)
            if error.out_of_memory:
                from zr4.client.dance import describe_failure

                try:
                    stats = clients[0].system_stats()
                except Zr4Error:
                    stats = None
                advice = oom_advice(stats, _profile_data(profile), width, height, frames)
                message = describe_failure(error, advice)
            raise DanceFailed(message, error.out_of_memory) from None
        synced = find_synced_copy(result.output.rel_path, os.environ, wait_s=sync_wait)
        if as_json:
            extra = {
                "r2": None
                if synced is None
                else {"bucket": synced.bucket, "key": synced.key, "present": synced.present}
            }
            typer.echo(json.dumps({"ok": True, **result.to_dict(), **extra}, indent=2, sort_keys=True))
            return
        size = f"{(result.size_bytes or 0) / 1e6:.1f} MB"
        total = result.timings.get("downloaded", 0.0)
        typer.echo(
            f"video: {result.local_path} ({size}, seed {result.seed}, prompt {result.prompt_id}, {total:.1f} s)"
        )
        if synced is not None:
            typer.echo(f"r2: {synced.describe()}")
