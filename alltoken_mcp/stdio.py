"""MCP over stdio: newline-delimited JSON-RPC on the process's stdin and stdout, where every line the
server cannot read still gets a JSON-RPC answer.

The SDK's `stdio_server()` turns a line that fails to parse or validate into an exception item on the
session's read stream, and the server side logs it at DEBUG and drops it: the client's request is never
answered and the client waits forever. That is what happens to a lone UTF-16 surrogate escape such as
"\\ud800" (the SDK's JSON parser refuses it) and to nesting deeper than the parser's ~200 levels. This
transport reads the lines itself, hands every valid message to the server unchanged, and answers the rest:
-32700 when the line is not JSON the server can parse, -32600 when it is JSON but not a JSON-RPC message,
with the request's id when the line has one (found without a recursive parse, so depth cannot hide it).

Like the SDK's transport it serves from private duplicates of fd 0 and 1 while pointing fd 0 at the null
device and fd 1 at stderr, so stray prints cannot corrupt the protocol stream. Reads and writes happen in
daemon threads: a blocking read or write of a pipe cannot be interrupted, and the process must still be
able to exit on SIGTERM while the host keeps stdin open, or has stopped reading stdout.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as t
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server import MCPServer
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
FINISH_WRITE_SECONDS = 1.0


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve `server` on this process's stdin/stdout until stdin closes (what `run_stdio_async` does,
    with this transport)."""
    lowlevel = server._lowlevel_server
    async with stdio_streams() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[
    tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
]:
    """The (read, write) stream pair the low-level server runs on, for the process's stdin/stdout."""
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](0)
    lines_send, lines = anyio.create_memory_object_stream[list[bytes]](0)
    with _claimed_std_fds() as (in_fd, out_fd):
        async with BlockingPortal() as portal, anyio.create_task_group() as tg:
            pump = threading.Thread(
                target=_pump_stdin, args=(in_fd, portal, lines_send), name="stdin reader", daemon=True
            )
            pump.start()
            reading = anyio.CancelScope()
            tg.start_soon(_read_messages, reading, lines, incoming_send, outgoing.clone())
            tg.start_soon(_write_messages, out_fd, portal, outgoing_receive)
            try:
                yield incoming, outgoing
            finally:
                # Stdin may still be open (the server was stopped, not fed EOF): stop reading it. What
                # the server already sent is written out; then the writer ends.
                reading.cancel()
                outgoing.close()


def _pump_stdin(fd: int, portal: BlockingPortal, lines: MemoryObjectSendStream[list[bytes]]) -> None:
    """Thread body: hand stdin's complete lines to the event loop, a batch per read (one hand-over for a
    large message, not one per pipe buffer), until EOF (a read error counts as EOF) or until the
    transport stops listening."""
    partial = bytearray()  # (appending to bytes would copy a long line once per read)
    try:
        while data := _read(fd):
            *complete, rest = data.split(b"\n")
            if complete:
                complete[0] = bytes(partial) + complete[0]
                partial.clear()
                portal.call(lines.send, complete)
            partial += rest
        if partial:  # a last line without its newline
            portal.call(lines.send, [bytes(partial)])
        portal.call(lines.aclose)
    except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return  # the portal or the stream is closed: the transport has shut down


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, READ_CHUNK)
    except OSError:
        return b""


async def _read_messages(
    scope: anyio.CancelScope,
    lines: MemoryObjectReceiveStream[list[bytes]],
    incoming: MemoryObjectSendStream[SessionMessage | Exception],
    replies: MemoryObjectSendStream[SessionMessage],
) -> None:
    # Closing `incoming` at EOF is what tells the server stdin has ended.
    with scope, lines, incoming, replies:
        async for batch in lines:
            for line in batch:
                await _deliver(line, incoming, replies)


async def _deliver(
    raw: bytes,
    incoming: MemoryObjectSendStream[SessionMessage | Exception],
    replies: MemoryObjectSendStream[SessionMessage],
) -> None:
    line = raw.decode("utf-8", errors="replace")  # as the SDK's transport reads stdin
    if not line.strip():
        return
    try:
        message = t.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        refusal = refuse(line, exc)
        if refusal is not None:
            await replies.send(SessionMessage(refusal))
        return
    await incoming.send(SessionMessage(message))


async def _write_messages(
    out_fd: int, portal: BlockingPortal, outgoing: MemoryObjectReceiveStream[SessionMessage]
) -> None:
    """Write each message the server sends as one line. The writes happen in a daemon thread, for the
    reason reads do: a write to a pipe the host no longer reads blocks, and must not keep the process
    alive after SIGTERM. The messages ready when a write is handed over go in that one write (a burst of
    answers costs one round trip to the thread, not one each)."""
    writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
    threading.Thread(target=_drain, args=(out_fd, portal, writes), name="stdout writer", daemon=True).start()
    try:
        async with outgoing:
            async for item in outgoing:
                lines = [_line(item)]
                while True:
                    try:
                        lines.append(_line(outgoing.receive_nowait()))
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                write = _Write(b"".join(lines))
                writes.put(write)
                try:
                    await write.done.wait()
                except anyio.get_cancelled_exc_class():
                    # Shutting down: finish the line being written, unless the host stopped reading.
                    with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_WRITE_SECONDS):
                        await write.done.wait()
                    raise
                if write.error is not None:
                    raise write.error
    finally:
        writes.put(None)


def _line(item: SessionMessage) -> bytes:
    return item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


@dataclass
class _Write:
    data: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    error: OSError | None = None


