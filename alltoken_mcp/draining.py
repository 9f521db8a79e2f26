"""A graceful end for the HTTP server: the MCP requests in flight when SIGTERM arrives finish, or are
handed back with an answer that says what to do.

`Drain` is server middleware that keeps each MCP request in flight in a cancel scope. `http_listener`
calls `drain(seconds)` once the server stops accepting connections: it waits until nothing is in flight
or `seconds` pass, then cancels the tool calls still running. Each of those answers at once with an error
result saying the server is shutting down; a media job such a call started or waited on is in the store
and keeps running on any server sharing it (another replica, or this one after its restart), so the
model is told to call again. Listen streams (2026-era `subscriptions/listen`) are closed gracefully as
the drain starts (`close_on_drain`). Other requests still running are cancelled without an answer of
their own (they are quick; their streams end when the transport closes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as t
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

logger = logging.getLogger(__name__)

HANDED_BACK = (
    "{tool} was interrupted: this AllToken MCP server is shutting down (a restart or a scale-down). Nothing "
    "is lost: a media job keeps running and any server sharing the job store finishes it (list_jobs or "
    "job_status shows it). Call again in a moment; a chat reply was not completed and needs a new call."
)


class Drain:
    """Server middleware tracking the requests in flight, and `drain` to end them on shutdown."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._tool_calls: set[anyio.CancelScope] = set()
        self._idle: anyio.Event | None = None
        self._closers: list[Callable[[], None]] = []
        self.draining = False

    def close_on_drain(self, close: Callable[[], None]) -> None:
        """Have `close` called when the drain starts: it ends requests that last as long as the client
        wants (2026-era listen streams) with their final answer, so that they neither hold up the drain
        for its whole time nor end abruptly when the streams are cut."""
        self._closers.append(close)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification: nothing to wait for
            return await call_next(ctx)
        self._in_flight += 1
        try:
            if ctx.method != "tools/call":
                return await call_next(ctx)
            scope = anyio.CancelScope()
            self._tool_calls.add(scope)
            try:
                with scope:
                    return await call_next(ctx)
            finally:
                self._tool_calls.discard(scope)
            # Only `drain` cancels this scope; a client's cancellation cancels one around it, and goes on.
            tool = (ctx.params or {}).get("name")
            text = HANDED_BACK.format(tool=tool if isinstance(tool, str) else "The tool call")
            return t.CallToolResult(content=[t.TextContent(type="text", text=text)], is_error=True)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for the requests in flight, then hand back the tool calls still running."""
        self.draining = True
        for close in self._closers:
            close()
        if not self._in_flight:
            return
        logger.info("shutting down: waiting up to %g s for %d MCP request(s)", seconds, self._in_flight)
        self._idle = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._idle.wait()
        if self._tool_calls:
            logger.warning("shutting down: handing back %d tool call(s) still running", len(self._tool_calls))
            for scope in list(self._tool_calls):
                scope.cancel()
            with anyio.move_on_after(1):  # each answers as soon as its cancellation lands
                await self._idle.wait()
