"""Our own Server-Sent Events reader, and the chat-stream assembler built on it.

Why not the OpenAI SDK's reader: AllToken sends the price of a chat turn as an SSE *comment* line after
`data: [DONE]` (alltoken-api.md §2.3 item 7), and standard readers stop at `[DONE]` or drop comments.

`SSEDecoder` is a pure, synchronous state machine: feed it raw byte chunks split anywhere (mid-line,
mid-UTF-8 character, between CR and LF) and it returns complete events and comments. It splits with
`bytes.splitlines`, which recognises exactly the SSE line terminators (LF, CRLF, CR) at C speed; no
per-byte Python loop. A CR that ends a chunk is remembered so that an LF opening the next chunk is not
mistaken for a blank line.

`ChatAssembler` turns decoded events into `ChatEvent` fragments and a final `ChatResult`;
`ChatStream` drives both over an async iterator of byte chunks and keeps reading after `[DONE]` to
catch the cost comment.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import anyio
import httpx2
from pydantic_core import from_json

from alltoken_mcp import budget
from alltoken_mcp.client.models import ChatEvent, ChatResult, Cost, ToolCall, Usage
from alltoken_mcp.errors import StreamError

# A single SSE line longer than this is not a chat stream; refuse it rather than buffer without bound.
MAX_LINE_BYTES = 16 * 1024 * 1024
# One event's data (its lines joined) may not exceed a line's bound, nor gather more lines than this:
# each line is an object of its own, so a stream of one-byte `data:` lines costs ~50 bytes per byte.
MAX_EVENT_LINES = 65536
# What a new tool call counts against the answer bound besides its text: its accumulator's memory, so
# an endless stream of new call indexes reaches the bound as surely as endless text.
TOOL_CALL_CHARS = 1024
# How long to wait after `[DONE]` for the cost comment before giving up on it; and how long before the
# call's budget ends that wait stops at the latest, so a complete answer is never reported cut short.
DEFAULT_DONE_GRACE_SECONDS = 5.0
DONE_MARGIN_SECONDS = 0.2
# The most answer a stream may assemble (text, reasoning and tool-call arguments together): far above
# any model's output limit, and a bound on memory when an upstream streams without end.
DEFAULT_MAX_CHARS = 1_000_000
_SNIPPET = 200
_BOM = b"\xef\xbb\xbf"


def snippet(text: str | bytes, limit: int = _SNIPPET) -> str:
    """A one-line excerpt for error messages."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


class SSEEvent(NamedTuple):
    event: str
    raw: bytes  # the data field's bytes (multi-line data joined with LF); decoded lazily by `data`
    id: str | None

    @property
    def data(self) -> str:
        return self.raw.decode("utf-8", "replace")


class SSEComment(NamedTuple):
    text: str


SSEItem = SSEEvent | SSEComment


