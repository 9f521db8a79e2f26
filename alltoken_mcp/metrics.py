"""Prometheus metrics for the HTTP server (`/metrics`): tool calls, upstream requests, jobs, leases.

Only `serve --http` creates a `Metrics` (one per server, with a registry of its own: no process-global
state), and only then is `prometheus_client` imported, so a stdio start-up never pays for it.

    alltoken_mcp_tool_calls_total{tool, outcome}            counter; outcome: ok | error | failed | cancelled
    alltoken_mcp_tool_call_seconds{tool, outcome}           histogram of the same calls
    alltoken_mcp_upstream_requests_total{endpoint, method, status}
                                                            counter; endpoint is the route template
                                                            (/v1/videos/{id}), never an id; "download" for
                                                            a result fetched from storage
    alltoken_mcp_jobs{kind, status}                         gauge, read from the store at each scrape
    alltoken_mcp_jobs_due                                   gauge: active jobs due for a poll (the queue)
    alltoken_mcp_lease_takeovers_total                      counter: leases taken from a dead or late owner

Jobs are counted by reading the store when scraped rather than by counting transitions: every replica
then reports the same truth about the shared store (take one replica's series, or `max` over them, not
the sum), and jobs changed by other processes are counted too. Counters are per process: sum them.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx2
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 45, 90, 180, 600)
"""Seconds. Tool calls range from a cached listing (milliseconds) to a media wait (up to the wait cap)."""

_LITERAL_SEGMENTS = frozenset(
    {
        "v1",
        "chat",
        "completions",
        "models",
        "images",
        "generations",
        "async",
        "edits",
        "variations",
        "videos",
        "cancel",
        "uploads",
        "presign",
        "usage",
        "billing",
        "transactions",
        "api-account",
        "health",
        "summary",
        "routes",
    }
)
"""The words AllToken's paths are made of; any other segment is an id and becomes `{id}`."""
_SEGMENT = re.compile(r"[^/]+")


class JobCounts(Protocol):
    """What a scrape reads from the store (`Store` has both)."""

    async def job_counts(self) -> dict[tuple[str, str], int]: ...

    async def due_count(self, now: float) -> int: ...


def route_template(path: str) -> str:
    """`path` with every segment that is not one of AllToken's path words replaced by `{id}`: what may
    go into a label (a task id in a label would make one series per task)."""
    return _SEGMENT.sub(lambda m: m.group(0) if m.group(0) in _LITERAL_SEGMENTS else "{id}", path)


class Metrics:
    """The server's metrics and their registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.tool_calls = Counter(
            "alltoken_mcp_tool_calls", "MCP tool calls", ["tool", "outcome"], registry=registry
        )
        self.tool_seconds = Histogram(
            "alltoken_mcp_tool_call_seconds",
            "MCP tool call latency",
            ["tool", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            "alltoken_mcp_upstream_requests",
            "HTTP requests to AllToken (each attempt), by route template and status",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.jobs = Gauge("alltoken_mcp_jobs", "Jobs in the store", ["kind", "status"], registry=registry)
        self.jobs_due = Gauge("alltoken_mcp_jobs_due", "Active jobs due for a poll", registry=registry)
        self.lease_takeovers = Counter(
            "alltoken_mcp_lease_takeovers", "Job leases taken from a dead or late owner", registry=registry
        )
        self._api_origin = ""

    def watch_upstream(self, base_url: str) -> None:
        """Requests under `base_url`'s origin are labelled by route; others are result downloads."""
        scheme, _, rest = base_url.partition("://")
        self._api_origin = f"{scheme}://{rest.split('/', 1)[0]}"

    async def on_upstream_response(self, response: httpx2.Response) -> None:
        """An httpx2 response event hook (see `AllTokenClient(on_response=…)`)."""
        url = response.request.url
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        endpoint = route_template(url.path) if origin == self._api_origin else "download"
        self.upstream_requests.labels(endpoint, response.request.method, str(response.status_code)).inc()

    def took_over(self) -> None:
        self.lease_takeovers.inc()

    async def render(self, store: JobCounts) -> bytes:
        """The exposition text, with the job gauges read from `store` now."""
        from prometheus_client import generate_latest

        counts = await store.job_counts()
        due = await store.due_count(time.time())
        self.jobs.clear()  # a (kind, status) with no jobs left disappears rather than keeping its last value
        for (kind, status), count in counts.items():
            self.jobs.labels(kind, status).set(count)
        self.jobs_due.set(due)
        return generate_latest(self.registry)


class ToolCallMetrics:
    """Server middleware: counts each `tools/call` and times it, by tool and outcome."""

    def __init__(self, metrics: Metrics, tools: frozenset[str]) -> None:
        self._metrics = metrics
        self._tools = tools  # an unknown name is labelled "unknown": labels must not be caller-chosen

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = (ctx.params or {}).get("name")
        tool = name if isinstance(name, str) and name in self._tools else "unknown"
        outcome = "failed"
        started = time.perf_counter()
        try:
            result = await call_next(ctx)
            outcome = "error" if _is_error(result) else "ok"
            return result
        except BaseException as exc:
            outcome = "cancelled" if _is_cancellation(exc) else "failed"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.tool_calls.labels(tool, outcome).inc()
            self._metrics.tool_seconds.labels(tool, outcome).observe(elapsed)


def _is_error(result: object) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


def _is_cancellation(exc: BaseException) -> bool:
    import anyio

    return isinstance(exc, anyio.get_cancelled_exc_class())
