"""The installed `alltoken-mcp` entry point over stdio, spoken to in raw JSON lines: the test writes any
bytes it likes to stdin, holds the pid (to signal it), and sees every message and every stderr line."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
INITIALIZE_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw-stdio-test", "version": "0"},
}


class RawStdioServer:
    def __init__(self, process: Process, stderr: Any) -> None:
        self.process = process
        self.messages: list[dict[str, Any]] = []
        """Everything the server wrote to stdout, in order (each line must be one JSON object)."""
        self._stderr = stderr
        self._arrived = anyio.Event()
        self._closed = False

    async def read_forever(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                *lines, buffer = (buffer + chunk).split(b"\n")
                self.messages.extend(json.loads(line) for line in lines)
                self._arrived.set()
                self._arrived = anyio.Event()
        finally:
            assert buffer == b"", f"stdout ended with a partial line: {buffer[:200]!r}"
            self._closed = True
            self._arrived.set()

    async def send_line(self, line: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line + b"\n")

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_line(json.dumps(message).encode())

    async def first(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first message matching `wanted`, waiting for it to arrive."""
        while True:
            for message in self.messages:
                if wanted(message):
                    return message
            if self._closed:
                raise AssertionError(f"the server's stdout closed before {what}")
            await self._arrived.wait()

    async def answer(self, request_id: int | str) -> dict[str, Any]:
        return await self.first(
            lambda m: m.get("id") == request_id and ("result" in m or "error" in m),
            f"request {request_id!r} was answered",
        )

    async def request(self, request_id: int | str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return await self.answer(request_id)

    async def initialize(self) -> None:
        answer = await self.request("init", "initialize", INITIALIZE_PARAMS)
        assert "result" in answer, answer
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        text: str = self._stderr.read().decode(errors="replace")
        return text


@asynccontextmanager
async def raw_stdio_server(env: dict[str, str], args: Sequence[str] = ()) -> AsyncIterator[RawStdioServer]:
    """A started and initialized server; killed on exit if the test left it running. Its stderr is shown
    if the test fails."""
    with tempfile.TemporaryFile("w+b") as errlog:
        process = await anyio.open_process([ENTRY_POINT, *args], env=env, stderr=errlog)
        server = RawStdioServer(process, errlog)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.read_forever)
                await server.initialize()
                yield server
                tg.cancel_scope.cancel()
        except BaseException:
            sys.stderr.write(f"server stderr:\n{server.stderr_text()}\n")
            raise
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()
