"""Bisection over a monotone test: the fewest swapped blocks that fit, the most frames that fit."""

from __future__ import annotations

from collections.abc import Callable


def smallest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest n in [low, high] with ok(n), for ok monotone (False...False True...True)."""
    if low > high or not ok(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return low


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest n in [low, high] with ok(n), for ok monotone (True...True False...False)."""
    if low > high or not ok(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low
