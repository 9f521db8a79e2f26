"""Throughput of the SSE reader on realistic chat-completion chunks (target: >= 20 MB/s).

Run: .venv/bin/python benchmarks/bench_sse.py
Measures two layers over the same bytes, fed in 4 KiB network-sized chunks (split mid-line and
mid-character): the raw decoder alone, and the full chat stream (decoder + JSON + assembly into
`ChatEvent`s and a `ChatResult`). Prints one line per layer; the best of several rounds is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio

from alltoken_mcp.client._sse import ChatStream, SSEDecoder

CHUNK_SIZE = 4096
EVENTS = 50_000
ROUNDS = 5


def make_stream(events: int) -> bytes:
    """A chat stream shaped like AllToken's: role chunk, content fragments, usage, [DONE], cost comment."""
    base = {"id": "chatcmpl-bench0123456789", "object": "chat.completion.chunk", "created": 1_778_000_000,
            "model": "deepseek-v4-pro"}  # fmt: skip
    parts = [f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"]
    words = ["Hello ", "wörld ", "streaming ", "tokens ", "über ", "fast ", "日本語 ", "text. "]
    for i in range(events):
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": {"content": words[i % len(words)]}, "finish_reason": None}],
        }
        parts.append(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n")
    parts.append(
        f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
    )
    usage = {"prompt_tokens": 19, "completion_tokens": events, "total_tokens": 19 + events}
    parts.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n")
    parts.append("data: [DONE]\n\n")
    parts.append(': {"cost":"0.0000188000","input_price":"0.0002000000","output_price":"0.0012500000"}\n\n')
    return "".join(parts).encode()


def split(payload: bytes, size: int) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)]


async def chunks_of(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def bench_decoder(pieces: list[bytes]) -> float:
    start = time.perf_counter()
    decoder = SSEDecoder()
    count = 0
    for piece in pieces:
        count += len(decoder.feed(piece))
    count += len(decoder.close())
    elapsed = time.perf_counter() - start
    assert count == EVENTS + 5, count
    return elapsed


async def bench_chat(pieces: list[bytes]) -> float:
    start = time.perf_counter()
    stream = ChatStream(chunks_of(pieces))
    n = 0
    async for _ in stream:
        n += 1
    result = stream.result()
    elapsed = time.perf_counter() - start
    assert n == EVENTS
    assert result.cost is not None
    assert result.usage is not None
    return elapsed


async def main() -> None:
    payload = make_stream(EVENTS)
    pieces = split(payload, CHUNK_SIZE)
    mb = len(payload) / 1e6
    decoder_best = min(bench_decoder(pieces) for _ in range(ROUNDS))
    chat_times = [await bench_chat(pieces) for _ in range(ROUNDS)]
    chat_best = min(chat_times)
    size = len(payload) // EVENTS
    print(f"payload: {mb:.1f} MB, {EVENTS} chunks of ~{size} bytes, fed in {CHUNK_SIZE} B pieces")
    print(f"SSE decoder alone:              {mb / decoder_best:7.1f} MB/s")
    print(f"chat stream (decode+JSON+assemble): {mb / chat_best:7.1f} MB/s  (target >= 20 MB/s)")


if __name__ == "__main__":
    anyio.run(main)
