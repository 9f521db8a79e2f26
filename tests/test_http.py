"""`alltoken-mcp serve --http` as a shared deployment runs it: the installed script in a subprocess,
Streamable HTTP on a loopback port, the SDK's HTTP client in both protocol eras, the bearer token, the
DNS-rebinding guard, and the refusal to expose the server to the network without a token."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import ByteReceiveStream, ByteStream, Process
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.rawstdio import ENTRY_POINT
from tests.serverkit import DEAD_BASE_URL, data

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
            # The server announces its URL at INFO once start-up (our lifespan too) is done.
            if "serving MCP (Streamable HTTP) at" in into[-1]:
                ready.set()


@dataclass
class RunningHTTPServer:
    process: Process
    url: str
    stderr: list[str]
    """Its stderr lines so far."""


def url_host(bind: str) -> str:
    """The host part of a URL that reaches a server bound to `bind`."""
    host = bind.strip("[]")
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def http_server_process(
    env: dict[str, str], host: str = "127.0.0.1", extra_args: Sequence[str] = ()
) -> AsyncIterator[RunningHTTPServer]:
    """Start `alltoken-mcp serve --http` and yield it once it accepts connections. It is stopped with
    SIGTERM on exit unless the test already ended it; its stderr is shown if the test fails."""
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
            yield RunningHTTPServer(process, f"http://{url_host(host)}:{port}/mcp", stderr)
        except BaseException:
            sys.stderr.write("server stderr:\n" + "\n".join(stderr) + "\n")
            raise
        finally:
            if process.returncode is None:
                process.terminate()
            with anyio.fail_after(10):
                await process.wait()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def http_server(
    env: dict[str, str], host: str = "127.0.0.1", extra_args: Sequence[str] = ()
) -> AsyncIterator[str]:
    """Start `alltoken-mcp serve --http` and yield its /mcp URL once it accepts connections."""
    async with http_server_process(env, host, extra_args) as server:
        yield server.url


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


# ----------------------------------------------------------------------------------- bind addresses


async def test_another_loopback_address_serves_and_still_guards_the_host_header(tmp_path: Path) -> None:
    """127.0.0.2 is loopback too (no token needed); requests naming it must not be taken for rebinding."""
    async with http_server(server_env(tmp_path), host="127.0.0.2") as url:
        assert url.startswith("http://127.0.0.2:")
        async with httpx2.AsyncClient(timeout=10) as http:
            direct = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            foreign = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"})
    assert direct.status_code == 200
    assert foreign.status_code == 421


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback")
@pytest.mark.parametrize("host", ["[::1]", "::1"])
async def test_the_ipv6_loopback_serves_with_or_without_brackets(tmp_path: Path, host: str) -> None:
    async with http_server(server_env(tmp_path), host=host) as url:
        assert url.startswith("http://[::1]:")
        with anyio.fail_after(30):
            async with connect(url, "auto") as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
    assert "alltoken_chat" in tools


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["--host", "nosuch.invalid"], TOKEN, "--host 'nosuch.invalid' does not resolve to an address"),
        (["--host", "203.0.113.7"], TOKEN, "cannot listen on 203.0.113.7:{port}: "),
        (["--host", "[127.0.0.1]"], None, "brackets go only around an IPv6 address"),
        (["--read-timeout", "0"], None, "--read-timeout 0.0 must be a positive number of seconds"),
        (["--read-timeout", "inf"], None, "--read-timeout inf must be a positive number of seconds"),
    ],
)
async def test_a_bind_that_cannot_work_is_refused_in_one_line_before_anything_starts(
    tmp_path: Path, args: list[str], token: str | None, message: str
) -> None:
    port = free_port()
    env = server_env(tmp_path, **({"ALLTOKEN_MCP_TOKEN": token} if token else {}))
    with anyio.fail_after(20):
        result = await anyio.run_process(
            [ENTRY_POINT, "serve", "--http", "--port", str(port), *args], env=env, check=False
        )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1, stderr  # one line: nothing started, nothing logged
    assert message.format(port=port) in stderr
    assert result.stdout == b""
    assert not (tmp_path / "state.sqlite3").exists()


async def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with anyio.fail_after(20):
            result = await anyio.run_process(
                [ENTRY_POINT, "serve", "--http", "--port", str(port)], env=server_env(tmp_path), check=False
            )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1, stderr
    assert f"cannot listen on 127.0.0.1:{port}: " in stderr
    assert "choose another --port" in stderr


# ---------------------------------------------------------------------------------- slow clients

READ_TIMEOUT = 1.0
SLOW_BYTE_EVERY = 0.25
"""Well inside the read timeout: the connection is never idle for long, it just never finishes."""
REQUEST_HEAD = (
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n"
)


KEEP_ALIVE_REQUEST = b"GET /not-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _read_response(stream: ByteStream) -> bytes:
    """One whole HTTP response with a Content-Length body."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive()
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += await stream.receive()
    return head


