"""The client's connection pool: httpx2's transport on httpcore2's anyio network backend, with a cheap
answer to "has the server closed this idle connection?".

Whenever a request enters the pool or a response is closed, httpcore2's pool asks every idle
connection whether its socket is readable (bytes waiting on an idle HTTP/1.1 connection can only be the
server's close). The stock stream answers through anyio's typed attributes, which rebuild a mapping of
every socket attribute, with a getpeername() system call, for each lookup: with 64 warm connections a
burst of 64 chats made thousands of them, about a fifth of the server's CPU. Here each stream looks its
socket up once, when the connection opens, and registers it with a poll object of its own, so a probe is
one poll(0) system call. What the probe answers is unchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2


class ProbedStream(httpcore2.AsyncNetworkStream):
    """A network stream that answers `is_readable` from the socket it was opened on."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._poll: Any = None  # select.poll, where the platform has it
        if self._socket is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._socket, select.POLLIN)

    def is_readable(self) -> bool:
        """Whether a read would return at once. A socket that is gone counts as readable: the next read
        on it would return the end of the stream."""
        if self._socket is None or self._socket.fileno() < 0:
            return True
        if self._poll is None:
            readable, _, _ = select.select([self._socket], [], [], 0)
            return bool(readable)
        return bool(self._poll.poll(0))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self.is_readable()
        return self._inner.get_extra_info(info)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        return ProbedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))


class ProbedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's anyio backend, its streams wrapped in `ProbedStream`."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return ProbedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        return ProbedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pooled_client(*, limits: httpx2.Limits, **options: Any) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` whose direct connections go through a `ProbedBackend` pool.

    The pool is mounted for every URL rather than passed as `transport=`, which would turn off the
    environment's proxy settings: a proxied or NO_PROXY-exempt URL still goes where httpx2 sends it. One
    SSL context (the CA bundle, read once) serves every transport.
    """
    ssl_context = httpx2.create_ssl_context()
    transport = httpx2.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    # httpx2's transport takes no network backend, so its pool is replaced by one configured the same
    # way (what AsyncHTTPTransport passes for a direct connection) on ours.
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=ProbedBackend(),
    )
    return httpx2.AsyncClient(verify=ssl_context, limits=limits, mounts={"all://": transport}, **options)
