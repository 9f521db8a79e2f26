"""The MCP server: `MCPServer` construction, the lifespan that owns long-lived resources, and the
resource-update fan-out for both protocol eras.

`build_server(settings)` is all a transport needs. The lifespan opens one AllTokenClient, the SQLite
store and the job manager, and runs the job poller in a task group that is cancelled on shutdown.
Tools and resources live in `alltoken_mcp.tools.*`; each module has a `register(server)` function and
reaches the lifespan state through `app_state(ctx)`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from pydantic import ValidationError

from alltoken_mcp import __version__
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.job_records import JobRecord
from alltoken_mcp.jobs import JobManager
from alltoken_mcp.outbound import RedactingMiddleware
from alltoken_mcp.redact import MIN_SECRET_LENGTH, Redactor
from alltoken_mcp.settings import Settings
from alltoken_mcp.store import Store, process_owner
from alltoken_mcp.tools.arguments import invalid_arguments, make_strict

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
Delegate work to AllToken, a gateway in front of dozens of chat, image and video models.
- alltoken_chat: one chat turn with any model (a second opinion, a cheap sub-task); pass the returned
  conversation_id to continue a thread.
- alltoken_image: generate images; files are saved locally and their paths returned.
- alltoken_video: start a video render (minutes). It returns a job at once: check it later with
  job_status(job_id, wait_seconds=...), cancel it with job_cancel. Jobs survive server restarts.
- list_models / route_health: what exists, what it costs, what it accepts, which routes are healthy.
Generated files are never inlined: results carry absolute paths and alltoken://media/... links.
"""


@dataclass
class ResourceNotifier:
    """Sends `notifications/resources/updated` for a URI to every subscriber, in both protocol eras.

    2026-07-28 clients listen through the SDK's subscription bus; 2025-era clients call
    `resources/subscribe`, which MCPServer does not serve, so their sessions are tracked here.
    Sessions are held strongly (the request context's session object is not kept alive by anything
    else, so a weak reference would vanish at once); a closed connection is dropped at the first
    failed send.
    """

    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    _legacy: dict[str, set[ServerSession]] = field(default_factory=dict)

    def subscribe(self, uri: str, session: ServerSession) -> None:
        self._legacy.setdefault(uri, set()).add(session)

    def unsubscribe(self, uri: str, session: ServerSession) -> None:
        sessions = self._legacy.get(uri)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._legacy[uri]

    def subscriber_count(self, uri: str) -> int:
        return len(self._legacy.get(uri, ()))

    async def updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self._legacy.get(uri, ())):
            try:
                await session.send_resource_updated(uri)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.unsubscribe(uri, session)


@dataclass
class AppState:
    """Everything a tool needs, created once per server process by the lifespan."""

    settings: Settings
    client: AllTokenClient
    store: Store
    jobs: JobManager
    notifier: ResourceNotifier
    redactor: Redactor
    """Removes the configured secrets from text; applied to every result, log line and stored error."""


def app_state(ctx: Context[Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def job_uri(job_id: str) -> str:
    return f"alltoken://jobs/{job_id}"


def build_server(settings: Settings) -> MCPServer[AppState]:
    """The configured server, ready for any transport. Touches neither the network nor the disk."""
    notifier = ResourceNotifier()
    redactor = Redactor.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        owner = process_owner()  # host:pid:rand, so a restarted server can see this one died
        for name in redactor.skipped:
            logger.warning(
                "%s is shorter than %d characters: it is not redacted from output", name, MIN_SECRET_LENGTH
            )
        store = await Store.open(settings.database_path, redactor=redactor)
        # Everything allocated so far lives for the whole process: take it out of the cyclic GC's
        # view, so full collections stay short and do not stall the event loop (measured: 50–60 ms).
        # No gc.collect() first: it would cost ~40 ms before `initialize` can be answered. The CLI
        # disables the collector during start-up; from here on it runs, over the new objects only.
        gc.freeze()
        gc.enable()
        try:
            async with AllTokenClient(
                base_url=settings.base_url, api_key=settings.api_key, key_problem=settings.key_problem
            ) as client:

                async def on_job_change(job: JobRecord) -> None:
                    await notifier.updated(job_uri(job.job_id))
                    await notifier.updated("alltoken://jobs")

                jobs = JobManager(
                    store=store, client=client, settings=settings, owner=owner, on_change=on_job_change
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(jobs.run)
                    try:
                        yield AppState(settings, client, store, jobs, notifier, redactor)
                    finally:
                        # Without this the poller keeps the process alive after stdin closes.
                        tg.cancel_scope.cancel()
        finally:
            # Shielded: on SIGTERM the lifespan unwinds by cancellation, and the store must still close.
            with anyio.CancelScope(shield=True):
                await store.close()

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
    )
    _install_legacy_subscriptions(server, notifier)

    from alltoken_mcp.tools import catalog, chat, media
    from alltoken_mcp.tools.deadline import CallDeadline

    server.middleware.append(CallDeadline(settings.max_wait_seconds))

    chat.register(server)
    catalog.register(server)
    media.register(server, max_wait_seconds=settings.max_wait_seconds)
    return server


class _AllTokenServer(MCPServer[AppState]):
    """MCPServer with strict tool arguments, reported in one line.

    Every tool is made strict as it is registered (`arguments.make_strict`): unknown arguments are
    refused, and `wait_seconds` publishes this server's cap as its maximum. The SDK answers a call whose
    arguments fail the input schema with pydantic's multi-line dump; `call_tool` is where that failure is
    still a `ValidationError` rather than text, so it is reworded here. Everything else passes through.
    """

    def __init__(self, *, max_wait_seconds: float, **options: Any) -> None:
        self._max_wait_seconds = max_wait_seconds
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

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> t.CallToolResult | t.InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            tool = self._tool_manager.get_tool(name)
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError) or tool is None:
                raise
            # From the ValidationError, so the SDK still logs field names only (never the values).
            raise ToolError(invalid_arguments(name, tool.parameters, cause)) from cause


def _install_legacy_subscriptions(server: MCPServer[AppState], notifier: ResourceNotifier) -> None:
    """Serve 2025-era `resources/subscribe` / `unsubscribe` (MCPServer answers -32601 by default)."""
    lowlevel = server._lowlevel_server

    async def subscribe(ctx: ServerRequestContext[Any], params: t.SubscribeRequestParams) -> t.EmptyResult:
        notifier.subscribe(str(params.uri), ctx.session)
        return t.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: t.UnsubscribeRequestParams
    ) -> t.EmptyResult:
        notifier.unsubscribe(str(params.uri), ctx.session)
        return t.EmptyResult()

    lowlevel.add_request_handler("resources/subscribe", t.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", t.UnsubscribeRequestParams, unsubscribe)
