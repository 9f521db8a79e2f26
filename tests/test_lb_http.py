"""The HTTP server as replicas behind a load balancer run it, over real loopback sockets: installed
`alltoken-mcp serve --http` processes on one shared home, the simulator for AllToken.

A round-robin balancer is played by the client's transport (each request to the next replica): with
`--stateless` both protocol eras work across replicas; without it a 2025-era session does not. `/healthz`
and `/readyz` answer without the token; `/metrics` counts exactly the calls made; a signed `/media` URL
from one replica's answer is served by another, and anything altered in it is a bare 403; a call in
flight at SIGTERM completes."""

from __future__ import annotations

import itertools
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from alltoken_mcp.media_urls import MediaLinks
from alltoken_mcp.settings import key_fingerprint
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig
from alltoken_mcp.store import SCHEMA_VERSION, SqliteStore
from tests.serverkit import data, text_of
from tests.test_http import INITIALIZE, TOKEN, RunningHTTPServer, http_server_process, server_env
from tests.test_jobs_crash import until
from tests.test_store import make_job

SECRET = "m" * 40
EXIT_SECONDS = 15
"""A clean shutdown with nothing left to wait for takes a few seconds; the tests' grace is 60 s."""


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01)


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each request to the next of `ports` on 127.0.0.1, as nginx's round robin would."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=next(self._ports))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def replicas(
    env: dict[str, str], count: int, args: Sequence[str] = ()
) -> AsyncIterator[list[RunningHTTPServer]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(http_server_process(env, extra_args=args)) for _ in range(count)
        ]


def port_of(server: RunningHTTPServer) -> int:
    return httpx2.URL(server.url).port or 80


def origin(server: RunningHTTPServer) -> str:
    return server.url.removesuffix("/mcp")