async def _seconds_until_closed(url: str, keep_alive: bool, first: bytes, trickle: bytes) -> float:
    """Optionally complete one request on the connection first; then send `first` at once and `trickle`
    one byte at a time. How long the server took to hang up, counted from when it had nothing to send."""
    port = int(url.split(":")[2].split("/")[0])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if keep_alive:
            await stream.send(KEEP_ALIVE_REQUEST)
            assert b" 404 " in await _read_response(stream)
        started = anyio.current_time()
        try:
            if first:
                await stream.send(first)
            for byte in trickle:
                with anyio.move_on_after(SLOW_BYTE_EVERY):
                    answer = await stream.receive()
                    raise AssertionError(f"the server answered an unfinished request: {answer[:100]!r}")
                await stream.send(bytes([byte]))
            with anyio.move_on_after(30):  # a silent connection: only wait
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            return anyio.current_time() - started
    raise AssertionError("the server kept a connection that never finished its request")


@pytest.mark.parametrize(
    ("keep_alive", "first", "trickle"),
    [
        pytest.param(False, b"", REQUEST_HEAD, id="headers-trickle"),
        pytest.param(False, REQUEST_HEAD, b"x" * 200, id="body-trickle"),
        pytest.param(False, b"", b"", id="silent"),
        pytest.param(True, b"", REQUEST_HEAD, id="headers-trickle-after-a-request"),
        pytest.param(True, b"", b"", id="silent-after-a-request"),  # sooner than uvicorn's 5 s keep-alive
    ],
)
async def test_a_connection_that_never_finishes_its_request_is_closed_at_the_read_timeout(
    tmp_path: Path, keep_alive: bool, first: bytes, trickle: bytes
) -> None:
    """Slowloris: uvicorn has no deadline of its own for a request still arriving (its keep-alive timer
    stops at the first byte of the next request)."""
    async with http_server(server_env(tmp_path), extra_args=["--read-timeout", str(READ_TIMEOUT)]) as url:
        with anyio.fail_after(40):
            seconds = await _seconds_until_closed(url, keep_alive, first, trickle)
            # The server is not worse for it.
            async with httpx2.AsyncClient(timeout=10) as http:
                after = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
    assert READ_TIMEOUT - 0.1 <= seconds < READ_TIMEOUT + 2
    assert after.status_code == 200


async def test_a_response_slower_than_the_read_timeout_is_still_delivered(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The deadline covers receiving the request, not the time the server takes to answer it."""
    sim.state.add_fault(path="/v1/chat/completions", method="POST", latency_ms=READ_TIMEOUT * 1500)
    extra = ["--read-timeout", str(READ_TIMEOUT)]
    async with http_server(server_env(tmp_path, sim.base_url), extra_args=extra) as url:
        with anyio.fail_after(30):
            async with connect(url, "legacy") as client:
                started = anyio.current_time()
                chat = data(await client.call_tool("alltoken_chat", {"prompt": "take your time"}))
                seconds = anyio.current_time() - started
    assert chat["text"] == "Echo: take your time"
    assert seconds > READ_TIMEOUT
