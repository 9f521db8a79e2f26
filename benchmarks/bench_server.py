"""The MCP server's three numbers from issue 3, measured over real stdio and loopback HTTP.

Run: .venv/bin/python benchmarks/bench_server.py [--starts N] [--calls N]

1. cold start: spawn → `initialize` answered → `tools/list` answered, for `alltoken-mcp` (no key, no
   network) and for a minimal `MCPServer` with one tool, interleaved run by run; median of N each, with
   the quartiles and the machine's load average (the two cores are shared: compare runs taken together).
   The package is byte-compiled first, as installing it does: a checkout run with
   PYTHONDONTWRITEBYTECODE would otherwise compile every module at each start (~70 ms).
   Target: ours ≤ 1.10× the minimal server.
2. overhead: `alltoken_chat` over stdio vs the bare `AllTokenClient.stream_chat` call it makes, to the
   same simulator (another process, zero latency), interleaved call by call. Target: ≤ 5 ms added at the
   median.
3. concurrency: 64 `alltoken_chat` calls at once on one stdio connection with 200 ms upstream latency
   vs one call. Target: ≤ 2× the single-call time, judged on the first burst (63 new upstream
   connections, as after an idle spell); later bursts on warm connections are shown too, with the
   server's CPU time per call (from /proc), the bare client, and a floor: a minimal MCPServer whose tool
   just sleeps 200 ms.
   (The first diagnosis found two causes, both fixed since: httpcore 1.0.9's quadratic pool pass with a
   failing `import sniffio` per request — the client now uses httpx2, which mcp already installs — and
   two SQLite write transactions per chat turn, now one. The second, for issue 10: httpcore2's pool still
   asks every idle connection "closed by the server?" on each request and each response, through an
   anyio attribute lookup with a getpeername() call — now one poll(0) per connection (client/_pool.py);
   and 64 turns ending together queued 64 commits, each with a thread hop and an fsync — concurrent turns
   are now committed in groups.)
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from procs import child_pids, cpu_seconds

import alltoken_mcp
from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.simulator import SIM_API_KEY

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
SLEEPY_SERVER = """\
import anyio
from mcp.server import MCPServer

server = MCPServer("floor")


@server.tool()
async def alltoken_chat(prompt: str, model: str) -> dict[str, object]:
    await anyio.sleep(0.2)
    return {"text": "Echo: " + prompt, "model": model, "conversation_id": "conv_0000000000000000"}


server.run()
"""
MINIMAL_SERVER = """\
from mcp.server import MCPServer

server = MCPServer("minimal")


@server.tool()
def ping() -> str:
    return "pong"


