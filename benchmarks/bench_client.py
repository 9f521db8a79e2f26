"""Client overhead: non-streaming chat through `AllTokenClient` vs a bare `httpx2.AsyncClient` POST.

Run: .venv/bin/python benchmarks/bench_client.py [--calls N]
The simulator runs in a separate process (so it does not share this event loop) with chat latency set
to zero; both clients send the same body to it, interleaved call by call, after a warm-up. Prints the
median and p90 per call for each and the ratio of medians (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx2

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.simulator import SIM_API_KEY

BODY = {
    "model": "gpt-5.4-nano",
    "messages": [{"role": "user", "content": "benchmark the client overhead please"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    # The simulator's app under plain `uvicorn.run`, which binds its own socket. (`run_simulator` passes
    # a socket created with proto 0, so asyncio skips TCP_NODELAY on accepted connections and every
    # response waits ~40 ms for a delayed ACK: that would drown the overhead this benchmark measures.)
    code = (
        "import uvicorn; "
        "from alltoken_mcp.simulator import SimConfig, SimState; "
        "from alltoken_mcp.simulator.app import build_app; "
        "state = SimState(SimConfig(chat_first_token_s=0, chat_token_interval_s=0)); "
        f"uvicorn.run(build_app(state), host='127.0.0.1', port={port}, http='h11', lifespan='off', "
        "log_level='warning', access_log=False)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)


async def wait_ready(origin: str) -> None:
    """Poll until the simulator process answers (it needs a moment to import and bind)."""
    with anyio.fail_after(30):
        async with httpx2.AsyncClient() as probe:
            while True:
                try:
                    if (await probe.get(f"{origin}/_sim/counters")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def run(calls: int, port: int) -> None:
    origin = f"http://127.0.0.1:{port}"
    base_url = f"{origin}/v1"
    await wait_ready(origin)
    bare = httpx2.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {SIM_API_KEY}", "Accept": "application/json"},
        timeout=30,
    )
    ours = AllTokenClient(
        base_url=base_url, api_key=SIM_API_KEY, retry=RetryPolicy(max_attempts=1), timeout=30
    )

    async def bare_call() -> object:
        response = await bare.post("/chat/completions", json=BODY)
        response.raise_for_status()
        return response.json()

    async def client_call() -> object:
        return await ours.chat(BODY)

    async with bare, ours:
        for _ in range(30):  # warm-up: connections, imports, caches
            await bare_call()
            await client_call()
        bare_times: list[float] = []
        client_times: list[float] = []
        for i in range(calls):
            # Alternate which goes first so neither systematically benefits from the other's warm state.
            if i % 2:
                bare_times.append(await timed(bare_call))
                client_times.append(await timed(client_call))
            else:
                client_times.append(await timed(client_call))
                bare_times.append(await timed(bare_call))

    def describe(times: list[float]) -> str:
        p90 = statistics.quantiles(times, n=10)[-1]
        return f"median {statistics.median(times) * 1e3:6.3f} ms   p90 {p90 * 1e3:6.3f} ms"

    ratio = statistics.median(client_times) / statistics.median(bare_times)
    print(f"non-streaming chat, {calls} calls each, interleaved, simulator in a separate process")
    print(f"bare httpx2.AsyncClient POST: {describe(bare_times)}")
    print(f"AllTokenClient.chat():       {describe(client_times)}")
    print(f"ratio of medians: {ratio:.3f}x  (target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    port = free_port()
    simulator = start_simulator(port)
    try:
        anyio.run(run, args.calls, port)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)


if __name__ == "__main__":
    main()
