"""When to retry a request and how long to wait first: small pure functions plus `RetryPolicy`.

The rules (docs/architecture.md, "Retries"):

- a connect error (or a pool timeout) means nothing reached AllToken, so it is always retried;
- a read error / dropped connection after the request went out may mean AllToken processed it, so it
  is retried only for replay-safe requests: GETs, and job-creating POSTs that carry an Idempotency-Key;
- 408 and 429 mean the request was refused before processing, so they are always retried;
- 5xx is retried only for replay-safe requests (a chat POST that failed upstream may already be billed);
- the wait is the server's `retry-after-ms` / `Retry-After` when present (capped), else capped
  exponential backoff with full jitter (a uniform draw in [0, min(max_delay, base · 2^(attempt-1))]).
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime

import anyio
import httpx2

# Statuses that say "not processed, try again later" whatever the method.
ALWAYS_RETRYABLE_STATUSES = frozenset({408, 429})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value: integer or float seconds, or an HTTP date.

    Returns None for a missing or unparseable value, 0.0 for a date in the past or a negative
    number. `now` (a POSIX timestamp) is injectable so date handling is testable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if math.isnan(seconds):
            return None
        return max(0.0, seconds) if math.isfinite(seconds) else (math.inf if seconds > 0 else 0.0)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; "-0000" parses as naive, meaning "UTC, source unknown".
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_after_from_headers(
    headers: Mapping[str, str] | httpx2.Headers, *, cap: float, now: float | None = None
) -> float | None:
    """The server's requested wait in seconds, capped at `cap`; `retry-after-ms` wins over `Retry-After`."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            ms = float(millis.strip())
        except ValueError:
            ms = math.nan
        if not math.isnan(ms):
            return min(cap, max(0.0, ms / 1000.0))
    seconds = parse_retry_after(headers.get("retry-after"), now=now)
    return None if seconds is None else min(cap, seconds)


def backoff_delay(attempt: int, *, base_delay: float, max_delay: float, random: Callable[[], float]) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1 = the first retry)."""
    exponent = min(max(attempt - 1, 0), 62)  # bounded so 2**exponent cannot overflow a float
    ceiling = min(max_delay, base_delay * (2.0**exponent))
    return max(0.0, ceiling * random())


def is_retryable_status(status_code: int, *, replay_safe: bool) -> bool:
    if status_code in ALWAYS_RETRYABLE_STATUSES:
        return True
    return replay_safe and status_code >= 500


def never_arrived(exc: BaseException) -> bool:
    """A failure that proves the request never reached the server (nothing was sent)."""
    return isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout))


def is_retryable_exception(exc: BaseException, *, replay_safe: bool) -> bool:
    """Whether a transport failure may be retried. Connect errors prove the request never arrived."""
    if never_arrived(exc):
        return True
    if isinstance(exc, (httpx2.ReadError, httpx2.ReadTimeout, httpx2.WriteError, httpx2.WriteTimeout)):
        return replay_safe
    if isinstance(exc, httpx2.RemoteProtocolError):
        return replay_safe
    return False


RETRY_AFTER_SPREAD = 0.2
"""A server-given wait is stretched by up to this fraction, at random."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts and how long to wait between them. `sleep` and `random` are injectable."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not (value >= 0) or math.isinf(value):
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt`: the server's hint (capped) and up to a fifth more,
        or jittered backoff. Never less than the hint: the spread only keeps the many calls one 429 told
        the same thing (a rate-limited key's jobs) from all coming back in the same instant."""
        if retry_after is not None:
            hint = min(max(0.0, retry_after), self.max_retry_after)
            return hint * (1 + RETRY_AFTER_SPREAD * self.random())
        return backoff_delay(
            attempt, base_delay=self.base_delay, max_delay=self.max_delay, random=self.random
        )

    def retry_after(self, headers: Mapping[str, str] | httpx2.Headers) -> float | None:
        return retry_after_from_headers(headers, cap=self.max_retry_after)