def _drain(fd: int, portal: BlockingPortal, writes: queue.SimpleQueue[_Write | None]) -> None:
    """Thread body: perform the writes, each reported done to the event loop, until told to stop."""
    while (write := writes.get()) is not None:
        try:
            view = memoryview(write.data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            write.error = exc
        try:
            portal.call(write.done.set)
        except RuntimeError:
            return  # the portal is closed: the transport has shut down


@contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private duplicates of fd 0 and 1 for the protocol; fd 0 reads the null device and fd 1 writes to
    stderr meanwhile (both restored on exit). The duplicates are never closed: the reader thread may
    still be blocked on its descriptor, which must not be recycled under it."""
    in_fd, out_fd = _dup_above_std(0), _dup_above_std(1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        yield in_fd, out_fd
    finally:
        os.dup2(out_fd, 1)
        os.dup2(in_fd, 0)


def _dup_above_std(fd: int) -> int:
    """A duplicate of `fd` that is not 0, 1 or 2 (one of those may be closed at start-up, and the dup2
    calls above must not overwrite the duplicate)."""
    low: list[int] = []
    duplicate = os.dup(fd)
    while duplicate <= 2:
        low.append(duplicate)
        duplicate = os.dup(fd)
    for spare in low:
        os.close(spare)
    return duplicate


# ------------------------------------------------------------------------------------------- refusals


@dataclass(frozen=True)
class Envelope:
    """What can be told about a JSON object's top level without parsing its nested values."""

    request_id: int | str | None = None
    has_method: bool = False
    has_outcome: bool = False  # a "result" or "error" member: a response to one of the server's requests


def refuse(line: str, error: ValidationError) -> t.JSONRPCError | None:
    """The JSON-RPC error answering a line the SDK's message parser refused, or None when the line is a
    malformed response (answering it would look like an answer to the client's own request with that
    id)."""
    envelope = envelope_of(line)
    problem = error.errors(include_url=False)[0]
    if problem["type"] == "json_invalid":
        code, text = t.PARSE_ERROR, f"Parse error: {_explain_json(problem['msg'])}"
    else:
        code, text = t.INVALID_REQUEST, f"Invalid request: {_explain_shape(error, envelope)}"
    if envelope.has_outcome and not envelope.has_method:
        logger.warning("stdin: dropped a malformed response from the client: %s", text)
        return None
    request_id = envelope.request_id if envelope.has_method else None
    logger.info("stdin: refused a message (id %r): %s", request_id, text)
    return t.JSONRPCError(jsonrpc="2.0", id=request_id, error=t.ErrorData(code=code, message=text))


def _explain_json(detail: str) -> str:
    if "recursion limit" in detail:
        return f"arrays and objects nest deeper than the JSON parser allows (about 200 levels) ({detail})"
    if "surrogate" in detail or "hex escape" in detail:
        return (
            "a string holds a lone UTF-16 surrogate escape (like \\ud800), which is not valid Unicode; "
            f"send the character itself or a complete surrogate pair ({detail})"
        )
    return detail


def _explain_shape(error: ValidationError, envelope: Envelope) -> str:
    member = "JSONRPCRequest" if envelope.request_id is not None else "JSONRPCNotification"
    for problem in error.errors(include_url=False):
        loc = problem["loc"]
        if envelope.has_method and len(loc) > 1 and loc[0] == member:
            return f"{'.'.join(str(part) for part in loc[1:])}: {problem['msg']}"
    return 'not a JSON-RPC 2.0 message: expected an object with "jsonrpc": "2.0" and a "method"'


_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def envelope_of(line: str) -> Envelope:
    """The top-level "id", "method" and "result"/"error" members of the JSON object on `line`.

    Scans iteratively and decodes only scalars, so a line too deep or too odd for a full parse (the
    reason it is being refused) still yields its id. Where the line stops making sense (cut short, a
    syntax error), the members read before that point are the answer; a line that is not an object
    yields an empty envelope."""
    request_id: int | str | None = None
    keys: set[str] = set()
    try:
        pos = _skip_space(line, 0)
        if line[pos] != "{":
            return Envelope()
        pos = _skip_space(line, pos + 1)
        while line[pos] == '"':
            key, pos = _DECODER.raw_decode(line, pos)
            pos = _skip_space(line, pos)
            if line[pos] != ":":
                break
            pos = _skip_space(line, pos + 1)
            if key == "id" and line[pos] not in "[{":
                value, pos = _DECODER.raw_decode(line, pos)
                valid = isinstance(value, (int, str)) and not isinstance(value, bool)
                request_id = value if valid else None
            else:
                pos = _skip_value(line, pos)
            keys.add(key)  # (only once its value was read whole)
            pos = _skip_space(line, pos)
            if line[pos] != ",":
                break
            pos = _skip_space(line, pos + 1)
    except (ValueError, IndexError):
        pass
    return Envelope(request_id, "method" in keys, bool(keys & {"result", "error"}))


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # (the pattern matches the empty string)
    return match.end()


def _skip_value(text: str, pos: int) -> int:
    """The position after the JSON value starting at `pos`, counting brackets instead of recursing."""
    depth = 0
    while True:
        pos = _skip_space(text, pos)
        char = text[pos]
        if char in "[{":
            depth, pos = depth + 1, pos + 1
        elif char in "]}":
            depth, pos = depth - 1, pos + 1
            if depth < 0:
                raise ValueError("unbalanced brackets")
        elif char in ",:" and depth > 0:
            pos += 1
            continue
        else:
            _, pos = _DECODER.raw_decode(text, pos)  # a string, number, true, false or null
        if depth == 0:
            return pos
