"""Streamable HTTP on uvicorn: listening on sockets bound before anything started, a deadline for
receiving each request, and a SIGTERM shutdown that ends with exit status 0.

Two uvicorn classes are subclassed, and what they rely on is pinned by tests over real sockets
(tests/test_http.py):

- `H11Protocol` (uvicorn's HTTP/1.1 protocol on h11): its `conn` (the `h11.Connection`), `transport`,
  `loop` and `client` attributes and its `connection_made`, `data_received`, `on_response_complete` and
  `connection_lost` methods.
- `Server`: its `capture_signals` context manager, `handle_exit` and `startup(sockets)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import h11
import uvicorn
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from alltoken_mcp.draining import Drain
from alltoken_mcp.redact import Redactor, install_log_redaction

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
"""How long a SIGTERM shutdown may take (`--shutdown-grace`) before uvicorn cuts off what is still open.
Inside it, MCP requests in flight get `drain_seconds(grace)` to finish (see `draining.Drain`); then the
event streams are ended."""


def drain_seconds(grace: float) -> float:
    """The part of the grace that in-flight requests get. The rest (3 s, or half of a short grace) is for
    handing back the calls still running, ending the event streams (sse-starlette looks every 0.5 s) and
    the lifespan's cleanup."""
    return max(grace - 3, grace / 2)


class _RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for receiving each request.

    uvicorn itself never times out a request that is still arriving: `timeout_keep_alive` only runs
    between requests and is cancelled by the first byte of the next one, and h11's
    `max_incomplete_event_size` bounds how large a header block may grow, not how long it may take. A
    client that sends its headers a byte every few seconds and never finishes (slowloris) would keep
    its connection forever, and enough of them exhaust the process's sockets. Here a timer runs while
    the connection waits for a request (h11's `their_state` is IDLE, or SEND_BODY while the body
    arrives) and closes the connection if the request is not complete when it fires. A connection that
    sends nothing at all is closed the same way.
    """

    read_timeout: ClassVar[float]  # set by `request_deadline_protocol`
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_deadline()  # the next request on this connection gets a deadline of its own

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _track_deadline(self) -> None:
        receiving = self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing()
        if not receiving:
            self._stop_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            seconds = self.read_timeout
            logger.info("closed a connection from %s: no whole request in %g s", self.client, seconds)
            self.transport.close()


def request_deadline_protocol(read_timeout: float) -> type[H11Protocol]:
    """The protocol class for uvicorn's `http=` option, with this deadline."""

    class Protocol(_RequestDeadlineProtocol):
        pass

    Protocol.read_timeout = read_timeout
    return Protocol


class Server(uvicorn.Server):
    """uvicorn's server, announcing the MCP URL once it listens, and ending a SIGTERM/SIGINT shutdown
    with a normal return.

    uvicorn re-raises the signal it caught after its graceful shutdown, so the process dies by it
    (status 143 for SIGTERM). By then the app's lifespan has stopped the job poller and released its
    leases: the shutdown was clean, and the process exits 0 as the stdio server does. Its own handler
    (`handle_exit`) is still the one installed, because the SDK's event streams (sse-starlette) find
    the server through it to end themselves on shutdown.
    """

    def __init__(self, config: uvicorn.Config, url_path: str, drain: Drain | None = None) -> None:
        super().__init__(config)
        self._url_path = url_path
        self._drain = drain

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            for sock in sockets:
                logger.info("serving MCP (Streamable HTTP) at %s", listening_url(sock, self._url_path))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown (stop accepting, close idle connections, wait for the rest), with
        the MCP requests in flight drained meanwhile and the event streams ended after them.

        sse-starlette would end every event stream, an unanswered tool call's included, the moment the
        signal arrives; its automatic drain is off while this server runs (`serve_uvicorn`), so the
        streams end here instead, once the drain is over."""
        ending = asyncio.ensure_future(self._drain_then_end_streams())
        try:
            await super().shutdown(sockets=sockets)
        finally:
            ending.cancel()

    async def _drain_then_end_streams(self) -> None:
        try:
            if self._drain is not None:
                await self._drain.drain(drain_seconds(self.config.timeout_graceful_shutdown or 0))
        finally:
            AppStatus.should_exit = True

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def listening_url(sock: socket.socket, path: str) -> str:
    """The http URL of `path` on the address `sock` is bound to."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


class _ShutdownStreamNoise(logging.Filter):
    """Drops uvicorn's "ASGI callable returned without completing response." while the server shuts down.

    On shutdown sse-starlette ends the SDK's open event streams without their final chunk, by design,
    and uvicorn reports each as an ERROR; on every restart that would read as a failure. Outside a
    shutdown the report is kept."""

    MESSAGE = "ASGI callable returned without completing response."

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__()
        self._server = server

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._server.should_exit and record.getMessage() == self.MESSAGE)


async def serve_uvicorn(
    app: ASGIApp,
    sockets: Sequence[socket.socket],
    *,
    log_level: str,
    read_timeout: float,
    redactor: Redactor,
    drain: Drain | None = None,
    grace: float = SHUTDOWN_GRACE_SECONDS,
) -> None:
    """Serve `app` on the already bound `sockets` until SIGTERM or SIGINT; then drain `drain` within `grace`
    seconds."""
    config = uvicorn.Config(
        app,
        http=request_deadline_protocol(read_timeout),
        ws="none",  # MCP needs no WebSocket, and an upgrade would swap the protocol under the deadline
        lifespan="on",
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=math.ceil(grace),
    )
    # uvicorn has just installed its own log handlers, which the CLI's log redaction does not cover.
    install_log_redaction(redactor, [logging.getLogger("uvicorn")])
    server = Server(config, url_path="/mcp", drain=drain)
    noise = _ShutdownStreamNoise(server)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(noise)
    # sse-starlette's switches are class attributes (process-wide); this process serves one app.
    AppStatus.enable_automatic_graceful_drain = False
    try:
        await server.serve(sockets=list(sockets))
    finally:
        uvicorn_log.removeFilter(noise)
        AppStatus.should_exit = False
        AppStatus.enable_automatic_graceful_drain = True
