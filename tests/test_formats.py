"""The one way sizes and times are written."""

from __future__ import annotations

import pytest

from alltoken_mcp.formats import age, byte_size, utc_iso


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1024.0 KiB"),
        (1024 * 1024, "1.0 MiB"),
        (25 * 1024 * 1024, "25.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (5000 * 1024**3, "5000.0 GiB"),
    ],
)
def test_sizes_are_binary_with_one_decimal_and_gib_is_the_largest_unit(size: int, text: str) -> None:
    assert byte_size(size) == text


def test_times_are_utc_iso_to_the_second_with_a_z() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(1_796_187_254.9) == "2026-12-02T04:54:14Z"


@pytest.mark.parametrize(
    ("seconds_ago", "text"), [(0, "0 s"), (119, "119 s"), (120, "2 min"), (7199, "119 min"), (7200, "2 h")]
)
def test_an_age_is_said_in_one_unit(seconds_ago: int, text: str) -> None:
    assert age(1000.0 - seconds_ago, now=1000.0) == text
    assert age(2000.0, now=1000.0) == "0 s"  # a clock that stepped back is not a negative age
