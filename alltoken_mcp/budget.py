"""The time budget of a tool call, and how code inside it finishes early instead of being cut off.

Every tool call runs inside `call_budget(ALLTOKEN_MAX_WAIT_SECONDS)` (opened once, by `CallDeadline` in
`tools/deadline.py`). Its cancel scope fires `GRACE_SECONDS` after the budget: the backstop, which can
only say "out of time". Code that can say more reads `remaining()` and ends within the budget itself —
the client does not start a retry whose wait does not fit (the caller learns "rate limited, retry after
N s"), an attempt's timeout never runs past it, a chat stream is cut with the text received so far, a
media wait returns the job still running.

`remaining()` also honours any tighter cancel scope the caller opened. Outside a tool call (the job
poller, the CLI) it is infinite and nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import anyio
from anyio import CancelScope

GRACE_SECONDS = 1.0
"""Time between the budget the code aims at and the hard cancellation: room to build the answer."""

_deadline: ContextVar[float] = ContextVar("alltoken_call_deadline", default=math.inf)
"""When the current call's budget ends (anyio clock); child tasks inherit it."""


@contextmanager
def call_budget(seconds: float) -> Iterator[CancelScope]:
    """Run the block with `seconds` of budget; the returned scope is cancelled at budget + grace."""
    token = _deadline.set(anyio.current_time() + seconds)
    try:
        with anyio.move_on_after(seconds + GRACE_SECONDS) as scope:
            yield scope
    finally:
        _deadline.reset(token)


def remaining() -> float:
    """Seconds left in the current budget (or before a tighter enclosing deadline); `math.inf` outside
    any. Never negative."""
    deadline = min(_deadline.get(), anyio.current_effective_deadline())
    if math.isinf(deadline):
        return math.inf
    return max(0.0, deadline - anyio.current_time())
