"""Stopping a job: the request to stop (from another thread or Ctrl-C) and what it does in ComfyUI.

A job runs in a thread (the serverless worker) or in `zr4 dance`'s main thread. Cancelling the
asyncio task or the process does not reach ComfyUI: its prompt would run to the end, keep the GPU
and make the next job wait behind it. So a stop goes to ComfyUI first (:func:`stop_prompt`):

- a prompt still waiting is removed from the queue (``POST /queue {"delete": [id]}``);
- the prompt running is interrupted (``POST /interrupt {"prompt_id": id}``), only after ``GET /queue``
  showed it is ours that runs: an interrupt without an id, or on an older ComfyUI, stops whatever runs;
- then ``GET /queue`` is asked until the prompt is in neither list: ComfyUI takes it off the running
  list when the executor returns, after the interrupt took effect at the next node or progress step
  (comfyanonymous/ComfyUI@f59f71cf ``server.py`` ``post_queue`` / ``post_interrupt``, ``execution.py``
  ``PromptQueue.delete_queue_item`` / ``task_done``, ``main.py`` ``hijack_progress``).

One race is left to ComfyUI: v0.7.0 checks that the prompt runs, then sets its process-wide flag; a
prompt that ends and is followed by another in between gets the interrupt instead.
"""

from __future__ import annotations

import threading
import time

from zr4.client.comfy_api import ComfyClient, ComfyError, EventStream
from zr4.errors import Zr4Error

# How long a stop waits for ComfyUI to report the prompt stopped. ComfyUI checks the flag before each
# node and at each progress step; a long node without steps (a VAE decode) reaches the next check late.
STOP_WAIT_S = 120.0
REINTERRUPT_S = 5.0  # a flag a node consumed without stopping (a node catching everything) is set again
POLL_S = 0.25


class JobCancelled(Zr4Error):
    """The job was stopped before it delivered its video; the message says how ComfyUI's work ended."""


class JobControl:
    """A stop request for one job, set from any thread (RunPod's cancel reaches the worker's event
    loop; the job runs in a thread that checks this between steps and while it waits)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` once a stop was requested."""
        if self._event.is_set():
            raise JobCancelled(self.reason or "cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once when a stop is requested."""
        return self._event.wait(seconds)


def stop_prompt(
    client: ComfyClient, prompt_id: str, stream: EventStream | None = None, wait_s: float = STOP_WAIT_S
) -> str:
    """Take ``prompt_id`` out of ComfyUI: dequeue or interrupt it, then wait until it is gone from
    ``/queue``. Returns what happened, in a few words; never raises for ComfyUI's answers."""
    deadline = time.monotonic() + wait_s
    removed = False
    interrupted_at: float | None = None
    while True:
        try:
            queue = client.queue_state()
            if prompt_id in queue.pending:
                client.delete_queued(prompt_id)
                removed = True
                continue  # it may have started meanwhile: look again
            if prompt_id not in queue.running:
                if interrupted_at is not None:
                    return f"prompt {prompt_id} interrupted in ComfyUI"
                if removed:
                    return f"prompt {prompt_id} removed from ComfyUI's queue before it started"
                if client.history(prompt_id) is None:
                    return f"prompt {prompt_id} was not queued in ComfyUI"
                return f"prompt {prompt_id} had already ended in ComfyUI"
            if interrupted_at is None or time.monotonic() - interrupted_at >= REINTERRUPT_S:
                client.interrupt(prompt_id)
                interrupted_at = time.monotonic()
        except ComfyError as error:
            return f"prompt {prompt_id} may still run: {error}"
        if time.monotonic() >= deadline:
            return f"prompt {prompt_id} still runs in ComfyUI {wait_s:.0f} s after the interrupt"
        if stream is not None:
            try:
                stream.next(POLL_S)  # the websocket's messages are not needed, only drained
            except ComfyError:
                stream = None
        else:
            time.sleep(POLL_S)
