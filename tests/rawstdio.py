"""The installed `alltoken-mcp` entry point as a subprocess, spoken to in raw JSON lines over its pipes.

The test holds the pid (to signal or `kill -9` it), can write any bytes it likes to stdin, and sees every
message on stdout and every line on stderr. `stdio_servers` starts several on one home (as several host
sessions would), `stdio_server` one; both show the servers' stderr when the test fails and never leave a
process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import IO, Any, Literal

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
INITIALIZE_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw-stdio-test", "version": "0"},
}


class ServerGone(Exception):
    """The server's stdout closed before it answered."""


class StdioServer:
    """One `alltoken-mcp` stdio process.

    Two ways to talk to it: `request`/`tool`/`start_tool` number requests themselves and return results
    (for tests about what the server does), `write`/`write_line`/`reply`/`first` send and read anything
    (for tests about the protocol itself).
    """

    def __init__(self, process: Process, errlog: IO[bytes] | None) -> None:
        self.process = process
        self.messages: list[dict[str, Any]] = []
        """Everything the server wrote to stdout, in order (each line must be one JSON object)."""
        self._errlog = errlog  # stderr in a file, or None: a pipe read into `_stderr` (`wait_for_stderr`)
        self._stderr = ""
        self._next_id = 0
        self._stdout_arrived = anyio.Event()
        self._stderr_arrived = anyio.Event()
        self._stdout_closed = self._stderr_closed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    # ------------------------------------------------------------------------------------ reading

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                *lines, buffer = (buffer + chunk).split(b"\n")
                self.messages.extend(json.loads(line) for line in lines)
                self._stdout_arrived.set()
                self._stdout_arrived = anyio.Event()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            assert buffer == b"", f"stdout ended with a partial line: {buffer[:200]!r}"
            self._stdout_closed = True
            self._stdout_arrived.set()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        try:
            async for text in TextReceiveStream(self.process.stderr):
                self._stderr += text
                self._stderr_arrived.set()
                self._stderr_arrived = anyio.Event()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._stderr_closed = True
            self._stderr_arrived.set()

    def stderr_text(self) -> str:
        if self._errlog is None:
            return self._stderr
        self._errlog.seek(0)
        return self._errlog.read().decode(errors="replace")

    async def wait_for_stderr(self, phrase: str) -> None:
        """Until `phrase` is logged (servers started with `stderr="pipe"`)."""
        assert self._errlog is None, "stderr goes to a file: start the server with stderr='pipe'"
        while phrase not in self._stderr:
            if self._stderr_closed:
                raise AssertionError(f"the server closed stderr without logging {phrase!r}")
            await self._stderr_arrived.wait()

    # ------------------------------------------------------------------------ any message at all

    async def write_line(self, line: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line + b"\n")

    async def write(self, message: dict[str, Any]) -> None:
        await self.write_line(json.dumps(message).encode())

    async def first(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first message matching `wanted`, waiting for it to arrive."""
        while True:
            for message in self.messages:
                if wanted(message):
                    return message
            if self._stdout_closed:
                raise ServerGone(f"the server's stdout closed before {what}")
            await self._stdout_arrived.wait()

    async def reply(self, request_id: int | str) -> dict[str, Any]:
        """The whole answer to `request_id`: a result or an error."""
        return await self.first(
            lambda m: m.get("id") == request_id and ("result" in m or "error" in m),
            f"request {request_id!r} was answered",
        )

    async def exchange(self, request_id: int | str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return await self.reply(request_id)

    # ------------------------------------------------------------------------- numbered requests

    async def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting for its answer; returns its id."""
        self._next_id += 1
        request_id = self._next_id  # (other tasks may send while this one awaits the write)
        await self.write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return request_id

    async def answer(self, request_id: int) -> dict[str, Any]:
        """The result of request `request_id` (a JSON-RPC error fails the test)."""
        message = await self.reply(request_id)
        assert "result" in message, message
        result: dict[str, Any] = message["result"]
        return result

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.answer(await self.send(method, params))

    async def initialize(self) -> None:
        answer = await self.exchange("init", "initialize", INITIALIZE_PARAMS)
        assert "result" in answer, answer
        await self.write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def start_tool(self, name: str, arguments: dict[str, Any]) -> int:
        """Call a tool without waiting for the result (the test kills the server meanwhile)."""
        return await self.send("tools/call", {"name": name, "arguments": arguments})

    async def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A tool's structuredContent; the call must succeed."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        texts = " ".join(c.get("text", "") for c in result["content"])
        assert not result.get("isError"), f"{name} failed: {texts}"
        structured: dict[str, Any] = result["structuredContent"]
        return structured

    async def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        await self.process.wait()


@asynccontextmanager
async def stdio_servers(
    envs: Sequence[Mapping[str, str]],
    args: Sequence[str] = (),
    *,
    stderr: Literal["file", "pipe"] = "file",
    stop: Literal["kill", "sigterm"] = "kill",
    initialize_within: float = 60,
) -> AsyncIterator[list[StdioServer]]:
    """One started and initialized server per env (they start up in parallel).

    stderr: "file" (a temporary file; a file-size limit set on the server would apply to it) or "pipe"
    (read as it comes, for `wait_for_stderr`). stop: "kill" leaves the clean exit to tests that are
    about it; "sigterm" stops each server as a host would and asserts it exits with status 0.
    """
    async with AsyncExitStack() as stack:
        servers: list[StdioServer] = []
        try:
            for env in envs:
                errlog = None
                if stderr == "file":
                    errlog = stack.enter_context(tempfile.TemporaryFile("w+b"))  # noqa: SIM115 (the stack closes it)
                process = await anyio.open_process(
                    [ENTRY_POINT, *args], env=env, stderr=errlog if errlog is not None else subprocess.PIPE
                )
                stack.push_async_callback(_reap, process)
                servers.append(StdioServer(process, errlog))
            async with anyio.create_task_group() as tg:
                for server in servers:
                    tg.start_soon(server.read_stdout)
                    if server.process.stderr is not None:
                        tg.start_soon(server.read_stderr)
                with anyio.fail_after(initialize_within):
                    for server in servers:
                        await server.initialize()
                yield servers
                if stop == "sigterm":
                    for server in servers:
                        server.process.send_signal(signal.SIGTERM)
                        assert await server.process.wait() == 0, server.stderr_text()
                tg.cancel_scope.cancel()
        except BaseException:
            for server in servers:
                sys.stderr.write(f"server {server.pid} stderr:\n{server.stderr_text()}\n")
            raise


@asynccontextmanager
async def stdio_server(
    env: Mapping[str, str],
    args: Sequence[str] = (),
    *,
    stderr: Literal["file", "pipe"] = "file",
    stop: Literal["kill", "sigterm"] = "kill",
) -> AsyncIterator[StdioServer]:
    async with stdio_servers([env], args, stderr=stderr, stop=stop) as (server,):
        yield server


async def _reap(process: Process) -> None:
    if process.returncode is None:
        process.kill()
    with anyio.CancelScope(shield=True):
        await process.aclose()