server.run()
"""
PROMPT = "measure the server overhead on this call please"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_simulator(port: int, first_token_s: float) -> subprocess.Popen[bytes]:
    # Plain `uvicorn.run` binds its own socket, so accepted connections get TCP_NODELAY (see
    # benchmarks/bench_client.py for why that matters at millisecond scale).
    code = (
        "import uvicorn; "
        "from alltoken_mcp.simulator import SimConfig, SimState; "
        "from alltoken_mcp.simulator.app import build_app; "
        "state = SimState(SimConfig("
        f"speed=1.0, chat_first_token_s={first_token_s}, chat_token_interval_s=0)); "
        f"uvicorn.run(build_app(state), host='127.0.0.1', port={port}, http='h11', lifespan='off', "
        "log_level='warning', access_log=False, backlog=512)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)


@asynccontextmanager
async def simulator(first_token_s: float) -> AsyncIterator[str]:
    port = free_port()
    process = start_simulator(port, first_token_s)
    origin = f"http://127.0.0.1:{port}"
    try:
        with anyio.fail_after(30):
            async with httpx2.AsyncClient() as probe:
                while True:
                    try:
                        if (await probe.get(f"{origin}/_sim/counters")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.05)
        yield f"{origin}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


CANNED_SSE = (
    b"".join(
        b"data: " + json.dumps(chunk).encode() + b"\n\n"
        for chunk in (
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-5.4-nano",
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "Echo"}, "finish_reason": None}
                ],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-5.4-nano",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "gpt-5.4-nano",
                "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
            },
        )
    )
    + b'data: [DONE]\n\n: {"cost":"0.0000010000","prompt_tokens":10,"completion_tokens":1}\n\n'
)


@asynccontextmanager
async def canned_upstream(latency_s: float) -> AsyncIterator[str]:
    """A minimal HTTP/1.1 server that answers every request with the same SSE chat after `latency_s`.

    Costs microseconds per request, unlike the simulator (uvicorn + Starlette), so a burst measures the
    MCP server rather than the fake upstream sharing the same two cores.
    """
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-gateway-request-id: bench\r\n"
        b"content-length: " + str(len(CANNED_SSE)).encode() + b"\r\n\r\n"
    )

    async def handle(stream: anyio.abc.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        buffer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                header, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in header.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(buffer) < length:
                    buffer += await stream.receive()
                buffer = buffer[length:]
                await anyio.sleep(latency_s)
                await stream.send(head + CANNED_SSE)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0, backlog=512)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}/v1"
        tg.cancel_scope.cancel()


def server_env(home: str, base_url: str, api_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env.update(ALLTOKEN_BASE_URL=base_url, ALLTOKEN_MCP_HOME=home, ALLTOKEN_INPUT_DIRS=home)
    if api_key:
        env["ALLTOKEN_API_KEY"] = api_key
    return env


# ------------------------------------------------------------------------------------------ cold start


async def _receive_response(stdout: Any, buffer: bytearray, request_id: int) -> None:
    while True:
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            if json.loads(line).get("id") == request_id:
                return
        buffer.extend(await stdout.receive())


async def cold_start(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to the `tools/list` answer, over raw JSON-RPC lines."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "b", "version": "0"},
        },
    }
    follow = [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    start = time.perf_counter()
    async with await anyio.open_process(command, env=env, stderr=subprocess.DEVNULL) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        buffer = bytearray()
        await process.stdin.send(json.dumps(initialize).encode() + b"\n")
        await _receive_response(process.stdout, buffer, 1)
        await process.stdin.send(b"".join(json.dumps(m).encode() + b"\n" for m in follow))
        await _receive_response(process.stdout, buffer, 2)
        elapsed = time.perf_counter() - start
        await process.stdin.aclose()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
    return elapsed


def spread(values: Sequence[float]) -> str:
    """Median and quartiles, in ms."""
    low, mid, high = statistics.quantiles(values, n=4)
    return f"median {mid * 1e3:6.1f} ms (quartiles {low * 1e3:.1f}–{high * 1e3:.1f})"


async def bench_cold_start(runs: int) -> None:
    compileall.compile_dir(Path(alltoken_mcp.__file__).parent, quiet=1)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        minimal = Path(home) / "minimal_server.py"
        minimal.write_text(MINIMAL_SERVER)
        env = server_env(home, "http://127.0.0.1:9/v1", None)
        ours_cmd, theirs_cmd = [ENTRY_POINT], [sys.executable, str(minimal)]
        await cold_start(ours_cmd, env)  # warm the OS file cache for both
        await cold_start(theirs_cmd, env)
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(runs):
            pair = [(ours_cmd, ours), (theirs_cmd, theirs)]
            for command, into in pair if i % 2 == 0 else reversed(pair):
                into.append(await cold_start(command, env))
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"1. cold start (spawn → initialize → tools/list), {runs} each, interleaved; "
        f"load average {load:.2f} → {os.getloadavg()[0]:.2f}"
    )
    print(f"   minimal MCPServer, one tool: {spread(theirs)}")
    print(f"   alltoken-mcp:                {spread(ours)}")
    pairs = statistics.quantiles([a / b for a, b in zip(ours, theirs, strict=True)], n=4)
    print(
        f"   ratio of medians {ratio:.3f}x (run by run: median {pairs[1]:.3f}x, quartiles "
        f"{pairs[0]:.3f}–{pairs[2]:.3f}) (target ≤ 1.10x): {'PASS' if ratio <= 1.10 else 'FAIL'}"
    )


# ----------------------------------------------------------------------------------------- stdio calls


@asynccontextmanager
async def stdio_server(
    base_url: str, home: str, command: Sequence[str] = (ENTRY_POINT,), **extra_env: str
) -> AsyncIterator[Client]:
    env = {**server_env(home, base_url, SIM_API_KEY), **extra_env}
    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=env)
    with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 - opening /dev/null does not block
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            yield client


def server_pid(command: Sequence[str]) -> int:
    """Our one child process started with `command` (its CPU time is read from /proc)."""
    wanted = "\0".join(command).encode()
    found = child_pids(lambda cmdline: wanted in cmdline)
    assert len(found) == 1, f"expected one server process, found {found}"
    return found[0]


async def chat_over_stdio(client: Client) -> None:
    result = await client.call_tool("alltoken_chat", {"prompt": PROMPT, "model": "gpt-5.4-nano"})
    assert not result.is_error, result.content


async def bench_overhead(calls: int) -> None:
    body = {"model": "gpt-5.4-nano", "messages": [{"role": "user", "content": PROMPT}]}
    async with simulator(0.0) as base_url:
        bare = AllTokenClient(base_url=base_url, api_key=SIM_API_KEY, retry=RetryPolicy(max_attempts=1))

        async def bare_call() -> None:
            async with bare.stream_chat(body) as stream:
                async for _ in stream:
                    pass
                stream.result()

        with tempfile.TemporaryDirectory() as home:
            async with bare, stdio_server(base_url, home) as client:
                for _ in range(30):
                    await bare_call()
                    await chat_over_stdio(client)
                ours: list[float] = []
                theirs: list[float] = []
                for i in range(calls):
                    pair: list[tuple[Callable[[], Awaitable[None]], list[float]]] = [
                        (lambda: chat_over_stdio(client), ours),
                        (bare_call, theirs),
                    ]
                    for call, into in pair if i % 2 == 0 else reversed(pair):
                        start = time.perf_counter()
                        await call()
                        into.append(time.perf_counter() - start)
    added = (statistics.median(ours) - statistics.median(theirs)) * 1e3
    print(f"2. alltoken_chat over stdio vs bare AllTokenClient.stream_chat, {calls} calls each, interleaved")
    print(f"   bare client:          median {statistics.median(theirs) * 1e3:6.2f} ms")
    print(f"   alltoken_chat/stdio:  median {statistics.median(ours) * 1e3:6.2f} ms")
    print(f"   added {added:.2f} ms at the median (target ≤ 5 ms): {'PASS' if added <= 5 else 'FAIL'}")


async def bare_burst(base_url: str, concurrent: int) -> tuple[float, float]:
    """(single, burst) seconds for the bare client, starting like the server does: one warm connection."""
    body = {"model": "gpt-5.4-nano", "messages": [{"role": "user", "content": PROMPT}]}
    async with AllTokenClient(
        base_url=base_url, api_key=SIM_API_KEY, retry=RetryPolicy(max_attempts=1)
    ) as bare:

        async def one() -> None:
            async with bare.stream_chat(body) as stream:
                async for _ in stream:
                    pass

        singles = []
        for _ in range(5):
            start = time.perf_counter()
            await one()
            singles.append(time.perf_counter() - start)
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrent):
                tg.start_soon(one)
        return statistics.median(singles), time.perf_counter() - start


@dataclass
class Burst:
    single: float
    cold: float
    """the first burst: the upstream pool holds one connection, so 63 are opened"""
    warm: float
    """median of the later bursts, on open connections"""
    cpu_per_call_ms: float
    """server CPU per call over the warm bursts"""

    @property
    def ratio(self) -> float:
        return self.cold / self.single


async def server_burst(
    base_url: str, concurrent: int, command: Sequence[str] = (ENTRY_POINT,), warm_bursts: int = 3, **env: str
) -> Burst:
    """Timings for `alltoken_chat` (or the floor's tool) over one stdio connection."""
    with tempfile.TemporaryDirectory() as home:
        async with stdio_server(base_url, home, command, **env) as client:
            pid = server_pid(command)
            for _ in range(3):
                await chat_over_stdio(client)
            singles: list[float] = []
            for _ in range(5):
                start = time.perf_counter()
                await chat_over_stdio(client)
                singles.append(time.perf_counter() - start)
            bursts: list[float] = []
            cpu = 0.0
            for i in range(1 + warm_bursts):
                cpu_before = cpu_seconds(pid)
                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrent):
                        tg.start_soon(chat_over_stdio, client)
                bursts.append(time.perf_counter() - start)
                if i > 0:
                    cpu += cpu_seconds(pid) - cpu_before
    return Burst(
        single=statistics.median(singles),
        cold=bursts[0],
        warm=statistics.median(bursts[1:]),
        cpu_per_call_ms=cpu / (warm_bursts * concurrent) * 1e3,
    )


