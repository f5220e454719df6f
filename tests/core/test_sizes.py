"""The one size formatter: what the model manager, the sync log and `zr4 build` print."""

from __future__ import annotations

import pytest

from zr4.core.sizes import human_bytes


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, "?"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (1234, "1.2 KB"),
        (999_999, "1000.0 KB"),  # rounded, not promoted: as the model manager always printed it
        (12_345_678, "12.3 MB"),
        (5_000_000_000, "5.0 GB"),
        (1_500_000_000_000, "1.5 TB"),
        (2_500_000_000_000_000, "2500.0 TB"),
        (-1500, "-1.5 KB"),
    ],
)
def test_one_decimal_by_default_decimal_units_up_to_tb(count: float | None, text: str) -> None:
    assert human_bytes(count) == text


def test_build_sizes_keep_two_decimals() -> None:
    # `zr4 build` reports the image size this way (tests/test_build_command.py holds the line).
    assert human_bytes(21_474_836_480, decimals=2) == "21.47 GB"
    assert human_bytes(999, decimals=2) == "999 B"
    assert human_bytes(1234, decimals=2) == "1.23 KB"
