"""The retry policy's pure parts: Retry-After parsing, full-jitter backoff, and what is retryable."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx2
import pytest

from alltoken_mcp.client._retry import (
    RetryPolicy,
    backoff_delay,
    is_retryable_exception,
    is_retryable_status,
    parse_retry_after,
    retry_after_from_headers,
)

NOW = 1_800_000_000.0  # a fixed "current time" for HTTP-date cases


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, tz=timezone.utc), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (http_date(30), 30.0),
        (http_date(-3600), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        (None, None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_an_infinite_retry_after_is_reported_as_infinite_so_callers_cap_it() -> None:
    assert parse_retry_after("1e999", now=NOW) == math.inf


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": "86400"}, 60.0),
        ({"retry-after": "1e999"}, 60.0),
        ({"retry-after": http_date(7200)}, 60.0),
        ({"retry-after": http_date(10)}, 10.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "junk"}, None),
        ({}, None),
    ],
)
def test_header_wait_prefers_milliseconds_and_is_capped(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after_from_headers(httpx2.Headers(headers), cap=60.0, now=NOW) == expected


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    top = [backoff_delay(n, base_delay=0.5, max_delay=8.0, random=lambda: 1.0) for n in range(1, 8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff_delay(3, base_delay=0.5, max_delay=8.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(3, base_delay=0.5, max_delay=8.0, random=lambda: 0.25) == 0.5


def test_backoff_does_not_overflow_for_very_late_attempts() -> None:
    assert backoff_delay(10_000, base_delay=0.5, max_delay=8.0, random=lambda: 1.0) == 8.0


def test_policy_uses_the_server_hint_capped_and_spread_by_up_to_a_fifth_and_otherwise_its_random() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, max_retry_after=30.0, random=lambda: 0.5)
    assert policy.delay(1, retry_after=3.0) == pytest.approx(3.3)
    assert policy.delay(1, retry_after=900.0) == pytest.approx(33.0)
    assert RetryPolicy(random=lambda: 0.0).delay(1, retry_after=3.0) == 3.0  # never less than asked
    assert policy.delay(1) == 0.5
    assert policy.delay(3) == 2.0


def test_policy_rejects_nonsense_settings_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(max_delay=-1.0)


@pytest.mark.parametrize(
    ("status", "replay_safe", "expected"),
    [
        (408, False, True),
        (429, False, True),
        (500, True, True),
        (503, True, True),
        (500, False, False),
        (502, False, False),
        (400, True, False),
        (401, True, False),
        (404, True, False),
        (409, True, False),
        (410, True, False),
    ],
)
def test_statuses_retried_depend_on_replay_safety(status: int, replay_safe: bool, expected: bool) -> None:
    assert is_retryable_status(status, replay_safe=replay_safe) is expected


@pytest.mark.parametrize(
    ("exc", "replay_safe", "expected"),
    [
        (httpx2.ConnectError("refused"), False, True),
        (httpx2.ConnectTimeout("slow"), False, True),
        (httpx2.PoolTimeout("busy"), False, True),
        (httpx2.ReadError("reset"), True, True),
        (httpx2.ReadError("reset"), False, False),
        (httpx2.RemoteProtocolError("dropped"), True, True),
        (httpx2.RemoteProtocolError("dropped"), False, False),
        (httpx2.ReadTimeout("slow"), False, False),
        (httpx2.UnsupportedProtocol("ftp"), True, False),
    ],
)
def test_transport_failures_after_sending_are_retried_only_when_replay_safe(
    exc: Exception, replay_safe: bool, expected: bool
) -> None:
    assert is_retryable_exception(exc, replay_safe=replay_safe) is expected


def test_a_failed_job_step_waits_the_servers_hint_or_a_jittered_doubling_capped_at_a_minute() -> None:
    from alltoken_mcp import jobs
    from alltoken_mcp.errors import RateLimitError

    limited = RateLimitError("slow down", status_code=429, retry_after=7.0)
    hinted = [jobs._backoff(0, limited) for _ in range(200)]
    assert all(7.0 <= wait <= 8.4 for wait in hinted)
    assert len(set(hinted)) > 100  # one 429's jobs do not all come back in the same instant either
    assert 60.0 <= jobs._backoff(0, RateLimitError("x", status_code=429, retry_after=3600.0)) <= 72.0
    assert all(jobs._backoff(0) == 1.0 for _ in range(50))  # never a tight loop, even on a low draw
    waits = [jobs._backoff(3) for _ in range(200)]
    assert all(1.0 <= wait <= 8.0 for wait in waits)
    assert len(set(waits)) > 100  # jittered: an outage's jobs do not all come back in the same second
    assert max(jobs._backoff(40) for _ in range(200)) <= 60.0
