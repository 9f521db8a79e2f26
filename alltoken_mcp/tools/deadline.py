"""Every tool call ends inside its time budget: the one place the budget's cancel scope is opened.

The budget is `ALLTOKEN_MAX_WAIT_SECONDS` (hosts give up on calls after a while: Codex at 60 s). The
code inside aims at the budget itself and ends early with a precise answer (`alltoken_mcp.budget`);
the backstop, `budget.GRACE_SECONDS` later, catches anything that did not, and turns the cut into an
error the calling model can act on instead of a call the host abandons.
"""

from __future__ import annotations

from typing import Any

import mcp_types as t
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from alltoken_mcp.budget import call_budget


class CallDeadline:
    """Server middleware: runs each `tools/call` inside `call_budget(seconds)`."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        with call_budget(self._seconds):
            return await call_next(ctx)
        name = (ctx.params or {}).get("name", "the tool")
        text = (
            f"{name} did not finish within {self._seconds:g} s (ALLTOKEN_MAX_WAIT_SECONDS) and was stopped. "
            "A media job it started keeps running in the background: list_jobs shows it. Retry later, or "
            "raise ALLTOKEN_MAX_WAIT_SECONDS if your host allows longer calls."
        )
        return t.CallToolResult(content=[t.TextContent(type="text", text=text)], is_error=True)