@asynccontextmanager
async def balanced(servers: Sequence[RunningHTTPServer], mode: str) -> AsyncIterator[Client]:
    transport = RoundRobin([port_of(s) for s in servers])
    http = httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(30, read=120))
    async with http, Client(streamable_http_client(servers[0].url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) → value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(http: httpx2.AsyncClient, server: RunningHTTPServer, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.get(f"{origin(server)}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def tool_calls(metrics: str, tool: str, outcome: str) -> float:
    key = ("alltoken_mcp_tool_calls_total", (("outcome", outcome), ("tool", tool)))
    return samples(metrics).get(key, 0.0)


# ------------------------------------------------------------------------------------- balancing


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stateless_replicas_serve_one_client_request_by_request_in_both_eras(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(60):
        async with replicas(env, 2, ["--stateless"]) as servers:
            async with balanced(servers, mode) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                answers = [
                    data(await client.call_tool("alltoken_chat", {"prompt": f"turn {i}"})) for i in range(4)
                ]
            async with httpx2.AsyncClient(timeout=10) as http:
                per_replica = [tool_calls(await scrape(http, s), "alltoken_chat", "ok") for s in servers]
    assert "alltoken_chat" in tools
    assert [a["text"] for a in answers] == [f"Echo: turn {i}" for i in range(4)]
    assert per_replica[0] >= 1
    assert per_replica[1] >= 1
    assert sum(per_replica) == 4


async def test_without_stateless_a_2025_session_does_not_survive_round_robin(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(60):
        async with replicas(env, 2) as servers:

            async def two_requests() -> None:
                async with balanced(servers, "legacy") as client:
                    await client.list_tools()
                    await client.call_tool("alltoken_chat", {"prompt": "x"})

            with pytest.raises(Exception):  # noqa: B017, PT011 (the SDK's error for "Session not found")
                await two_requests()


async def test_a_stateless_server_answers_without_a_session(sim: RunningSimulator, tmp_path: Path) -> None:
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(40):
        async with (
            http_server_process(env, extra_args=["--stateless"]) as stateless,
            http_server_process(env) as stateful,
            httpx2.AsyncClient(timeout=10) as http,
        ):
            opened = await http.post(stateless.url, json=INITIALIZE, headers=headers)
            alone = await http.post(stateless.url, json=listing, headers=headers)
            refused = await http.post(stateful.url, json=listing, headers=headers)
    assert opened.status_code == 200
    assert "mcp-session-id" not in opened.headers
    assert alone.status_code == 200
    assert '"alltoken_chat"' in alone.text
    assert refused.status_code == 400  # a stateful server wants the session initialize opens


# ------------------------------------------------------------------------------------- health


async def test_health_and_readiness_answer_without_the_token_and_say_nothing_more(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKEN=TOKEN)
    with anyio.fail_after(40):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=10) as http:
            base = origin(server)
            healthz = await http.get(f"{base}/healthz")
            readyz = await http.get(f"{base}/readyz")
            mcp = await http.post(server.url, json={})
            metrics_without = await http.get(f"{base}/metrics")
            metrics_with = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            with closing(sqlite3.connect(tmp_path / "state.sqlite3")) as db:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
                db.commit()
                unready = await http.get(f"{base}/readyz")
                still_alive = await http.get(f"{base}/healthz")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.commit()
            ready_again = await http.get(f"{base}/readyz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})
    assert mcp.status_code == 401
    assert metrics_without.status_code == 401
    assert metrics_with.status_code == 200
    assert (unready.status_code, unready.json()) == (503, {"status": "store unavailable"})
    assert still_alive.status_code == 200
    assert ready_again.status_code == 200
    assert f"schema version {SCHEMA_VERSION + 1}, not {SCHEMA_VERSION}" in "\n".join(
        server.stderr
    )  # the reason is logged


# ------------------------------------------------------------------------------------- metrics


async def test_metrics_count_exactly_the_calls_made(sim: RunningSimulator, tmp_path: Path) -> None:
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(60):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=30) as http:
            before = samples(await scrape(http, server))
            async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
                await client.call_tool("alltoken_chat", {"prompt": "one"})
                await client.call_tool("alltoken_chat", {"prompt": "two"})
                refused = await client.call_tool("job_status", {"job_id": "job_0000000000000000"})
                image = data(
                    await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30})
                )
            after = samples(await scrape(http, server))
    assert refused.is_error
    assert image["status"] == "completed"

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("alltoken_mcp_tool_calls_total", tool="alltoken_chat", outcome="ok") == 2
    assert moved("alltoken_mcp_tool_call_seconds_count", tool="alltoken_chat", outcome="ok") == 2
    assert moved("alltoken_mcp_tool_calls_total", tool="job_status", outcome="error") == 1
    assert moved("alltoken_mcp_tool_calls_total", tool="alltoken_image", outcome="ok") == 1
    chats = sim.state.requests["POST /v1/chat/completions"]
    assert (
        moved(
            "alltoken_mcp_upstream_requests_total",
            endpoint="/v1/chat/completions",
            method="POST",
            status="200",
        )
        == chats
        == 2
    )
    polls = sim.state.requests["GET /v1/images/generations/{task_id}"]
    assert polls >= 1
    assert (
        sum(
            value - before.get(key, 0.0)
            for key, value in after.items()
            if key[0] == "alltoken_mcp_upstream_requests_total"
            and ("endpoint", "/v1/images/generations/{id}") in key[1]
        )
        == polls
    )
    assert after[("alltoken_mcp_jobs", (("kind", "image"), ("status", "completed")))] == 1
    assert after[("alltoken_mcp_jobs_due", ())] == 0
    assert after[("alltoken_mcp_lease_takeovers_total", ())] == 0
    labels = {value for _, pairs in after for _, value in pairs}
    assert not any(re.search(r"igen_|job_[0-9a-f]{16}", v) for v in labels)  # no ids in labels


async def test_the_job_gauges_follow_the_store_and_a_made_up_tool_name_is_not_a_label(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The gauges are read from the store at each scrape (another process's jobs included; a series
    whose jobs are gone disappears), and the tool label is never what a caller made up."""
    env = server_env(tmp_path, sim.base_url)
    elsewhere = make_job(status="processing", next_poll_at=1.0, upstream_url="http://elsewhere.invalid/v1")
    with anyio.fail_after(60):
        async with (
            http_server_process(env, extra_args=["--stateless"]) as server,
            httpx2.AsyncClient(timeout=30) as http,
        ):
            store = await SqliteStore.open(tmp_path / "state.sqlite3")  # another process on the same file
            try:
                await store.insert_job(elsewhere)  # another upstream's: this server never polls it
                while_active = samples(await scrape(http, server))
                await store.update_job(elsewhere.job_id, status="completed")
                once_done = samples(await scrape(http, server))
            finally:
                await store.close()
            made_up = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "made_up_tool_name", "arguments": {}},
            }
            headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
            refused = await http.post(server.url, json=made_up, headers=headers)
            after_call = await scrape(http, server)
    processing = ("alltoken_mcp_jobs", (("kind", "image"), ("status", "processing")))
    completed = ("alltoken_mcp_jobs", (("kind", "image"), ("status", "completed")))
    assert (while_active[processing], while_active[("alltoken_mcp_jobs_due", ())]) == (1, 1)
    assert processing not in once_done
    assert (once_done[completed], once_done[("alltoken_mcp_jobs_due", ())]) == (1, 0)
    assert "made_up_tool_name" in refused.text  # answered: the tool does not exist
    assert "made_up_tool_name" not in after_call
    unknown = [
        value
        for (name, labels), value in samples(after_call).items()
        if name == "alltoken_mcp_tool_calls_total" and ("tool", "unknown") in labels
    ]
    assert unknown == [1]


async def test_a_lease_taken_from_a_late_owner_is_counted(sim: RunningSimulator, tmp_path: Path) -> None:
    env = server_env(tmp_path, sim.base_url)
    late = make_job(
        lease_owner="elsewhere:1:late",
        lease_expires_at=1.0,
        next_poll_at=1.0,
        upstream_url=sim.base_url,
        upstream_key=key_fingerprint(SIM_API_KEY),
    )
    takeovers = ("alltoken_mcp_lease_takeovers_total", ())
    with anyio.fail_after(60):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=30) as http:
            store = await SqliteStore.open(tmp_path / "state.sqlite3")
            try:
                await store.insert_job(late)
            finally:
                await store.close()
            # Inserted by another process: the poller finds it at its next look (fail_after bounds it).
            while samples(await scrape(http, server)).get(takeovers, 0) == 0:  # noqa: ASYNC110
                await anyio.sleep(0.1)
            counted = samples(await scrape(http, server))[takeovers]
    assert counted == 1


async def test_a_tool_call_the_client_cancels_is_counted_as_cancelled(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path="/v1/chat/completions", method="POST", hold_ms=30_000)
    env = server_env(tmp_path, sim.base_url)
    cancelled = ("alltoken_mcp_tool_calls_total", (("outcome", "cancelled"), ("tool", "alltoken_chat")))
    with anyio.fail_after(60):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=60) as http:
            async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
                await client.list_tools()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.call_tool, "alltoken_chat", {"prompt": "never answered"})
                    await until(lambda: sim.state.requests["POST /v1/chat/completions"] > 0, "the chat")
                    tg.cancel_scope.cancel()  # the client gives up: it sends notifications/cancelled
            # The server counts the call when its cancellation lands (fail_after bounds the wait).
            while samples(await scrape(http, server)).get(cancelled, 0) == 0:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            counted = samples(await scrape(http, server))
    assert counted[cancelled] == 1
    failed = ("alltoken_mcp_tool_calls_total", (("outcome", "failed"), ("tool", "alltoken_chat")))
    assert failed not in counted


# ------------------------------------------------------------------------------------- media


def media_url(answer: dict[str, Any], index: int = 0) -> str:
    urls = answer["download_urls"]
    assert isinstance(urls, list)
    return str(urls[index])


async def test_a_signed_media_url_is_served_by_another_replica_streamed_and_checked(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_MEDIA_SECRET=SECRET, ALLTOKEN_MCP_TOKEN=TOKEN)
    with anyio.fail_after(60):
        async with replicas(env, 2) as (first, second), httpx2.AsyncClient(timeout=30) as http:
            auth = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            async with (
                auth,
                Client(streamable_http_client(first.url, http_client=auth), mode="legacy") as client,
            ):  # type: ignore[arg-type]
                result = await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30})
            answer = data(result)
            url = media_url(answer)
            on_second = url.replace(origin(first), origin(second))
            served = await http.get(on_second)  # no bearer token: the URL is the credential
            head = await http.head(on_second)
            path, _, query = on_second.partition("?")
            params = dict(p.split("=") for p in query.split("&"))
            forged = await http.get(f"{path}?exp={params['exp']}&sig={'A' * 22}")
            longer = await http.get(f"{path}?exp={int(params['exp']) + 60}&sig={params['sig']}")
            other_file = await http.get(f"{path[:-1]}1?{query}")
            expired_url = MediaLinks(origin(second), SECRET.encode(), seconds=-10).url(answer["job_id"], 0)
            expired = await http.get(expired_url)
            no_exp = await http.get(f"{path}?sig={params['sig']}")
            garbled_exp = await http.get(f"{path}?exp=soon&sig={params['sig']}")
            twice = await http.get(f"{on_second}&sig={'A' * 22}")  # which of two would a proxy read?
            posted = await http.post(on_second)
            # Signed by the secret, but naming a file the job does not have, or a job nobody has.
            signer = MediaLinks(origin(second), SECRET.encode())
            no_such_file = await http.get(signer.url(answer["job_id"], 7))
            no_such_job = await http.get(signer.url("job_00000000000000ff", 0))
    saved = Path(answer["files"][0]["path"])
    content, size = saved.read_bytes(), saved.stat().st_size  # noqa: ASYNC240 (the test is over)
    assert f"Download (15 min): {url}" in text_of(result)
    assert url.startswith(origin(first) + f"/media/{answer['job_id']}/0?exp=")
    assert served.status_code == 200
    assert served.content == content
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-length"] == str(size)
    assert (head.status_code, head.content, head.headers["content-length"]) == (
        200,
        b"",
        str(size),
    )
    assert served.headers["content-disposition"] == f"attachment; filename*=UTF-8''{saved.name}"
    assert served.headers["x-content-type-options"] == "nosniff"  # never rendered as something else
    assert served.headers["cache-control"] == "private, no-store"  # the URL is a credential
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    assert [no_such_file.status_code, no_such_job.status_code] == [404, 404]
    refusals = [forged, longer, other_file, expired, no_exp, garbled_exp, twice]
    assert [r.status_code for r in refusals] == [403] * 7
    assert {r.content for r in refusals} == {b'{"error": "forbidden"}'}  # nothing tells one from another


async def test_without_a_shared_secret_another_replica_refuses_the_url(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(60):
        async with replicas(env, 2) as (first, second), httpx2.AsyncClient(timeout=30) as http:
            async with Client(streamable_http_client(first.url, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
                answer = data(
                    await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30})
                )
            url = media_url(answer)
            here = await http.get(url)
            there = await http.get(url.replace(origin(first), origin(second)))
    assert here.status_code == 200
    assert there.status_code == 403
    assert "ALLTOKEN_MCP_MEDIA_SECRET is not set" in "\n".join(first.stderr)


async def test_a_saved_file_changed_swapped_or_gone_is_not_served(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = server_env(tmp_path, sim.base_url)
    with anyio.fail_after(60):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=30) as http:
            async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
                answer = data(
                    await client.call_tool("alltoken_image", {"prompt": "a fox", "n": 3, "wait_seconds": 30})
                )
            saved = [Path(f["path"]) for f in answer["files"]]
            changed = bytearray(saved[0].read_bytes())
            changed[-1] ^= 0xFF
            saved[0].write_bytes(bytes(changed))
            secret = tmp_path / "secret.txt"
            secret.write_bytes(b"x" * saved[1].stat().st_size)
            saved[1].unlink()
            saved[1].symlink_to(secret)
            saved[2].unlink()
            answers = [await http.get(media_url(answer, i)) for i in range(3)]
    assert [(a.status_code, a.json()) for a in answers] == [
        (409, {"error": "the saved file changed on disk"}),
        (409, {"error": "the saved file changed on disk"}),
        (404, {"error": "not found"}),
    ]
    assert all(b"x" * 8 not in a.content for a in answers)


async def test_over_stdio_a_job_answer_carries_no_download_url(sim: RunningSimulator, tmp_path: Path) -> None:
    from tests.serverkit import connect, settings_for

    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        answer = data(await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30}))
    assert answer["status"] == "completed"
    assert "download_urls" not in answer


# ------------------------------------------------------------------------------------- shutdown


async def test_a_call_in_flight_at_sigterm_completes_and_the_server_exits_cleanly(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # The simulator holds the chat answer for 1.5 s after taking it; SIGTERM arrives meanwhile.
    sim.state.add_fault(path="/v1/chat/completions", method="POST", hold_ms=1500)
    env = server_env(tmp_path, sim.base_url)
    answers: list[dict[str, Any]] = []
    with anyio.fail_after(40):
        async with (
            # A long grace: the server must exit once the call is answered, not when the drain time ends.
            http_server_process(env, extra_args=["--shutdown-grace", "60"]) as server,
            httpx2.AsyncClient(timeout=30) as http,
        ):
            client = Client(streamable_http_client(server.url, http_client=http), mode="legacy")  # type: ignore[arg-type]
            async with client:

                async def ask() -> None:
                    answers.append(data(await client.call_tool("alltoken_chat", {"prompt": "finish me"})))

                await client.list_tools()  # the SDK validates results against the listing: no request later
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask)
                    await until(lambda: sim.state.requests["POST /v1/chat/completions"] > 0, "the chat")
                    server.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(EXIT_SECONDS):
                    status = await server.process.wait()
    stderr = "\n".join(server.stderr)
    assert [a["text"] for a in answers] == ["Echo: finish me"]
    assert status == 0, stderr
    assert "waiting up to 57 s for 1 MCP request(s)" in stderr
    assert "handing back" not in stderr
    assert "Traceback" not in stderr


async def test_an_open_listen_stream_is_closed_gracefully_at_sigterm_and_does_not_hold_it_up(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A 2026-era `subscriptions/listen` lasts as long as its client wants: left open, it would make
    every restart wait out the whole drain time and then be cut off. The drain ends it with its final
    answer, so the client knows to listen again (to another replica) rather than seeing it lost."""
    env = server_env(tmp_path, sim.base_url)
    outcome: list[str] = []

    async def listen(client: Client, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with client.listen(resource_subscriptions=["alltoken://jobs"]) as subscription:
                task_status.started()
                async for _ in subscription:
                    pass
            outcome.append("closed by the server")
        except Exception as exc:
            outcome.append(repr(exc))

    with anyio.fail_after(40):
        async with (
            http_server_process(env, extra_args=["--shutdown-grace", "60"]) as server,
            httpx2.AsyncClient(timeout=60) as http,
            Client(streamable_http_client(server.url, http_client=http), mode="auto") as client,  # type: ignore[arg-type]
            anyio.create_task_group() as tg,
        ):
            await tg.start(listen, client)
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(EXIT_SECONDS):
                status = await server.process.wait()
    stderr = "\n".join(server.stderr)
    assert status == 0, stderr
    assert outcome == ["closed by the server"]
    assert "handing back" not in stderr
    assert "Traceback" not in stderr


async def test_an_idle_server_exits_at_once_on_sigterm_not_after_its_grace(tmp_path: Path) -> None:
    with anyio.fail_after(40):
        async with http_server_process(server_env(tmp_path), extra_args=["--shutdown-grace", "60"]) as server:
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(EXIT_SECONDS):
                status = await server.process.wait()
    assert status == 0, "\n".join(server.stderr)
