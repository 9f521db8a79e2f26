"""AllTokenClient against a byte-exact scripted server on a real loopback socket (tests/rawserver.py).

These cover what the simulator cannot be made to do: pieces split mid-character and between CR and LF
on the wire, streams cut off in the chunked framing, non-SSE 200 answers, and a client that walks away
from a stream that never ends.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.client._pool import ProbedStream
from alltoken_mcp.errors import (
    APIStatusError,
    MalformedResponseError,
    MissingAPIKeyError,
    RateLimitError,
    ServerError,
    StreamError,
    TransportError,
)
from tests.rawserver import RawResponse, raw_server

KEY = "sk-raw-test-0123456789abcdef"


class Sleeps:
    """A RetryPolicy sleep that records the requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(base_url: str, sleeps: Sleeps | None = None, **kwargs: Any) -> AllTokenClient:
    policy = RetryPolicy(max_attempts=3, sleep=sleeps or Sleeps(), random=lambda: 0.5)
    return AllTokenClient(base_url=base_url, api_key=KEY, retry=policy, timeout=10.0, **kwargs)


def sse_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-r",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\r\n\r\n"


STREAM = b"".join(
    [
        sse_chunk({"role": "assistant"}),
        sse_chunk({"content": "naïve "}),
        sse_chunk({"content": "café ☕"}),
        sse_chunk({}, finish="stop"),
        b'data: {"id":"chatcmpl-r","choices":[],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\r\n\r\n',
        b"data: [DONE]\r\n\r\n",
        b': {"cost":"0.0000030000","input_price":"0.0005000000","output_price":"0.0007500000"}\r\n\r\n',
    ]
)


async def read_stream(client: AllTokenClient, into: list[str] | None = None) -> list[str]:
    """Read a whole chat stream, collecting fragment texts (into `into` too, so they survive a raise)."""
    texts = into if into is not None else []
    async with client.stream_chat({"model": "m", "messages": []}) as stream:
        async for event in stream:
            texts.append(event.text)
    return texts


async def open_stream(client: AllTokenClient) -> None:
    async with client.stream_chat({"model": "m", "messages": []}):
        pass


def awkward_pieces(payload: bytes) -> list[bytes]:
    """Cut inside every multi-byte character and between every CR and LF."""
    cuts = sorted(
        {i + 1 for i in range(len(payload) - 1) if payload[i] == 0x0D}
        | {i + 1 for i in range(len(payload) - 1) if payload[i] >= 0xC0}
    )
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut
    pieces.append(payload[start:])
    return [p for p in pieces if p]


async def test_stream_chat_reassembles_pieces_cut_mid_character_and_between_cr_and_lf() -> None:
    async with (
        raw_server(RawResponse(pieces=awkward_pieces(STREAM))) as server,
        client_for(server.base_url) as client,
    ):
        async with client.stream_chat(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ) as stream:
            texts = [event.text async for event in stream]
        result = stream.result()
    assert texts == ["naïve ", "café ☕"]
    assert result.text == "naïve café ☕"
    assert result.usage is not None
    assert result.usage.total_tokens == 5
    assert result.cost is not None
    assert str(result.cost.cost) == "0.0000030000"


async def test_stream_chat_sends_stream_flags_bearer_auth_and_identifying_headers() -> None:
    async with raw_server(RawResponse(pieces=[STREAM])) as server, client_for(server.base_url) as client:
        body = {"model": "m", "messages": [], "stream_options": {"other": 1}}
        async with client.stream_chat(body) as stream:
            async for _ in stream:
                pass
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    sent = json.loads(request.body)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"other": 1, "include_usage": True}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"].startswith("alltoken-mcp/")
    assert request.headers["accept"] == "text/event-stream"
    assert body == {"model": "m", "messages": [], "stream_options": {"other": 1}}  # caller's dict untouched


async def test_a_stream_cut_inside_the_chunked_framing_raises_stream_error_with_what_arrived() -> None:
    pieces = [sse_chunk({"content": "one"}), sse_chunk({"content": "two"}), b'data: {"id": "x']
    async with (
        raw_server(RawResponse(pieces=pieces, abort_after=3)) as server,
        client_for(server.base_url) as client,
    ):
        texts: list[str] = []
        with pytest.raises(StreamError) as caught:
            await read_stream(client, texts)
    assert texts == ["one", "two"]
    assert "broke off" in str(caught.value)
    assert "received 2 chunks" in str(caught.value)
    assert KEY not in str(caught.value)


async def test_a_stream_closed_cleanly_before_done_raises_stream_error() -> None:
    pieces = [sse_chunk({"content": "only this"})]
    async with (
        raw_server(RawResponse(pieces=pieces, framing="close")) as server,
        client_for(server.base_url) as client,
    ):
        with pytest.raises(StreamError, match=r"ended before \[DONE\]: received 1 chunks"):
            await read_stream(client)


