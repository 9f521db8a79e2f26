"""A tiny scripted HTTP/1.1 server on a real loopback socket, for byte-exact client tests.

Each accepted request gets the next scripted `RawResponse`: a status line, headers, and body pieces
written one `send` at a time (TCP_NODELAY, so pieces usually arrive as separate reads), framed with a
Content-Length, chunked encoding, or connection close. `pieces` may be endless (`itertools.repeat`):
the server writes until the client goes away, as a hostile upstream would. `abort_after` drops the
connection after that many pieces, mid-body; `hold` keeps the connection open after the pieces until
the client goes away; `piece_interval` paces the pieces (a slow but steady upstream); `then_close`
closes the connection after a complete keep-alive response, as a server whose idle timeout fired
(`closed_idle` is set once it has).
The server records every request (method, path, headers, body), counts the connections it accepted and
notices when a client disconnects.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener


@dataclass
class RawResponse:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "text/event-stream")])
    pieces: Iterable[bytes] = field(default_factory=list)
    framing: Literal["length", "chunked", "close"] = "chunked"
    abort_after: int | None = None
    hold: bool = False
    then_close: bool = False
    piece_interval: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawServer:
    port: int
    script: list[RawResponse]
    requests: list[RecordedRequest] = field(default_factory=list)
    client_gone: anyio.Event = field(default_factory=anyio.Event)
    holding: anyio.Event = field(default_factory=anyio.Event)
    closed_idle: anyio.Event = field(default_factory=anyio.Event)
    connections: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


async def _read_request(stream: SocketStream, buffer: bytearray) -> RecordedRequest | None:
    while b"\r\n\r\n" not in buffer:
        try:
            buffer.extend(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return None
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        body.extend(await stream.receive())
    buffer[:] = body[length:]
    return RecordedRequest(method, path, headers, bytes(body[:length]))


async def _respond(server: RawServer, stream: SocketStream, response: RawResponse) -> bool:
    """Write one response; True if the connection may be reused."""
    reason = {200: "OK", 202: "Accepted", 429: "Too Many Requests", 500: "Internal Server Error"}
    head = [f"HTTP/1.1 {response.status} {reason.get(response.status, 'Status')}"]
    head += [f"{name}: {value}" for name, value in response.headers]
    pieces = response.pieces
    if response.framing == "length":
        pieces = list(pieces)
        head.append(f"Content-Length: {sum(map(len, pieces))}")
    elif response.framing == "chunked":
        head.append("Transfer-Encoding: chunked")
    else:
        head.append("Connection: close")
    await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    for number, piece in enumerate(pieces, start=1):
        if response.framing == "chunked":
            piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        if number > 1 and response.piece_interval:
            await anyio.sleep(response.piece_interval)
        await stream.send(piece)
        if response.abort_after is not None and number >= response.abort_after:
            return False
    if response.hold:
        server.holding.set()
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            server.client_gone.set()
        return False
    if response.framing == "chunked":
        await stream.send(b"0\r\n\r\n")
    return response.framing != "close" and not response.then_close


@asynccontextmanager
async def raw_server(*script: RawResponse, tls: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    """Serve `script` (one response per request, in order) on 127.0.0.1:<free port>; over TLS with `tls`."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = (
        tcp if tls is None else TLSListener(tcp, tls, standard_compatible=False)
    )
    server = RawServer(port=port, script=list(script))

    async def handle(stream: SocketStream) -> None:
        server.connections += 1
        buffer = bytearray()
        async with stream:
            while True:
                request = await _read_request(stream, buffer)
                if request is None:
                    server.client_gone.set()
                    return
                server.requests.append(request)
                if not server.script:
                    await stream.send(
                        b"HTTP/1.1 599 Unscripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    return
                response = server.script.pop(0)
                try:
                    keep = await _respond(server, stream, response)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    server.client_gone.set()
                    return
                if response.then_close:
                    await stream.aclose()
                    server.closed_idle.set()
                if not keep:
                    return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
