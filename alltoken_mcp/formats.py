"""How this server writes sizes and times: one answer each, so every message and record agrees.

Sizes are binary (KiB = 1024 bytes), as the limits in settings are. Times in records are UTC ISO 8601
to the second with a `Z`, the form AllToken itself returns.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

_UNITS = ("KiB", "MiB", "GiB")


def byte_size(size: int) -> str:
    """`512 bytes`, `4.0 KiB`, `1.5 MiB`, `2.0 GiB` (GiB is the largest unit)."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in _UNITS[:-1]:
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"


def utc_iso(epoch: float) -> str:
    """`2026-12-02T04:54:14Z`."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def short_seconds(value: float) -> str:
    """A number of seconds as a caller would write it: `45`, `0.3`, `12.5` (to a tenth)."""
    return f"{round(value, 1):g}"


def age(epoch: float, *, now: float | None = None) -> str:
    """How long ago `epoch` was, in the one unit a reader wants: `45 s`, `12 min`, `5 h`."""
    seconds = max(0, int((time.time() if now is None else now) - epoch))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
