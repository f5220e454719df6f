"""A stand-in for a RunPod Serverless endpoint's job queue: both sides of it, over HTTP.

The client side is the endpoint's operations (https://docs.runpod.io/serverless/references/operations):
``POST /v2/<id>/run`` (a body over 10 MB is refused), ``POST /v2/<id>/runsync`` (20 MB; waits up to
``?wait=`` ms for the result), ``GET|POST /v2/<id>/status/<job>``, ``POST /v2/<id>/cancel/<job>``.
The worker side is what runpod-python 1.12.0's worker calls (``runpod/serverless/modules/rp_job.py``,
``rp_http.py``): ``GET …/job-take/<worker>?…`` and ``…/job-take-batch/<worker>?…&batch_size=N``
(a job, a list of jobs, or 204), ``POST …/job-done/<worker>/<job>?…&isStream=false`` (the result, or
a progress update with ``"status": "IN_PROGRESS"``), and the stop channel ``GET …/job-stop/<worker>?…``
(``{"jobsToStop": [...]}`` or 204) on which a cancel reaches the worker. Long polls are held up to
:data:`POLL_HOLD_S` so the worker does not spin.

How the stand-in answers a body over the limit (HTTP 413 with one line) is its own choice; RunPod
documents the limits, not the answer. Every request the worker makes is recorded with its time, so
tests can check what was posted after a cancel.

Use::

    with RunPodQueue() as queue:
        env = queue.worker_env("worker-1")        # RUNPOD_WEBHOOK_GET_JOB, …_POST_OUTPUT, RUNPOD_POD_ID
        job_id = queue.run({"image": …, "video": …})
        queue.wait(job_id, {"COMPLETED", "FAILED"})
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RUN_LIMIT_BYTES = 10 * 1000 * 1000
RUNSYNC_LIMIT_BYTES = 20 * 1000 * 1000
POLL_HOLD_S = 0.5
ENDPOINT = "zr4-test"
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


@dataclass
class QueuedJob:
    id: str
    input: Any
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    taken_at: float | None = None
    finished_at: float | None = None
    cancelled_at: float | None = None
    progress: list[tuple[float, Any]] = field(default_factory=list)  # (time, update)
    late_posts: list[tuple[float, Any]] = field(default_factory=list)  # posted after a cancel

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.error is not None:
            body["error"] = self.error
        elif self.output is not None:
            body["output"] = self.output
        return body


class RunPodQueue:
    """``with RunPodQueue() as queue:`` serves on ``queue.url`` until the block ends."""

    def __init__(self, run_limit: int = RUN_LIMIT_BYTES, runsync_limit: int = RUNSYNC_LIMIT_BYTES) -> None:
        self.run_limit = run_limit
        self.runsync_limit = runsync_limit
        self.jobs: dict[str, QueuedJob] = {}
        self.order: list[str] = []  # ids still queued, oldest first
        self.to_stop: list[str] = []
        self.lock = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def worker_env(self, worker_id: str) -> dict[str, str]:
        """The variables RunPod sets in a worker's container that the SDK reads (rp_job.py, rp_http.py,
        worker_state.py), plus the switches that skip its GPU and system checks (rp_fitness.py)."""
        base = f"{self.url}/v2/{ENDPOINT}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    # --- the client side, from Python -----------------------------------------------------------

    def submit(self, job_input: Any) -> str:
        job = QueuedJob(id=f"job-{uuid.uuid4().hex[:12]}", input=job_input)
        with self.lock:
            self.jobs[job.id] = job
            self.order.append(job.id)
            self.lock.notify_all()
        return job.id

    def cancel(self, job_id: str) -> None:
        with self.lock:
            job = self.jobs[job_id]
            if job.status in FINAL:
                return
            if job.id in self.order:
                self.order.remove(job.id)
            elif job.status == "IN_PROGRESS":
                self.to_stop.append(job.id)
            job.status = "CANCELLED"
            job.cancelled_at = time.monotonic()
            self.lock.notify_all()

    def wait(
        self, job_id: str, states: set[str] | frozenset[str] = FINAL, timeout_s: float = 120.0
    ) -> QueuedJob:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while self.jobs[job_id].status not in states:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"job {job_id} is {self.jobs[job_id].status}, not {sorted(states)}")
                self.lock.wait(remaining)
            return self.jobs[job_id]

    def wait_for(self, condition: Any, timeout_s: float = 120.0, what: str = "a condition") -> None:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
                self.lock.wait(min(remaining, 0.2))

    # --- the worker side ---------------------------------------------------------------------------

    def take(self, count: int) -> list[QueuedJob]:
        deadline = time.monotonic() + POLL_HOLD_S
        with self.lock:
            while not self.order and time.monotonic() < deadline:
                self.lock.wait(max(0.0, deadline - time.monotonic()))
            taken = []
            while self.order and len(taken) < count:
                job = self.jobs[self.order.pop(0)]
                job.status = "IN_PROGRESS"
                job.taken_at = time.monotonic()
                taken.append(job)
            self.lock.notify_all()
            return taken

    def stops(self) -> list[str]:
        deadline = time.monotonic() + POLL_HOLD_S
        with self.lock:
            while not self.to_stop and time.monotonic() < deadline:
                self.lock.wait(max(0.0, deadline - time.monotonic()))
            ids, self.to_stop = self.to_stop, []
            return ids

    def done(self, job_id: str, data: dict[str, Any]) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            now = time.monotonic()
            if job.status in FINAL:
                job.late_posts.append((now, data))
            elif data.get("status") == "IN_PROGRESS":
                job.progress.append((now, data.get("output")))
                job.output = data.get("output")
            else:
                job.finished_at = now
                if data.get("error"):
                    job.status, job.error, job.output = "FAILED", str(data["error"]), None
                else:
                    job.status, job.output = "COMPLETED", data.get("output")
            self.lock.notify_all()

    def __enter__(self) -> RunPodQueue:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(queue: RunPodQueue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _reply(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[str, list[str], dict[str, str]]:
            url = urllib.parse.urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if len(parts) < 3 or parts[0] != "v2" or parts[1] != ENDPOINT:
                return "", [], {}
            return parts[2], parts[3:], dict(urllib.parse.parse_qsl(url.query))

        def do_GET(self) -> None:
            operation, rest, query = self._route()
            if operation == "job-take":
                jobs = queue.take(1)
                self._reply(200, {"id": jobs[0].id, "input": jobs[0].input}) if jobs else self._reply(204)
            elif operation == "job-take-batch":
                jobs = queue.take(int(query.get("batch_size", "1")))
                self._reply(200, [{"id": j.id, "input": j.input} for j in jobs]) if jobs else self._reply(204)
            elif operation == "job-stop":
                ids = queue.stops()
                self._reply(200, {"jobsToStop": ids}) if ids else self._reply(204)
            elif operation == "status" and rest:
                self._status(rest[0])
            else:
                self._reply(404, {"error": "not found"})

        def _status(self, job_id: str) -> None:
            with queue.lock:
                job = queue.jobs.get(job_id)
                answer = None if job is None else job.answer()
            self._reply(200, answer) if answer else self._reply(404, {"error": "job not found"})

        def do_POST(self) -> None:
            operation, rest, query = self._route()
            length = int(self.headers.get("Content-Length", "0"))
            limit = {"run": queue.run_limit, "runsync": queue.runsync_limit}.get(operation)
            if limit is not None and length > limit:
                self.rfile.read(length)
                self._reply(
                    413, {"error": f"request body of {length:,} bytes is above /{operation}'s {limit:,}"}
                )
                return
            body = self.rfile.read(length)
            if operation in ("run", "runsync"):
                try:
                    request = json.loads(body)
                except ValueError:
                    self._reply(400, {"error": "the body is not JSON"})
                    return
                job_id = queue.submit(request.get("input"))
                if operation == "run":
                    self._reply(200, {"id": job_id, "status": "IN_QUEUE"})
                    return
                wait_s = int(query.get("wait", "90000")) / 1000
                try:
                    job = queue.wait(job_id, FINAL, wait_s)
                    self._reply(200, job.answer())
                except AssertionError:
                    self._status(job_id)
            elif operation == "status" and rest:
                self._status(rest[0])
            elif operation == "cancel" and rest:
                if rest[0] not in queue.jobs:
                    self._reply(404, {"error": "job not found"})
                    return
                queue.cancel(rest[0])
                self._status(rest[0])
            elif operation == "job-done" and len(rest) >= 2:
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {"error": "unparseable result"}
                queue.done(rest[1], data if isinstance(data, dict) else {"output": data})
                self._reply(200, {})
            else:
                self._reply(404, {"error": "not found"})

    return Handler


def start_worker(env: dict[str, str], log_path: Any, cwd: Any = None) -> Any:
    """``python -m zr4.image.serverless`` as RunPod runs it: ``env`` holds :meth:`RunPodQueue.worker_env`
    and the worker's settings; output to ``log_path``. Stop it with :func:`stop_worker`."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "R2_", "ENABLE_R2"))}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "zr4.image.serverless"],
            env={**clean, "ZR4_COMFYUI_WAIT_S": "60", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def stop_worker(process: Any, timeout_s: float = 60.0) -> int:
    """SIGTERM (the SDK finishes the jobs in hand, then exits), then SIGKILL after ``timeout_s``."""
    import subprocess

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
