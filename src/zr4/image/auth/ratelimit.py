"""Failed authentication attempts per client, and the lock-out that slows guessing.

A client gets ``free_failures`` wrong attempts; each further one within ``window_s`` locks it out for
``base_lockout_s`` doubling per failure, up to ``max_lockout_s``. While locked out every attempt is
refused with 429 and a ``Retry-After``, even a right token, so guessing cannot go faster than the
lock-out allows. A success clears the client's record. Memory is bounded: at most ``max_clients``
records, the oldest dropped first.

With a 256-bit token guessing is hopeless anyway; this keeps a weak user-chosen token safe and
keeps a guessing client from costing anything.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class FailureLimiter:
    def __init__(
        self,
        *,
        free_failures: int = 5,
        window_s: float = 900.0,
        base_lockout_s: float = 2.0,
        max_lockout_s: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.window_s = window_s
        self.base_lockout_s = base_lockout_s
        self.max_lockout_s = max_lockout_s
        self.max_clients = max_clients
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Whole seconds ``client`` must wait before its next attempt counts (0: go ahead)."""
        record = self._records.get(client)
        if record is None:
            return 0
        remaining = record.locked_until - self._clock()
        return math.ceil(remaining) if remaining > 0 else 0

    def failed(self, client: str) -> int:
        """Record a failure; returns the lock-out it caused in whole seconds (0: none yet)."""
        now = self._clock()
        record = self._records.pop(client, None)
        if record is None or now - record.last_failure > self.window_s:
            record = _Record(0, now, 0.0)
        record.failures += 1
        record.last_failure = now
        extra = record.failures - self.free_failures
        lockout = 0.0
        if extra > 0:
            lockout = min(self.max_lockout_s, self.base_lockout_s * 2 ** min(extra - 1, 30))
            record.locked_until = now + lockout
        self._records[client] = record
        while len(self._records) > self.max_clients:
            self._records.popitem(last=False)
        return math.ceil(lockout)

    def succeeded(self, client: str) -> None:
        self._records.pop(client, None)

    def failures(self, client: str) -> int:
        record = self._records.get(client)
        return record.failures if record is not None else 0
