"""`alltoken-mcp serve --http` as a shared deployment runs it: the installed script in a subprocess,
Streamable HTTP on a loopback port, the SDK's HTTP client in both protocol eras, the bearer token, the
DNS-rebinding guard, and the refusal to expose the server to the network without a token."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import ByteReceiveStream
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.serverkit import DEAD_BASE_URL, data

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
TOKEN = "test-token-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-http-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(home: Path, base_url: str = DEAD_BASE_URL, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env.update(
        ALLTOKEN_BASE_URL=base_url,
        ALLTOKEN_API_KEY=SIM_API_KEY,
        ALLTOKEN_MCP_HOME=str(home),
        ALLTOKEN_INPUT_DIRS=str(home),
        **extra,
    )
    return env


async def _collect(stream: ByteReceiveStream, into: list[str], ready: anyio.Event) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            into.append(line.decode(errors="replace"))
            # uvicorn announces the listening socket at INFO once startup (our lifespan too) is done.
            if "Uvicorn running on" in into[-1]:
                ready.set()


@asynccontextmanager
async def http_server(
    env: dict[str, str], host: str = "127.0.0.1", extra_args: Sequence[str] = ()
) -> AsyncIterator[str]:
    """Start `alltoken-mcp serve --http` and yield its /mcp URL once it accepts connections."""
    port = free_port()
    command = [ENTRY_POINT, "serve", "--http", "--host", host, "--port", str(port), "--log-level", "INFO"]
    command += extra_args
    stderr: list[str] = []
    ready = anyio.Event()
    async with await anyio.open_process(command, env=env) as process, anyio.create_task_group() as tg:
        assert process.stderr is not None
        tg.start_soon(_collect, process.stderr, stderr, ready)
        try:
            with anyio.fail_after(20):
                await ready.wait()
            yield f"http://127.0.0.1:{port}/mcp"
        except BaseException:
            sys.stderr.write("server stderr:\n" + "\n".join(stderr) + "\n")
            raise
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def connect(url: str, mode: str, token: str | None = None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
            yield client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_same_tools_and_resources_work_over_streamable_http(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with http_server(server_env(tmp_path, sim.base_url)) as url:
        with anyio.fail_after(30):
            async with connect(url, mode) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                chat = data(await client.call_tool("alltoken_chat", {"prompt": "over http"}))
                health = await client.read_resource("alltoken://health")
    assert {"alltoken_chat", "alltoken_image", "alltoken_video", "job_status", "list_models"} <= tools
    assert chat["text"] == "Echo: over http"
    assert health.contents


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_with_a_token_the_right_bearer_token_gets_in(tmp_path: Path, mode: str) -> None:
    async with http_server(server_env(tmp_path, ALLTOKEN_MCP_TOKEN=TOKEN)) as url:
        with anyio.fail_after(30):
            async with connect(url, mode, token=TOKEN) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
    assert "alltoken_chat" in tools


async def test_with_a_token_a_missing_or_wrong_token_gets_401(tmp_path: Path) -> None:
    async with (
        http_server(server_env(tmp_path, ALLTOKEN_MCP_TOKEN=TOKEN)) as url,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        missing = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
        wrong = await http.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN[:-1]}x"}
        )
        other_scheme = await http.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Basic {TOKEN}"}
        )
        listening = await http.get(url, headers={"Accept": "text/event-stream"})
        right = await http.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"bearer {TOKEN}"}
        )
    for refused in (missing, wrong, other_scheme, listening):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "ALLTOKEN_MCP_TOKEN" in refused.json()["message"]
        assert TOKEN not in refused.text
    assert right.status_code == 200


async def test_the_sdk_client_without_the_token_cannot_connect(tmp_path: Path) -> None:
    async with http_server(server_env(tmp_path, ALLTOKEN_MCP_TOKEN=TOKEN)) as url:
        with anyio.fail_after(30), pytest.raises(BaseException) as refused:  # noqa: PT011 (an exception group)
            async with connect(url, "legacy", token="not-the-token") as client:
                await client.list_tools()
    # The SDK turns the 401 into an error for the initialize request it answered.
    assert refused.group_contains(MCPError, depth=2)


async def test_without_a_token_no_authorization_is_needed(tmp_path: Path) -> None:
    async with http_server(server_env(tmp_path)) as url, httpx2.AsyncClient(timeout=10) as http:
        answer = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
    assert answer.status_code == 200


async def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example resolves its name to 127.0.0.1 and posts to the server."""
    async with http_server(server_env(tmp_path)) as url:
        port = url.split(":")[2].split("/")[0]
        async with httpx2.AsyncClient(timeout=10) as http:
            foreign = await http.post(
                url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": f"evil.example:{port}"}
            )
            foreign_origin = await http.post(
                url, json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "http://evil.example"}
            )
            local = await http.post(
                url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": f"localhost:{port}"}
            )
    assert foreign.status_code == 421
    assert foreign_origin.status_code == 403
    assert local.status_code == 200


async def test_an_allowed_host_name_is_accepted_and_others_still_refused(tmp_path: Path) -> None:
    """Behind a reverse proxy that passes its public Host through, --allowed-host names it."""
    allow = ["--allowed-host", "MCP.Example.com"]
    async with (
        http_server(server_env(tmp_path), extra_args=allow) as url,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        proxied = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "mcp.example.com"})
        from_page = await http.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "https://mcp.example.com"}
        )
        foreign = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"})
    assert proxied.status_code == 200
    assert from_page.status_code == 200
    assert foreign.status_code == 421


@pytest.mark.parametrize("name", ["https://mcp.example.com", "mcp.example.com:443", "a/b", "", "-x"])
async def test_an_allowed_host_that_is_not_a_bare_name_is_refused(tmp_path: Path, name: str) -> None:
    result = await anyio.run_process(
        [ENTRY_POINT, "serve", "--http", f"--allowed-host={name}"], env=server_env(tmp_path), check=False
    )
    assert result.returncode == 2
    assert b"--allowed-host" in result.stderr
    assert b"not a host name" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_a_network_bind_without_a_token_is_refused_before_listening(tmp_path: Path) -> None:
    port = free_port()
    with anyio.fail_after(20):
        result = await anyio.run_process(
            [ENTRY_POINT, "serve", "--http", "--host", "0.0.0.0", "--port", str(port)],
            env=server_env(tmp_path),
            check=False,
        )
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "refusing to serve HTTP on non-loopback address '0.0.0.0' without ALLTOKEN_MCP_TOKEN" in message
    assert result.stdout == b""
    # Nothing was left listening.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_a_network_bind_with_a_token_serves_and_still_checks_it(tmp_path: Path) -> None:
    async with http_server(server_env(tmp_path, ALLTOKEN_MCP_TOKEN=TOKEN), host="0.0.0.0") as url:
        with anyio.fail_after(30):
            async with connect(url, "auto", token=TOKEN) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
        async with httpx2.AsyncClient(timeout=10) as http:
            refused = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
    assert "alltoken_chat" in tools
    assert refused.status_code == 401