class SSEDecoder:
    """Bytes in, events and comments out (the WHATWG event-stream interpretation rules)."""

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line_bytes
        self._partial: list[bytes] = []  # pieces of an unterminated line
        self._partial_len = 0
        self._skip_lf = False  # the previous chunk ended with CR
        self._started = False
        self._head = b""
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._has_data = False
        self._event: bytes | None = None
        self._last_id: str | None = None
        self.bytes_received = 0
        self.last_line = b""

    def feed(self, chunk: bytes) -> list[SSEItem]:
        self.bytes_received += len(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if not self._started:
            # A UTF-8 byte order mark may open the stream, possibly split across chunks.
            head = self._head + chunk
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return []
            self._started = True
            self._head = b""
            chunk = head[3:] if head.startswith(_BOM) else head
            if not chunk:
                return []
        if b"\n" not in chunk and b"\r" not in chunk:
            # Mid-line: just remember the piece (joining now would make long lines quadratic).
            self._partial.append(chunk)
            self._partial_len += len(chunk)
            if self._partial_len > self._max_line:
                raise StreamError(
                    f"AllToken stream sent a line longer than {self._max_line} bytes "
                    f"(after {self.bytes_received} bytes); starts with {snippet(self._partial[0])!r}"
                )
            return []
        if self._partial:
            self._partial.append(chunk)
            buf = b"".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
        else:
            buf = chunk
        lines = buf.splitlines()
        last = buf[-1]
        if last == 0x0D:  # CR: complete, but an LF may follow in the next chunk
            self._skip_lf = True
        elif last != 0x0A:
            tail = lines.pop()
            self._partial.append(tail)
            self._partial_len = len(tail)
        return self._process(lines)

    def close(self) -> list[SSEItem]:
        """End of stream: an unterminated last line still counts, then a pending event is dispatched."""
        lines = []
        if self._head:  # the stream ended inside what could have been a byte order mark
            self._partial.append(self._head)
            self._head = b""
        if self._partial:
            lines.append(b"".join(self._partial))
            self._partial.clear()
            self._partial_len = 0
        items = self._process(lines)
        if self._has_data:
            items.append(self._dispatch())
        return items

    @property
    def pending_partial(self) -> bytes:
        return b"".join(self._partial)

    def _dispatch(self) -> SSEEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = self._event.decode("utf-8", "replace") if self._event else "message"
        self._data = []
        self._data_bytes = 0
        self._has_data = False
        self._event = None
        return SSEEvent(event, data, self._last_id)

    def _add_data(self, value: bytes) -> None:
        self._data.append(value)
        self._data_bytes += len(value) + 1
        self._has_data = True
        if self._data_bytes > self._max_line or len(self._data) > MAX_EVENT_LINES:
            raise StreamError(
                f"AllToken stream sent an event of more than {len(self._data)} data lines / "
                f"{self._data_bytes} bytes without ending it (after {self.bytes_received} bytes)"
            )

    def _process(self, lines: list[bytes]) -> list[SSEItem]:
        items: list[SSEItem] = []
        append = items.append
        for line in lines:
            if not line:
                if self._has_data:
                    append(self._dispatch())
                else:
                    self._event = None
                continue
            self.last_line = line
            if line.startswith(b"data:"):
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
                self._add_data(value)
                continue
            if line[0] == 0x3A:  # ':' → comment
                text = line[1:]
                if text[:1] == b" ":
                    text = text[1:]
                append(SSEComment(text.decode("utf-8", "replace")))
                continue
            name, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":  # "data" with no colon: an empty data line
                self._add_data(value)
            elif name == b"event":
                self._event = value
            elif name == b"id" and b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
            # "retry" and unknown fields are ignored: we never reconnect a chat stream.
        return items


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEItem]:
    """Convenience: decode an async byte-chunk iterator into SSE events and comments."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for item in decoder.feed(chunk):
            yield item
    for item in decoder.close():
        yield item


def parse_cost_comment(text: str) -> Cost | None:
    """`{"cost": "0.0000188000", …}` → Cost; any other comment (keep-alives, notes) → None."""
    text = text.strip()
    if not text.startswith("{") or '"cost"' not in text:
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("cost") is None:
        return None
    try:
        return Cost.model_validate(payload)
    except ValueError:
        return None


class _ToolCallAcc:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []


class ChatAssembler:
    """Chunks of `chat.completion.chunk` JSON → fragments as they come, and the whole answer at the end."""

    def __init__(self, *, request_id: str | None = None, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.request_id = request_id
        self.max_chars = max_chars
        self.chars = 0
        self.truncated = False
        self.id: str | None = None
        self.model: str | None = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, _ToolCallAcc] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.cost: Cost | None = None
        self.done = False
        self.chunks = 0
        self.extras: dict[str, Any] = {}

    def feed_event(self, event: SSEEvent, out: Callable[[ChatEvent], None]) -> None:
        data = event.raw
        if self.done:
            return  # nothing but the cost comment is expected after [DONE]
        if data == b"[DONE]":
            self.done = True
            return
        if event.event != "message":
            if event.event == "error":
                raise StreamError(
                    f"AllToken sent an error event mid-stream after {self.chunks} chunks: {snippet(data)!r}"
                )
            return  # unknown named events are not chat chunks
        try:
            # pydantic_core's parser reads bytes directly and is ~3x faster than json.loads here.
            chunk = from_json(data)
        except ValueError:
            raise StreamError(
                f"AllToken stream carried malformed JSON after {self.chunks} chunks: {snippet(data)!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise StreamError(
                f"AllToken stream carried a non-object chunk after {self.chunks} chunks: {snippet(data)!r}"
            )
        self.chunks += 1
        self._apply(chunk, out)

    def feed_comment(self, comment: SSEComment) -> None:
        cost = parse_cost_comment(comment.text)
        if cost is not None:
            self.cost = cost

    def _apply(self, chunk: dict[str, Any], out: Callable[[ChatEvent], None]) -> None:
        # Hot path (one call per token): `in` tests and one lookup per present key, no repeated .get().
        if chunk.get("error"):
            self._raise_mid_stream_error(chunk["error"])
        if self.id is None and "id" in chunk:
            self.id = chunk["id"]
        if chunk.get("model"):
            self.model = chunk["model"]
        if "x-gateway-request-id" in chunk and not self.request_id:
            self.request_id = chunk["x-gateway-request-id"]
        if "usage" in chunk:
            usage = chunk["usage"]
            if isinstance(usage, dict):
                self.usage = Usage.model_validate(usage)
        if "conversation_id" in chunk and chunk["conversation_id"] is not None:
            self.extras["conversation_id"] = chunk["conversation_id"]
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is not assembled: ChatResult is one answer
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or choice.get("message")
            if not isinstance(delta, dict) or not delta:
                continue
            if "content" in delta:
                content = delta["content"]
                if content and isinstance(content, str):
                    if "reasoning_content" in delta or "reasoning" in delta:
                        self._reasoning(delta, out)
                    self._count(len(content))
                    self.content.append(content)
                    out(ChatEvent("content", content))
                    if delta.get("tool_calls"):
                        self._apply_tool_calls(delta["tool_calls"], out)
                    continue
            self._reasoning(delta, out)
            if delta.get("tool_calls"):
                self._apply_tool_calls(delta["tool_calls"], out)

    def _reasoning(self, delta: dict[str, Any], out: Callable[[ChatEvent], None]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._count(len(reasoning))
            self.reasoning.append(reasoning)
            out(ChatEvent("reasoning", reasoning))

    def _raise_mid_stream_error(self, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        request_id = error.get("request_id") if isinstance(error, dict) else None
        raise StreamError(
            f"AllToken reported an error mid-stream after {self.chunks - 1} chunks"
            f"{f' ({code})' if code else ''}: {snippet(str(message))}"
            f"{f' (request_id {request_id})' if request_id else ''}"
        )

    def _apply_tool_calls(self, tool_calls: Any, out: Callable[[ChatEvent], None]) -> None:
        if not isinstance(tool_calls, list):
            return
        for position, fragment in enumerate(tool_calls):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            if not isinstance(index, int):
                index = position
            acc = self.tool_calls.get(index)
            if acc is None:
                acc = self.tool_calls[index] = _ToolCallAcc()
                self._count(TOOL_CALL_CHARS)
            if fragment.get("id"):
                acc.id = fragment["id"]
            if fragment.get("type"):
                acc.type = fragment["type"]
            self._count(1)  # even an empty fragment: an endless stream of them must reach the bound
            function = fragment.get("function") or {}
            name = function.get("name") if isinstance(function, dict) else None
            if name and not acc.name:
                acc.name = name
            args = function.get("arguments") if isinstance(function, dict) else None
            if not isinstance(args, str):
                args = "" if args is None else json.dumps(args)
            if args:
                self._count(len(args))
                acc.arguments.append(args)
            out(ChatEvent("tool_call", args, index, acc.id, acc.name or None))

    def _count(self, chars: int) -> None:
        self.chars += chars
        if self.chars > self.max_chars:
            self.truncated = True

    def result(self) -> ChatResult:
        return ChatResult(
            id=self.id,
            model=self.model,
            text="".join(self.content),
            reasoning="".join(self.reasoning) if self.reasoning else None,
            tool_calls=[
                ToolCall(id=acc.id, type=acc.type, name=acc.name, arguments="".join(acc.arguments))
                for _, acc in sorted(self.tool_calls.items())
            ],
            finish_reason=self.finish_reason,
            usage=self.usage,
            cost=self.cost,
            request_id=self.request_id,
            truncated=self.truncated,
            **self.extras,
        )


def chat_result_from_completion(payload: dict[str, Any], *, request_id: str | None = None) -> ChatResult:
    """A non-streaming `chat.completion` body → ChatResult (choice 0)."""
    choices = payload.get("choices") or []
    choice: dict[str, Any] = next(
        (c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0),
        choices[0] if choices and isinstance(choices[0], dict) else {},
    )
    raw_message = choice.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    usage = payload.get("usage")
    extras = (
        {"conversation_id": payload["conversation_id"]} if payload.get("conversation_id") is not None else {}
    )
    return ChatResult(
        id=payload.get("id"),
        model=payload.get("model"),
        text=content if isinstance(content, str) else "",
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        tool_calls=[
            ToolCall.model_validate(tc) for tc in message.get("tool_calls") or [] if isinstance(tc, dict)
        ],
        finish_reason=choice.get("finish_reason"),
        usage=Usage.model_validate(usage) if isinstance(usage, dict) else None,
        request_id=payload.get("x-gateway-request-id") or request_id,
        **extras,
    )


class ChatStream:
    """Async iterator of `ChatEvent`s over raw SSE bytes; `result()` once it is exhausted.

    Raises `StreamError` when the stream ends before `[DONE]`, breaks off, or carries malformed data;
    the message says how much was received and quotes the offending line. Once the answer passes
    `max_chars` it stops reading and finishes with what it has, marked `truncated`.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        request_id: str | None = None,
        done_grace: float = DEFAULT_DONE_GRACE_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self._chunks = chunks
        self._decoder = SSEDecoder()
        self._assembler = ChatAssembler(request_id=request_id, max_chars=max_chars)
        self._pending: deque[ChatEvent] = deque()
        self._done_grace = done_grace
        self._finished = False
        self._result: ChatResult | None = None

    @classmethod
    def from_result(cls, result: ChatResult) -> ChatStream:
        """A stream that replays a finished answer (a server that ignored `stream: true`)."""

        async def nothing() -> AsyncIterator[bytes]:
            nothing_at_all: tuple[bytes, ...] = ()
            for piece in nothing_at_all:  # an async generator that yields nothing
                yield piece

        stream = cls(nothing())
        if result.reasoning:
            stream._pending.append(ChatEvent(kind="reasoning", text=result.reasoning))
        if result.text:
            stream._pending.append(ChatEvent(kind="content", text=result.text))
        for index, call in enumerate(result.tool_calls):
            stream._pending.append(
                ChatEvent(
                    kind="tool_call", text=call.arguments, index=index, tool_call_id=call.id, name=call.name
                )
            )
        stream._finished = True
        stream._result = result
        return stream

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatEvent:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._finished:
                raise StopAsyncIteration
            if self._assembler.truncated:
                self._finish()
                continue
            if self._assembler.done:
                await self._read_after_done()
                self._finish()
                continue
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                try:
                    self._consume(self._decoder.close())
                except StreamError:
                    if self._assembler.done:
                        raise
                    # The last event was cut off by the end of the stream: say so, not "malformed".
                    raise StreamError(self._describe("ended before [DONE], inside an event")) from None
                if not self._assembler.done:
                    raise StreamError(self._describe("ended before [DONE]")) from None
                self._finish()
                continue
            except httpx2.TransportError as exc:
                raise StreamError(self._describe(f"broke off ({type(exc).__name__}: {exc})")) from exc
            self._consume(self._decoder.feed(chunk))

    def result(self) -> ChatResult:
        if self._result is None:
            raise RuntimeError(
                "ChatStream.result() is available only after the stream has been read to its end"
            )
        return self._result

    @property
    def bytes_received(self) -> int:
        return self._decoder.bytes_received

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    def _finish(self) -> None:
        self._finished = True
        self._result = self._assembler.result()

    def _consume(self, items: list[SSEItem]) -> None:
        assembler = self._assembler
        out = self._pending.append
        for item in items:
            if type(item) is SSEEvent:
                assembler.feed_event(item, out)
            else:
                assert isinstance(item, SSEComment)
                assembler.feed_comment(item)

    async def _read_after_done(self) -> None:
        # The cost comment follows [DONE]; read until the server closes, for a bounded time that ends
        # before the call's budget does, and keep what we already have if the tail breaks or misbehaves:
        # the answer itself is complete.
        grace = min(self._done_grace, max(0.0, budget.remaining() - DONE_MARGIN_SECONDS))
        with anyio.move_on_after(grace):
            try:
                async for chunk in self._chunks:
                    self._consume(self._decoder.feed(chunk))
            except (httpx2.TransportError, StreamError):
                return
            self._consume(self._decoder.close())

    def _describe(self, what: str) -> str:
        a = self._assembler
        text = (
            f"AllToken chat stream {what}: received {a.chunks} chunks, {self._decoder.bytes_received} bytes, "
            f"{sum(map(len, a.content))} characters of text"
        )
        tail = self._decoder.pending_partial or self._decoder.last_line
        if tail:
            text += f"; last line {snippet(tail)!r}"
        return text
