"""Byte counts as people read them, in one way everywhere zr4 prints a size.

Decimal units (1 KB = 1000 B), as disks, the Hub and container engines count: a free-space line
and the file sizes beside it then add up the way the user's own tools show them.
"""

from __future__ import annotations

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_bytes(count: float | None, decimals: int = 1) -> str:
    """``1234567`` -> ``1.2 MB`` (``decimals`` digits after the point; whole bytes have none).

    None, an unknown size, is ``?``. ``zr4 build`` prints its image size with two decimals.
    """
    if count is None:
        return "?"
    value = float(count)
    if abs(value) < 1000:
        return f"{value:.0f} B"
    for unit in _UNITS[1:-1]:
        value /= 1000
        if abs(value) < 1000:
            return f"{value:.{decimals}f} {unit}"
    return f"{value / 1000:.{decimals}f} {_UNITS[-1]}"
