"""Which ComfyUI a job goes to: the least busy, reserved the moment the job is assigned.

ComfyUI's ``GET /queue`` shows a job only once its prompt is queued, and a job uploads its inputs
before that. Two jobs assigned together would both see an idle server and both take it, while the
other GPU idles. So a :class:`Balancer` (one per worker process, shared by its jobs) counts the jobs
it assigned that have not queued their prompt yet on top of each server's queue, and assigns under
a lock. A job's reservation ends when its prompt is queued (ComfyUI's queue counts it from then) or
when the job ends before that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from zr4.client.comfy_api import ComfyClient, ComfyError, ComfyUnreachable
from zr4.errors import Zr4Error


class NoComfyUI(Zr4Error):
    """No ComfyUI URL was given."""


class Reservation:
    """One job's claim on a server, held until its prompt is queued."""

    def __init__(self, balancer: Balancer, client: ComfyClient) -> None:
        self.client = client
        self._balancer = balancer
        self._held = True

    def queued(self) -> None:
        """The prompt is in ComfyUI's queue now, which counts it from here on."""
        self._balancer._release(self)

    def _release(self) -> bool:
        held, self._held = self._held, False
        return held


class Balancer:
    """The ComfyUI servers of a worker (or of one `zr4 dance`), and the jobs assigned to them."""

    def __init__(self, clients: Sequence[ComfyClient]) -> None:
        if not clients:
            raise NoComfyUI("no ComfyUI URL given")
        self.clients = list(clients)
        self._lock = threading.Lock()
        self._assigned = {client.base_url: 0 for client in self.clients}

    def _pick(self) -> ComfyClient:
        if len(self.clients) == 1:
            self.clients[0].system_stats()  # unreachable → one clear line before anything is uploaded
            return self.clients[0]
        best: tuple[int, int] | None = None
        chosen: ComfyClient | None = None
        errors: list[str] = []
        for index, client in enumerate(self.clients):
            try:
                load = client.queue_length() + self._assigned[client.base_url]
            except ComfyError as error:
                errors.append(str(error))
                continue
            if best is None or (load, index) < best:
                best, chosen = (load, index), client
        if chosen is None:
            raise ComfyUnreachable(f"none of the {len(self.clients)} ComfyUI servers answers: {errors[0]}")
        return chosen

    def pick(self) -> ComfyClient:
        """The least busy reachable server (the first one on a tie), without reserving it."""
        with self._lock:
            return self._pick()

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """Assign the least busy server to one job; the claim ends when its prompt is queued or at exit."""
        with self._lock:
            client = self._pick()
            reservation = Reservation(self, client)
            self._assigned[client.base_url] += 1
        try:
            yield reservation
        finally:
            self._release(reservation)

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation._release():
                self._assigned[reservation.client.base_url] -= 1
