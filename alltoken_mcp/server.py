"""The MCP server: `MCPServer` construction, its lifespan, strict tool arguments and 2025-era
resource subscriptions.

`build_server(settings)` is all a transport needs. The lifespan enters `app_state.running_app` (the
store, one AllTokenClient, the job manager and its poller, the catalog) for as long as the server runs.
Tools and resources live in `alltoken_mcp.tools.*`; each module has a `register(server)` function and
reaches the lifespan state through `app_state(ctx)`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as t
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import ListenHandler
from pydantic import ValidationError

from alltoken_mcp import __version__
from alltoken_mcp.app_state import AppState, HttpServing, job_uri, running_app
from alltoken_mcp.catalog import CatalogTTL
from alltoken_mcp.draining import Drain
from alltoken_mcp.jobs import UnknownJobError
from alltoken_mcp.metrics import ToolCallMetrics
from alltoken_mcp.notifier import ResourceNotifier
from alltoken_mcp.outbound import RedactingMiddleware
from alltoken_mcp.people import current_person
from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import Settings
from alltoken_mcp.store import StoreError
from alltoken_mcp.tools import catalog, chat, media, spend
from alltoken_mcp.tools.arguments import invalid_arguments, make_strict
from alltoken_mcp.tools.deadline import CallDeadline
from alltoken_mcp.tools.schemas import compact_tool

INSTRUCTIONS = """\
AllToken is one gateway to many chat, image and video models: use it for a second opinion or a sub-task \
from another model family, and for the images and videos a project needs (saved as local files). \
alltoken_chat, alltoken_image and alltoken_video cost money; list_models shows the prices."""
"""Sent once, in `initialize`: what the server is for. Each tool's description says how to use it."""


def build_server(
    settings: Settings,
    *,
    catalog_ttl: CatalogTTL | None = None,
    http: HttpServing | None = None,
    drain: Drain | None = None,
) -> MCPServer[AppState]:
    """The configured server, ready for any transport. Touches neither the network nor the disk.
    `catalog_ttl` says how long the model catalog is served before it is fetched again. `http` and
    `drain` are what the HTTP transport adds (metrics and media URLs; a graceful shutdown)."""
    notifier = ResourceNotifier()
    redactor = Redactor.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with running_app(
            settings,
            notifier=notifier,
            redactor=redactor,
            catalog_ttl=catalog_ttl or CatalogTTL(),
            http=http,
        ) as state:
            yield state

    server: MCPServer[AppState] = _AllTokenServer(
        max_wait_seconds=settings.max_wait_seconds,
        name="alltoken",
        title="AllToken",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://alltoken.ai",
        lifespan=lifespan,
        subscriptions=notifier.bus,
        log_level="WARNING",
        middleware=[RedactingMiddleware(redactor)],
        request_state_security=_shared_request_state(settings),
    )
    _install_legacy_subscriptions(server, notifier, drain)
    server.middleware.append(CallDeadline(settings.max_wait_seconds))

    chat.register(server, settings)
    catalog.register(server)
    media.register(server, settings)
    spend.register(server)
    # Outermost first: the drain hands a call back with an answer the metrics then count.
    if drain is not None:
        server.middleware.insert(0, drain)
    if http is not None and http.metrics is not None:
        tools = frozenset(tool.name for tool in server._tool_manager.list_tools())
        server.middleware.insert(0, ToolCallMetrics(http.metrics, tools))
    return server


def _shared_request_state(settings: Settings) -> RequestStateSecurity | None:
    """The key that seals a 2026-era round trip's `requestState` (ALLTOKEN_CONFIRM's question), derived
    from the replicas' shared secret: behind round robin the answer comes back to any replica, and the
    SDK's default key is this process's own. None (no shared secret): the SDK's per-process key."""
    if settings.media_secret is None:
        return None
    key = hmac.new(settings.media_secret, b"alltoken-mcp request state", hashlib.sha256).digest()
    return RequestStateSecurity(keys=[key])


