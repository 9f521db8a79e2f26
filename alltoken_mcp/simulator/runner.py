"""Running the simulator: `serve_simulator` (async context, free port, in-process) and `run_simulator` (CLI).

uvicorn is driven directly with a pre-bound socket so the real port is known before the first request,
without signal handlers (the host process owns SIGINT/SIGTERM) and without uvicorn's 0.1 s polling on
shutdown, so a test can start and stop a simulator in a few milliseconds. Logs go to stderr via the
`logging` module; nothing is ever written to stdout.

uvicorn has no public API for any of that, so `_Server` overrides `capture_signals`, `startup`, `main_loop`
and `shutdown` and reads `servers` and `server_state`; tests/test_simulator_control.py names each of them,
and pyproject keeps uvicorn below 1.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import uvicorn

from alltoken_mcp.simulator.app import build_app
from alltoken_mcp.simulator.config import SIM_API_KEY, SimConfig
from alltoken_mcp.simulator.state import SimState

logger = logging.getLogger("alltoken_mcp.simulator")

_SHUTDOWN_GRACE_S = 2.0


@dataclass
class RunningSimulator:
    base_url: str  # "http://127.0.0.1:PORT/v1"
    origin: str  # "http://127.0.0.1:PORT"
    state: SimState

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])


class _Server(uvicorn.Server):
    """uvicorn without signal capture, with an event-driven main loop and a fast shutdown."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()
        self.exit_requested = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick refreshes the Date header when counter % 10 == 0
            with anyio.move_on_after(1.0):
                await self.exit_requested.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their response
        with anyio.move_on_after(_SHUTDOWN_GRACE_S):
            # uvicorn offers no event for "all connections drained", so poll briefly.
            while self.server_state.connections:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        # Tasks whose client is gone (e.g. it timed out during a latency fault) answer nobody: cancel them.
        for task in list(self.server_state.tasks):
            task.cancel()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if isinstance(transport, asyncio.Transport):
                transport.abort()

    def request_exit(self) -> None:
        self.should_exit = True
        self.exit_requested.set()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose listening socket
    # says so, and without it every small response waits ~40 ms for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_simulator(
    config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSimulator]:
    """Run the simulator on `host:port` (0 = a free port) for the duration of the `async with`."""
    state = SimState(config or SimConfig())
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            build_app(state),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=30,
        )
    )
    url_host = f"[{host}]" if ":" in host else host
    origin = f"http://{url_host}:{bound_port}"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await server.ready.wait()
            try:
                yield RunningSimulator(base_url=f"{origin}/v1", origin=origin, state=state)
            finally:
                server.request_exit()
    finally:
        sock.close()


def run_simulator(config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Serve until SIGINT/SIGTERM. Blocking; used by `alltoken-mcp simulate`. Prints its URL on stderr."""
    config = config or SimConfig()

    async def main() -> None:
        async with serve_simulator(config, host=host, port=port) as sim:
            # Printed, not logged: the user must see where to point clients whatever the log level.
            # The built-in key is public; any other configured key is treated as a secret.
            key = SIM_API_KEY if SIM_API_KEY in config.api_keys else "<one of the configured api_keys>"
            print(
                f"AllToken simulator listening on {sim.origin} (base URL {sim.base_url}, "
                f"API key {key}, speed {config.speed:g}). Press Ctrl+C to stop.",
                file=sys.stderr,
                flush=True,
            )
            try:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
            except NotImplementedError:  # Windows: no signal receiver; Ctrl+C raises KeyboardInterrupt
                await anyio.sleep_forever()
        logger.info("AllToken simulator stopped")

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main)