async def test_a_json_error_envelope_sent_with_200_instead_of_a_stream_raises_the_typed_error() -> None:
    envelope = {"error": {"code": "insufficient_balance", "message": "Top up", "type": "billing_error"}}
    response = RawResponse(
        headers=[("Content-Type", "application/json")],
        pieces=[json.dumps(envelope).encode()],
        framing="length",
    )
    async with raw_server(response) as server, client_for(server.base_url) as client:
        with pytest.raises(APIStatusError) as caught:
            await open_stream(client)
    assert caught.value.code == "insufficient_balance"
    assert "Top up" in str(caught.value)


async def test_a_plain_completion_sent_instead_of_a_stream_is_replayed_as_one_event() -> None:
    completion = {
        "id": "chatcmpl-j",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    response = RawResponse(
        headers=[("Content-Type", "application/json")],
        pieces=[json.dumps(completion).encode()],
        framing="length",
    )
    async with (
        raw_server(response) as server,
        client_for(server.base_url) as client,
        client.stream_chat({"model": "m", "messages": []}) as stream,
    ):
        events = [e async for e in stream]
    assert [(e.kind, e.text) for e in events] == [("content", "whole")]
    assert stream.result().finish_reason == "stop"
    assert stream.result().usage is not None


async def test_an_html_page_sent_with_200_raises_stream_error_naming_the_content_type() -> None:
    response = RawResponse(
        headers=[("Content-Type", "text/html")], pieces=[b"<html>captive portal</html>"], framing="length"
    )
    async with raw_server(response) as server, client_for(server.base_url) as client:
        with pytest.raises(StreamError, match=r"text/html instead of an event stream.*captive portal"):
            await open_stream(client)


async def test_stream_chat_retries_a_429_before_the_body_and_honours_retry_after() -> None:
    limited = RawResponse(
        status=429,
        headers=[("Content-Type", "application/json"), ("Retry-After", "2")],
        pieces=[b'{"error":{"message":"slow down","type":"rate_limit_error"}}'],
        framing="length",
    )
    sleeps = Sleeps()
    async with (
        raw_server(limited, RawResponse(pieces=[STREAM])) as server,
        client_for(server.base_url, sleeps) as client,
    ):
        texts = await read_stream(client)
    assert texts == ["naïve ", "café ☕"]
    assert sleeps.waits == pytest.approx([2.2])  # Retry-After 2, stretched by a fifth of random()=0.5
    assert len(server.requests) == 2


async def test_stream_chat_does_not_retry_a_500_because_the_turn_may_have_been_billed() -> None:
    failing = RawResponse(
        status=500,
        headers=[("Content-Type", "application/json")],
        pieces=[b'{"error":{"message":"boom","type":"api_error"}}'],
        framing="length",
    )
    async with (
        raw_server(failing, RawResponse(pieces=[STREAM])) as server,
        client_for(server.base_url) as client,
    ):
        with pytest.raises(ServerError, match="boom"):
            await open_stream(client)
    assert len(server.requests) == 1


async def test_rate_limit_exhaustion_raises_rate_limit_error_carrying_retry_after() -> None:
    limited = [
        RawResponse(
            status=429,
            headers=[("Content-Type", "application/json"), ("Retry-After", "7")],
            pieces=[b'{"error":{"message":"slow down","type":"rate_limit_error"}}'],
            framing="length",
        )
        for _ in range(3)
    ]
    sleeps = Sleeps()
    async with raw_server(*limited) as server, client_for(server.base_url, sleeps) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.chat({"model": "m", "messages": []})
    assert caught.value.retry_after == 7.0
    assert sleeps.waits == pytest.approx([7.7, 7.7])
    assert len(server.requests) == 3


async def test_cancelling_a_reader_mid_stream_closes_the_upstream_connection() -> None:
    hanging = RawResponse(pieces=[sse_chunk({"content": "first"})], hold=True)
    async with raw_server(hanging) as server, client_for(server.base_url) as client:
        got_first = anyio.Event()

        async def read() -> None:
            async with client.stream_chat({"model": "m", "messages": []}) as stream:
                async for _ in stream:
                    got_first.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await got_first.wait()
                tg.cancel_scope.cancel()
            await server.client_gone.wait()
    assert server.client_gone.is_set()


async def test_leaving_the_stream_context_early_closes_the_upstream_connection() -> None:
    hanging = RawResponse(pieces=[sse_chunk({"content": "first"})], hold=True)
    async with raw_server(hanging) as server, client_for(server.base_url) as client:
        with anyio.fail_after(5):
            async with client.stream_chat({"model": "m", "messages": []}) as stream:
                async for event in stream:
                    assert event.text == "first"
                    break
            await server.client_gone.wait()


async def test_download_sends_no_authorization_header_and_streams_the_body() -> None:
    blob = bytes(range(256)) * 64
    response = RawResponse(headers=[("Content-Type", "image/png")], pieces=[blob[:5000], blob[5000:]])
    async with (
        raw_server(response) as server,
        client_for(server.base_url) as client,
        client.download(f"{server.origin}/files/a.png?X-Amz-Signature=secret") as download,
    ):
        received = b"".join([part async for part in download.aiter_bytes()])
    assert received == blob
    assert "authorization" not in server.requests[0].headers


async def test_a_connection_refused_becomes_transport_error_naming_the_path_but_not_the_key() -> None:
    async with raw_server() as server:
        base_url = server.base_url
    sleeps = Sleeps()
    async with client_for(base_url, sleeps) as client:
        with pytest.raises(TransportError) as caught:
            await client.list_models()
    message = str(caught.value)
    assert "GET 127.0.0.1" in message
    assert "/v1/models" in message
    assert "after 3 attempts" in message
    assert KEY not in message
    assert len(sleeps.waits) == 2


async def test_calls_that_need_the_key_fail_before_any_network_io_when_it_is_missing() -> None:
    async with raw_server() as server:
        client = AllTokenClient(base_url=server.base_url, api_key=None)
        async with client:
            with pytest.raises(MissingAPIKeyError, match="ALLTOKEN_API_KEY"):
                await client.chat({"model": "m", "messages": []})
            with pytest.raises(MissingAPIKeyError):
                await open_stream(client)
            with pytest.raises(MissingAPIKeyError):
                await client.create_image({"model": "m", "prompt": "p"}, idempotency_key="k")
    assert server.requests == []


COMPLETION = json.dumps(
    {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
    }
).encode()


def completion(*, then_close: bool = False) -> RawResponse:
    return RawResponse(
        headers=[("Content-Type", "application/json")],
        pieces=[COMPLETION],
        framing="length",
        then_close=then_close,
    )


async def test_calls_one_after_another_reuse_one_kept_alive_connection() -> None:
    async with (
        raw_server(completion(), completion(), completion()) as server,
        client_for(server.base_url) as client,
    ):
        for _ in range(3):
            assert (await client.chat({"model": "m", "messages": []})).text == "hi"
    assert server.connections == 1


async def test_a_chat_after_the_server_closed_the_idle_connection_goes_out_on_a_new_one() -> None:
    # A chat POST is never retried once it may have been sent, so reusing the dead connection would fail
    # the call: the pool must see the server's close before choosing a connection.
    async with (
        raw_server(completion(then_close=True), completion()) as server,
        client_for(server.base_url) as client,
    ):
        await client.chat({"model": "m", "messages": []})
        with anyio.fail_after(5):
            await server.closed_idle.wait()
        assert (await client.chat({"model": "m", "messages": []})).text == "hi"
    assert server.connections == 2


async def test_the_clients_connections_are_probed_streams_on_their_own_socket() -> None:
    # httpx2 takes no network backend, so the client swaps its transport's pool; were httpx2 to stop
    # reading the pool from where it is swapped, every test above would still pass on the stock pool.
    async with (
        raw_server(RawResponse(headers=[("Content-Type", "image/png")], pieces=[b"x"])) as server,
        client_for(server.base_url) as client,
        client.download(f"{server.origin}/files/a.png") as download,
    ):
        stream = download.extensions["network_stream"]
        assert isinstance(stream, ProbedStream)
        assert await download.aread() == b"x"
        assert stream.is_readable() is False  # read whole: nothing waiting, and the server has not closed


def json_answer(value: Any) -> RawResponse:
    return RawResponse(
        headers=[("Content-Type", "application/json")], pieces=[json.dumps(value).encode()], framing="length"
    )


async def test_a_listing_keeps_its_well_formed_entries_and_drops_the_ones_that_do_not_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listing = {"object": "list", "data": [{"id": "good-model"}, {"no_id": True}, "not an object", {"id": 7}]}
    async with raw_server(json_answer(listing)) as server, client_for(server.base_url) as client:
        models = await client.list_models()
    assert [m.id for m in models] == ["good-model"]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "alltoken_mcp.client"]
    assert "GET /models" in warning
    assert "3 of 4 entries" in warning


@pytest.mark.parametrize(
    ("answer", "call"),
    [
        ({"status": "queued"}, "get_video"),  # no id
        ({"id": "vgen_1", "status": {"nested": "object"}}, "get_video"),
        ({"data": {"healthy_routes": "many"}}, "health_summary"),
        ({"upload_url": 5}, "presign"),
    ],
)
async def test_an_object_that_does_not_fit_the_api_is_a_one_line_transport_error(
    answer: dict[str, Any], call: str
) -> None:
    async with raw_server(json_answer(answer)) as server, client_for(server.base_url) as client:
        calls = {
            "get_video": lambda: client.get_video("vgen_1"),
            "health_summary": client.health_summary,
            "presign": lambda: client.presign_upload(
                purpose="video_input_image",
                content_type="image/png",
                content_length=1,
                content_md5="1B2M2Y8AsgTpgAmY7PhCfg==",
                checksum_sha256="0" * 64,
            ),
        }
        with pytest.raises(MalformedResponseError) as caught:
            await calls[call]()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("AllToken ")
    assert "does not fit" in text
    assert isinstance(caught.value, TransportError)