class _AllTokenServer(MCPServer[AppState]):
    """MCPServer with strict tool arguments, reported in one line.

    Every tool is made strict as it is registered (`arguments.make_strict`): unknown arguments are
    refused, and `wait_seconds` publishes this server's cap as its maximum. The SDK answers a call whose
    arguments fail the input schema with pydantic's multi-line dump; `call_tool` is where that failure is
    still a `ValidationError` rather than text, so it is reworded here. Everything else passes through.
    """

    def __init__(self, *, max_wait_seconds: float, **options: Any) -> None:
        self._max_wait_seconds = max_wait_seconds
        self._argument_schemas: dict[str, dict[str, Any]] = {}
        """Each tool's full input schema, every bound included: what invalid_arguments words errors from."""
        super().__init__(**options)

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: t.ToolAnnotations | None = None,
        icons: list[t.Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        super().add_tool(fn, name, title, description, annotations, icons, meta, structured_output)
        tool = self._tool_manager.get_tool(name or fn.__name__)
        assert tool is not None
        make_strict(tool, max_wait_seconds=self._max_wait_seconds)
        self._argument_schemas[tool.name] = tool.parameters
        compact_tool(tool)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> t.CallToolResult | t.InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            schema = self._argument_schemas.get(name)
            if (
                isinstance(exc, UnexpectedToolError)
                or not isinstance(cause, ValidationError)
                or schema is None
            ):
                raise
            # From the ValidationError, so the SDK still logs field names only (never the values).
            raise ToolError(invalid_arguments(name, schema, cause)) from cause


async def _may_follow(state: object, uri: str) -> bool:
    """Whether the caller may hear about `uri`: a job's updates go only to the person it belongs to."""
    prefix = job_uri("")
    person = current_person()
    if person is None or not uri.startswith(prefix) or not isinstance(state, AppState):
        return True
    try:
        await state.jobs.get(uri.removeprefix(prefix), person)
    except (UnknownJobError, StoreError):
        return False
    return True


def _install_legacy_subscriptions(
    server: MCPServer[AppState], notifier: ResourceNotifier, drain: Drain | None
) -> None:
    """Serve 2025-era `resources/subscribe` / `unsubscribe` (MCPServer answers -32601 by default)."""
    lowlevel = server._lowlevel_server

    async def subscribe(ctx: ServerRequestContext[Any], params: t.SubscribeRequestParams) -> t.EmptyResult:
        uri = str(params.uri)
        if await _may_follow(ctx.lifespan_context, uri):
            notifier.subscribe(uri, ctx.session)
        # Else accepted all the same, and nothing is ever sent: refusing would tell that the job exists.
        return t.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: t.UnsubscribeRequestParams
    ) -> t.EmptyResult:
        notifier.unsubscribe(str(params.uri), ctx.session)
        return t.EmptyResult()

    lowlevel.add_request_handler("resources/subscribe", t.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", t.UnsubscribeRequestParams, unsubscribe)

    # 2026-07-28 `subscriptions/listen`: the SDK's handler, given only the URIs the caller may follow. The
    # acknowledgement then leaves another person's job out exactly as it leaves out an id nobody has.
    listen = lowlevel.get_request_handler("subscriptions/listen")
    if listen is not None:
        inner = listen.handler
        if drain is not None and isinstance(inner, ListenHandler):
            drain.close_on_drain(inner.close)  # a shutdown ends each stream with its final answer

        async def listen_to_own(
            ctx: ServerRequestContext[Any], params: t.SubscriptionsListenRequestParams
        ) -> Any:
            wanted = params.notifications.resource_subscriptions
            if wanted:
                kept = [uri for uri in wanted if await _may_follow(ctx.lifespan_context, uri)]
                notifications = params.notifications.model_copy(update={"resource_subscriptions": kept})
                params = params.model_copy(update={"notifications": notifications})
            return await inner(ctx, params)

        lowlevel.add_request_handler(
            "subscriptions/listen", t.SubscriptionsListenRequestParams, listen_to_own
        )
