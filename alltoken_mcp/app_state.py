"""The server's long-lived state, `AppState`, and `running_app`, which opens and closes it.

The MCP lifespan (server.py) enters `running_app` once per server process; tools reach the state with
`app_state(ctx)`. Everything that lives as long as the server lives here, on the state — the store, the
client, the job manager and its poller, the catalog, the spend ledger — and nowhere else: no module keeps a
cache of its own, so a rebuilt server starts clean and tests configure it by passing values in.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.mcpserver import Context

from alltoken_mcp.catalog import Catalog, CatalogTTL
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.job_records import JobRecord
from alltoken_mcp.jobs import JobManager
from alltoken_mcp.media_urls import MediaLinks
from alltoken_mcp.metrics import Metrics
from alltoken_mcp.notifier import ResourceNotifier
from alltoken_mcp.redact import MIN_SECRET_LENGTH, Redactor
from alltoken_mcp.settings import Settings
from alltoken_mcp.spend import SpendLedger
from alltoken_mcp.store import Store, open_store, process_owner

logger = logging.getLogger(__name__)


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
    catalog: Catalog
    """The model listings (one cached fetch) and what each video model accepts."""
    spend: SpendLedger
    """The ledger of paid calls: known spend today and this month (UTC), and the daily budget."""
    http: HttpServing | None = None
    """What serving HTTP adds; None over stdio."""

    @property
    def media_links(self) -> MediaLinks | None:
        """Signs download URLs for saved files; only when serving HTTP (a stdio host reads the paths)."""
        return self.http.media_links if self.http is not None else None

    @property
    def stateless(self) -> bool:
        """Serving `--http --stateless`: no MCP sessions, so a 2025-era client cannot be asked anything."""
        return self.http is not None and self.http.stateless


@dataclass
class HttpServing:
    """What `serve --http` adds: metrics, signed media URLs, and the running state for the plain HTTP
    endpoints beside /mcp (they serve no MCP request, so no MCP context hands it to them)."""

    media_links: MediaLinks
    metrics: Metrics | None = None
    stateless: bool = False
    """`--stateless`: every request stands alone (no MCP sessions)."""
    state: AppState | None = None
    """Set by `running_app` while the state is open."""


def app_state(ctx: Context[Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def job_uri(job_id: str) -> str:
    return f"alltoken://jobs/{job_id}"


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    notifier: ResourceNotifier,
    redactor: Redactor,
    catalog_ttl: CatalogTTL,
    http: HttpServing | None = None,
) -> AsyncIterator[AppState]:
    """Opens the store and one AllTokenClient, creates the job manager and the catalog, and runs the job
    poller until the block exits; then closes everything, also when it exits by cancellation. With `http`,
    upstream responses and lease takeovers are counted and the state is published on it."""
    metrics = http.metrics if http is not None else None
    if metrics is not None:
        metrics.watch_upstream(settings.base_url)
    owner = process_owner()  # host:pid:rand, so a restarted server can see this one died
    for name in redactor.skipped:
        logger.warning(
            "%s is shorter than %d characters: it is not redacted from output", name, MIN_SECRET_LENGTH
        )
    store = await open_store(settings, redactor=redactor)
    # Everything allocated so far lives for the whole process: take it out of the cyclic GC's
    # view, so full collections stay short and do not stall the event loop (measured: 50–60 ms).
    # No gc.collect() first: it would cost ~40 ms before `initialize` can be answered. The CLI
    # disables the collector during start-up; from here on it runs, over the new objects only.
    gc.freeze()
    gc.enable()
    try:
        async with AllTokenClient(
            base_url=settings.base_url,
            api_key=settings.api_key,
            key_problem=settings.key_problem,
            on_response=metrics.on_upstream_response if metrics is not None else None,
        ) as client:

            async def on_job_change(job: JobRecord) -> None:
                await notifier.updated(job_uri(job.job_id))
                await notifier.updated("alltoken://jobs")

            spend = SpendLedger(store=store, client=client, settings=settings)
            jobs = JobManager(
                store=store,
                client=client,
                settings=settings,
                owner=owner,
                on_change=on_job_change,
                spend=spend,
                on_takeover=metrics.took_over if metrics is not None else None,
            )
            catalog = Catalog(store, client, ttl=catalog_ttl)
            async with anyio.create_task_group() as tg:
                tg.start_soon(jobs.run)
                state = AppState(settings, client, store, jobs, notifier, redactor, catalog, spend, http)
                if http is not None:
                    http.state = state
                try:
                    yield state
                finally:
                    if http is not None:
                        http.state = None
                    # Without this the poller keeps the process alive after stdin closes.
                    tg.cancel_scope.cancel()
    finally:
        # Shielded: on SIGTERM the lifespan unwinds by cancellation, and the store must still close.
        with anyio.CancelScope(shield=True):
            await store.close()
