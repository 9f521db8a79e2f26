"""The SSE decoder and chat-stream assembler, fed byte chunks directly (a unit of parsing: no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import pytest

from alltoken_mcp.client import ChatEvent, ChatStream, SSEComment, SSEDecoder, SSEEvent, iter_sse
from alltoken_mcp.errors import StreamError

COST_LINE = (
    b': {"cost":"0.0000188000","input_price":"0.0002000000","output_price":"0.0012500000",'
    b'"prompt_tokens":19,"completion_tokens":12}\n\n'
)


def decode_all(pieces: list[bytes]) -> list[SSEEvent | SSEComment]:
    decoder = SSEDecoder()
    items: list[SSEEvent | SSEComment] = []
    for piece in pieces:
        items.extend(decoder.feed(piece))
    items.extend(decoder.close())
    return items


def chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "deepseek-v4-pro",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def usage_chunk(prompt: int = 19, completion: int = 12) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": 4},
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    return b"data: " + json.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage}).encode() + b"\n\n"


def full_stream() -> bytes:
    return b"".join(
        [
            b": keep-alive\n\n",
            chunk({"role": "assistant"}),
            chunk({"reasoning_content": "Let me think… "}),
            chunk({"reasoning_content": "done."}),
            chunk({"content": "Grüße, "}),
            chunk({"content": "世界 🌍"}),
            chunk(finish="stop"),
            usage_chunk(),
            b"data: [DONE]\n\n",
            COST_LINE,
        ]
    )


async def feed(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def run_stream(pieces: list[bytes], **kwargs: Any) -> tuple[list[ChatEvent], ChatStream]:
    stream = ChatStream(feed(pieces), **kwargs)
    events = [event async for event in stream]
    return events, stream


def test_lf_crlf_and_cr_line_endings_decode_identically() -> None:
    lf = b"event: note\nid: 7\ndata: one\ndata: two\n\n: hello\ndata: three\n\n"
    expected = decode_all([lf])
    assert expected == [
        SSEEvent("note", b"one\ntwo", "7"),
        SSEComment("hello"),
        SSEEvent("message", b"three", "7"),
    ]
    assert decode_all([lf.replace(b"\n", b"\r\n")]) == expected
    assert decode_all([lf.replace(b"\n", b"\r")]) == expected


def test_every_split_point_gives_the_same_events_even_mid_character_and_between_cr_and_lf() -> None:
    payload = full_stream().replace(b"\n", b"\r\n")
    expected = decode_all([payload])
    assert len(expected) == 10
    for cut in range(1, len(payload)):
        assert decode_all([payload[:cut], payload[cut:]]) == expected, cut
    assert decode_all([payload[i : i + 1] for i in range(len(payload))]) == expected


def test_a_cr_ending_one_chunk_and_lf_opening_the_next_is_one_line_ending() -> None:
    # Were the LF taken as a blank line, "a" would be dispatched alone before "b".
    assert decode_all([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [SSEEvent("message", b"a\nb", None)]


def test_data_field_rules_follow_the_sse_spec() -> None:
    items = decode_all(
        [b"data:no-space\n\ndata\n\ndata:  two spaces\n\nfoo: ignored\nretry: 5\n\n\xef\xbb\xbfx\n"]
    )
    assert items[0] == SSEEvent("message", b"no-space", None)
    assert items[1] == SSEEvent("message", b"", None)
    assert items[2].data == " two spaces"  # type: ignore[union-attr]
    assert len(items) == 3  # unknown fields and a lone blank line dispatch nothing


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert decode_all([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [SSEEvent("message", b"x", None)]


def test_a_last_event_without_its_blank_line_is_still_delivered_at_end_of_stream() -> None:
    assert decode_all([b"data: [DONE]"]) == [SSEEvent("message", b"[DONE]", None)]


async def test_iter_sse_yields_events_and_comments_from_an_async_byte_source() -> None:
    items = [item async for item in iter_sse(feed([b"data: 1\n", b"\n: c\n"]))]
    assert items == [SSEEvent("message", b"1", None), SSEComment("c")]


def test_an_unbounded_line_is_refused_rather_than_buffered_forever() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    for _ in range(9):
        decoder.feed(b"data: " + b"x" * 100)
    with pytest.raises(StreamError, match="longer than 1000 bytes"):
        decoder.feed(b"data: " + b"x" * 100)


async def test_chat_stream_assembles_text_reasoning_usage_and_the_cost_sent_after_done() -> None:
    payload = full_stream()
    events, stream = await run_stream([payload[i : i + 7] for i in range(0, len(payload), 7)])
    assert [(e.kind, e.text) for e in events] == [
        ("reasoning", "Let me think… "),
        ("reasoning", "done."),
        ("content", "Grüße, "),
        ("content", "世界 🌍"),
    ]
    result = stream.result()
    assert result.text == "Grüße, 世界 🌍"
    assert result.reasoning == "Let me think… done."
    assert result.id == "chatcmpl-1"
    assert result.model == "deepseek-v4-pro"
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        19,
        12,
        31,
    )
    assert (result.usage.reasoning_tokens, result.usage.cached_tokens) == (4, 3)
    assert result.cost is not None
    assert result.cost.cost == Decimal("0.0000188000")
    assert result.cost.input_price == Decimal("0.0002")
    assert result.cost.output_price == Decimal("0.00125")
    assert (result.cost.prompt_tokens, result.cost.completion_tokens) == (19, 12)


async def test_tool_call_fragments_accumulate_by_index_even_when_interleaved() -> None:
    pieces = [
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather"}}
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time"}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "UTC"}'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk(finish="tool_calls"),
        b"data: [DONE]\n\n",
    ]
    events, stream = await run_stream(pieces)
    assert [e.kind for e in events] == ["tool_call"] * 5
    assert events[3].tool_call_id == "call_b"
    assert events[3].index == 1
    assert events[3].text == '{"tz": "UTC"}'
    result = stream.result()
    assert result.finish_reason == "tool_calls"
    assert result.text == ""
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"tz": "UTC"}'),
    ]
    assert result.cost is None  # no comment was sent


async def test_a_stream_that_ends_before_done_raises_a_stream_error_saying_what_arrived() -> None:
    payload = chunk({"content": "partial "}) + chunk({"content": "answer"})
    with pytest.raises(StreamError) as caught:
        await run_stream([payload])
    message = str(caught.value)
    assert "ended before [DONE]" in message
    assert "received 2 chunks" in message
    assert f"{len(payload)} bytes" in message
    assert "14 characters of text" in message


async def test_a_stream_cut_mid_line_quotes_the_partial_line() -> None:
    with pytest.raises(StreamError, match=r"ended before \[DONE\].*last line") as caught:
        await run_stream([chunk({"content": "a"}) + b'data: {"id": "chatcmpl-1", "cho'])
    assert "received 1 chunks" in str(caught.value)


async def test_malformed_json_raises_with_the_offending_line_cut_to_about_200_characters() -> None:
    bad = b"data: {not json " + b"x" * 5000 + b"\n\n"
    with pytest.raises(StreamError) as caught:
        await run_stream([chunk({"content": "ok"}), bad])
    message = str(caught.value)
    assert "malformed JSON after 1 chunks" in message
    assert "{not json xxx" in message
    assert len(message) < 400


async def test_an_error_object_inside_the_stream_raises_with_its_code_and_message() -> None:
    error = {
        "error": {"code": "all_providers_failed", "message": "every provider failed", "request_id": "r1"}
    }
    pieces = [chunk({"content": "a"}), b"data: " + json.dumps(error).encode() + b"\n\n"]
    with pytest.raises(
        StreamError, match=r"mid-stream after 1 chunks \(all_providers_failed\): every provider"
    ):
        await run_stream(pieces)


async def test_result_is_refused_until_the_stream_has_been_read_to_its_end() -> None:
    stream = ChatStream(feed([full_stream()]))
    with pytest.raises(RuntimeError, match="read to its end"):
        stream.result()
    await stream.__anext__()
    with pytest.raises(RuntimeError):
        stream.result()


async def test_waiting_for_the_cost_comment_after_done_is_bounded() -> None:
    async def hangs_after_done() -> AsyncIterator[bytes]:
        yield chunk({"content": "hi"}) + b"data: [DONE]\n\n"
        await anyio.Event().wait()  # the server never closes the stream
        yield b""

    with anyio.fail_after(5):
        stream = ChatStream(hangs_after_done(), done_grace=0.05)
        events = [e async for e in stream]
    assert [e.text for e in events] == ["hi"]
    assert stream.result().text == "hi"
    assert stream.result().cost is None


async def test_data_events_after_done_are_ignored_but_the_cost_comment_is_kept() -> None:
    payload = chunk({"content": "x"}) + b"data: [DONE]\n\n" + chunk({"content": "late"}) + COST_LINE
    events, stream = await run_stream([payload])
    assert [e.text for e in events] == ["x"]
    assert stream.result().cost is not None


async def test_comments_that_are_not_cost_objects_are_ignored() -> None:
    payload = b': ping\n\n: {"other": 1}\n: {broken\n' + chunk({"content": "x"}) + b"data: [DONE]\n\n"
    _, stream = await run_stream([payload])
    assert stream.result().cost is None


async def test_a_gateway_request_id_in_the_chunks_is_reported_when_no_header_gave_one() -> None:
    payload = chunk({"content": "x"}, **{"x-gateway-request-id": "gw123"}) + b"data: [DONE]\n\n"
    _, stream = await run_stream([payload])
    assert stream.result().request_id == "gw123"
    _, stream = await run_stream([payload], request_id="from-header")
    assert stream.result().request_id == "from-header"
