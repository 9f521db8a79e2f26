"""The last step before anything leaves the server: one middleware around every MCP request.

It scrubs the configured secrets (see `redact.py`) from each result — tool text and structuredContent,
resource bodies, error results — and from the message and data of protocol errors (a failed
`resources/read` is one). Being the single exit, it covers texts built anywhere below it, including the
SDK's own error wrapping, without each tool having to remember. Binary resource bodies (`blob`, base64)
are passed through untouched.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from alltoken_mcp.redact import Redactor

_BINARY_KEYS = frozenset({"blob"})


class RedactingMiddleware:
    """`MCPServer.middleware` entry that redacts every outgoing result and protocol error."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        scrub = self._redactor.scrub
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            message = self._redactor.redact(exc.error.message)
            data = scrub(exc.error.data)
            if message == exc.error.message and data == exc.error.data:
                raise
            raise MCPError(code=exc.error.code, message=message, data=data) from None
        if isinstance(result, BaseModel):  # the SDK hands over wire dicts; a model only if one short-circuits
            result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        scrubbed: HandlerResult = scrub(result, keep=_BINARY_KEYS)
        return scrubbed
