"""The team server with MCP sessions: three `alltoken-mcp serve --http` replicas (no --stateless) sharing
one PostgreSQL store and one output directory, behind a real nginx with the documented sticky
configuration (docs/nginx-sticky.conf through tests/nginxkit.py), the simulator for AllToken.

A 2025-era session lives on the replica that took its `initialize`: the answer to ALLTOKEN_CONFIRM's
question (a server-to-client request) and the `resources/updated` notification of a subscription reach
the client only if every request of the session goes back to that replica, which is what the sticky
file's `hash $remote_addr consistent;` does. Without that line nginx balances round robin, and the same
session breaks on its second request (the last test shows it).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as t
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client

from alltoken_mcp.settings import DATABASE_URL_VAR, MEDIA_SECRET_VAR, PUBLIC_URL_VAR
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests import nginxkit
from tests.serverkit import data
from tests.test_http import INITIALIZE, MCP_HEADERS, TOKEN, free_port, http_server_process, server_env
from tests.test_jobs_crash import IMAGE_CREATE
from tests.test_lb_http import port_of

IMAGE_POLL = "/v1/images/generations/{task_id}"
STICKY = "hash $remote_addr consistent;"
SECRET = "s" * 40
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.02)


@asynccontextmanager
async def sticky_team(
    home: Path, sim: RunningSimulator, database_url: str, binary: Path, without: str | None = None
) -> AsyncIterator[nginxkit.RunningNginx]:
    """Three session-keeping replicas, a home each, with ALLTOKEN_CONFIRM=media; nginx in front with the
    documented sticky configuration, less the line `without` when given."""
    listen = free_port()
    shared = {
        DATABASE_URL_VAR: database_url,
        MEDIA_SECRET_VAR: SECRET,
        PUBLIC_URL_VAR: f"http://127.0.0.1:{listen}",
        "ALLTOKEN_MCP_TOKEN": TOKEN,
        "ALLTOKEN_OUTPUT_DIR": str(home / "out"),
        "ALLTOKEN_CONFIRM": "media",
    }

    def leave_out(site: str) -> str:
        assert without is not None
        assert site.count(without) == 1, f"the rendered configuration has no single {without!r}"
        return site.replace(without, "")

    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                http_server_process(server_env(home / f"replica{i}", sim.base_url, **shared))
            )
            for i in range(3)
        ]
        ports = [port_of(r) for r in replicas]
        edit = leave_out if without is not None else None
        yield stack.enter_context(nginxkit.running_nginx(nginxkit.STICKY_CONF, ports, binary, listen, edit))


@asynccontextmanager
async def session(url: str, on_message: Any, on_question: Any) -> AsyncIterator[Client]:
    """A 2025-era client (initialize, then Mcp-Session-Id on every request) that answers questions."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    transport = streamable_http_client(url, http_client=http)
    async with (
        http,
        Client(
            transport, mode="legacy", message_handler=on_message, elicitation_callback=on_question
        ) as client,  # type: ignore[arg-type]
    ):
        yield client


async def test_a_2025_session_through_the_sticky_nginx_is_asked_once_and_told_when_its_job_completes(
    sim: RunningSimulator, tmp_path: Path, postgres_url: str, nginx_binary: Path
) -> None:
    asked: list[t.ElicitRequestParams] = []
    updates: list[str] = []
    told = anyio.Event()

    async def accept(context: ClientRequestContext, params: t.ElicitRequestParams) -> t.ElicitResult:
        asked.append(params)
        return t.ElicitResult(action="accept", content={})

    async def on_message(message: Any) -> None:
        nonlocal told
        if isinstance(message, t.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            told.set()

    with anyio.fail_after(20):
        async with (
            sticky_team(tmp_path, sim, postgres_url, nginx_binary) as nginx,
            session(f"{nginx.url}/mcp", on_message, accept) as client,
        ):
            # AllToken says "unavailable" to every status check until the subscription is in place,
            # so the job cannot complete before there is someone to tell.
            sim.state.add_fault(path=IMAGE_POLL, method="GET", status=503, count=None)
            job = data(await client.call_tool("alltoken_image", {"prompt": "a red fox", "wait_seconds": 0}))
            uri = f"alltoken://jobs/{job['job_id']}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # resources/subscribe is deprecated in the 2026 era only
                await client.subscribe_resource(uri)
            told = anyio.Event()
            sim.state.faults.clear()
            while True:
                await told.wait()
                told = anyio.Event()
                record = data(await client.call_tool("job_status", {"job_id": job["job_id"]}))
                if record["status"] == "completed":
                    break
            [link] = record["download_urls"]
            async with httpx2.AsyncClient(timeout=10) as http:
                download = await http.get(link)
            log = nginx.log()

    # The question went to the client and its answer came back to the replica that asked: one image
    # job sent, once.
    [question] = asked
    assert "image(s) with" in question.message
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] == 1
    assert uri in updates
    # Every request of the session (initialize, the answer, the subscription, the event stream, the
    # calls) reached one replica; the media download may go to any.
    session_replicas = {address for request, address in log if " /mcp " in request}
    assert len(session_replicas) == 1, log
    assert sum(" /mcp " in request for request, _ in log) >= 6
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == record["files"][0]["sha256"]


async def test_without_the_sticky_line_a_sessions_requests_reach_replicas_that_answer_404(
    sim: RunningSimulator, tmp_path: Path, postgres_url: str, nginx_binary: Path
) -> None:
    """The control: the documented file less its `hash` line balances round robin, and a session's
    requests go to replicas that never saw its initialize."""
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    with anyio.fail_after(20):
        async with (
            sticky_team(tmp_path, sim, postgres_url, nginx_binary, without=STICKY) as nginx,
            httpx2.AsyncClient(timeout=10) as http,
        ):
            opened = await http.post(f"{nginx.url}/mcp", json=INITIALIZE, headers=auth)
            in_session = {**auth, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
            statuses = [
                (await http.post(f"{nginx.url}/mcp", json=LIST_TOOLS, headers=in_session)).status_code
                for _ in range(3)
            ]
            log = nginx.log()
    assert opened.status_code == 200
    assert 404 in statuses, statuses
    home = next(upstream for request, upstream in log if request == "POST /mcp 200")  # the initialize
    assert all(upstream != home for request, upstream in log if request == "POST /mcp 404"), log
