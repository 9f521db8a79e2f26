"""Static resources whose body comes from the app state (`alltoken://models`, `alltoken://jobs`, ...).

MCPServer injects a `Context` into tools and *template* resources only; a static resource such as
`alltoken://models` gets no way to reach the lifespan state. `add_state_resource` closes that gap: a
small middleware remembers the current request's lifespan state in a context variable for the
duration of each `resources/read`, and the resource reads it from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resources import Resource
from pydantic import ConfigDict, Field

from alltoken_mcp.app_state import AppState
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.store import StoreError
from alltoken_mcp.tools.error_text import describe
from alltoken_mcp.tools.results import JSON_MIME

_current_state: ContextVar[AppState | None] = ContextVar("alltoken_app_state", default=None)


class _StateMiddleware:
    """Publishes the lifespan state of the request being served in `_current_state`."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        state = ctx.lifespan_context
        token = _current_state.set(state if isinstance(state, AppState) else None)
        try:
            return await call_next(ctx)
        finally:
            _current_state.reset(token)


def _install_middleware(server: MCPServer[AppState]) -> None:
    middleware = server.middleware
    if not any(isinstance(m, _StateMiddleware) for m in middleware):
        middleware.append(_StateMiddleware())


class StateResource(Resource):
    """A static resource whose body is computed from the app state when it is read."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reader: Callable[[AppState], Awaitable[str]] = Field(exclude=True)

    async def read(self) -> str:
        state = _current_state.get()
        if state is None:
            raise ResourceError(f"{self.uri} can only be read while the server is running")
        try:
            return await self.reader(state)
        except AllTokenError as exc:
            raise ResourceError(describe(exc)) from exc
        except StoreError as exc:
            raise ResourceError(str(exc)) from exc


def add_state_resource(
    server: MCPServer[AppState],
    uri: str,
    reader: Callable[[AppState], Awaitable[str]],
    *,
    name: str,
    title: str,
    description: str,
    mime_type: str = JSON_MIME,
) -> None:
    _install_middleware(server)
    server.add_resource(
        StateResource(
            uri=uri, name=name, title=title, description=description, mime_type=mime_type, reader=reader
        )
    )