def burst_line(label: str, burst: Burst, concurrent: int, judged: bool) -> str:
    verdict = f" (target ≤ 2x): {'PASS' if burst.ratio <= 2 else 'FAIL'}" if judged else ""
    return (
        f"   {label:28} single {burst.single * 1e3:5.0f} ms; {concurrent} at once: first "
        f"{burst.cold * 1e3:4.0f} ms = {burst.ratio:.2f}x{verdict}, warm {burst.warm * 1e3:4.0f} ms = "
        f"{burst.warm / burst.single:.2f}x; server CPU {burst.cpu_per_call_ms:.1f} ms/call"
    )


async def bench_concurrency(concurrent: int, latency_s: float) -> None:
    print(
        f"3. {concurrent} concurrent alltoken_chat calls, one stdio connection, "
        f"{latency_s * 1e3:.0f} ms upstream"
    )
    with tempfile.TemporaryDirectory() as scripts:
        floor_script = Path(scripts) / "sleepy_server.py"
        floor_script.write_text(SLEEPY_SERVER)
        floor = await server_burst("http://127.0.0.1:9/v1", concurrent, (sys.executable, str(floor_script)))
        print(burst_line("floor (MCPServer, sleep tool)", floor, concurrent, judged=False))
        upstreams = (("canned upstream", canned_upstream), ("simulator", simulator))
        for label, upstream in upstreams:
            async with upstream(latency_s) as base_url:
                ours = await server_burst(base_url, concurrent)
                print(burst_line(f"{label}: alltoken_chat", ours, concurrent, judged=True))
                bare_single, bare = await bare_burst(base_url, concurrent)
                print(
                    f"   {label + ': bare client':28} single {bare_single * 1e3:5.0f} ms; {concurrent} at "
                    f"once: first {bare * 1e3:4.0f} ms = {bare / bare_single:.2f}x"
                )


async def run(starts: int, calls: int, only: set[str]) -> None:
    if "cold" in only:
        await bench_cold_start(starts)
    if "overhead" in only:
        await bench_overhead(calls)
    if "concurrency" in only:
        await bench_concurrency(64, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--starts", type=int, default=15, help="cold starts per server (default 15)")
    parser.add_argument(
        "--calls", type=int, default=200, help="calls per side for the overhead (default 200)"
    )
    parser.add_argument("--only", default="cold,overhead,concurrency", help="comma-separated parts to run")
    args = parser.parse_args()
    anyio.run(run, args.starts, args.calls, set(args.only.split(",")))


if __name__ == "__main__":
    main()
