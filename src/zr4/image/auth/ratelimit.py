"""Failed authentication attempts per client, the lock-out that slows guessing, and a limit for all.

A client gets ``free_failures`` wrong attempts; each further one within ``window_s`` locks it out for
``base_lockout_s`` doubling per failure, up to ``max_lockout_s``. While locked out every attempt is
refused with 429 and a ``Retry-After``, even a right token, so guessing cannot go faster than the
lock-out allows. A success clears the client's record. Memory is bounded: at most ``max_clients``
records, the oldest dropped first.

Who "a client" is comes from an address, and behind a proxy from a header that a client could
vary; :class:`FailureBudget` therefore also limits the failures of all clients together (a burst,
then a steady rate), so that no way of naming clients buys more guesses.

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


class FailureBudget:
    """Failed attempts of all clients together: ``burst`` at once, then ``per_s`` a second.

    A token bucket: each failure takes one; while it is empty every token check waits (429), so
    guesses cannot go faster than ``per_s`` however the clients are split. The wait is never
    longer than one refill, so it cannot be used to keep the owner out for long.
    """

    def __init__(
        self, *, burst: int = 60, per_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._ran_out = False  # reported since the bucket was last full

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.per_s)
        self._updated = now
        if self._tokens >= self.burst:
            self._ran_out = False

    def retry_after(self) -> int:
        """Whole seconds until the next token check may go ahead (0: now)."""
        self._refill()
        return 0 if self._tokens >= 1 else math.ceil((1 - self._tokens) / self.per_s)

    def spend(self) -> bool:
        """Record a failure; True the first time the bucket runs empty since it was last full."""
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)
        if self._tokens < 1 and not self._ran_out:
            self._ran_out = True
            return True
        return False
