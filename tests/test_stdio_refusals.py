"""Lines on stdin the server cannot take as a JSON-RPC message get a JSON-RPC error, with the request's id
when the line has one, and the server carries on. The SDK's own stdio transport drops such lines without
an answer (a lone surrogate escape, nesting past its parser's ~200 levels), leaving the client waiting.
The installed server runs in a subprocess and is written raw lines; the simulator runs in this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from alltoken_mcp.stdio import Envelope, envelope_of
from tests.rawstdio import stdio_server

PARSE_ERROR, INVALID_REQUEST = -32700, -32600


def server_env(home: Path, base_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALLTOKEN_")}
    env.update(ALLTOKEN_BASE_URL=base_url, ALLTOKEN_API_KEY=SIM_API_KEY, ALLTOKEN_MCP_HOME=str(home))
    return env


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def chat_call_line(request_id: Any, prompt_json: str, *, id_last: bool = False) -> bytes:
    """A tools/call line with the prompt spliced in as raw JSON text (json.dumps could not write it).
    The params also hold an "id" of their own (in `_meta`: the tool refuses unknown arguments), which
    must not be taken for the request's."""
    params = f'{{"name":"alltoken_chat","_meta":{{"id":999}},"arguments":{{"prompt":{prompt_json}}}}}'
    head, request = '{"jsonrpc":"2.0",', f'"id":{json.dumps(request_id)}'
    if id_last:
        return f'{head}"method":"tools/call","params":{params},{request}}}'.encode()
    return f'{head}{request},"method":"tools/call","params":{params}}}'.encode()


@pytest.mark.parametrize(
    ("line", "request_id", "code", "phrase"),
    [
        pytest.param(
            chat_call_line(41, r'"a \ud800 b"'), 41, PARSE_ERROR, "lone UTF-16 surrogate", id="surrogate"
        ),
        pytest.param(
            chat_call_line(42, r'"\udc00"'), 42, PARSE_ERROR, "lone UTF-16 surrogate", id="low-surrogate"
        ),
        pytest.param(
            chat_call_line("deep-1", nested(1000), id_last=True),
            "deep-1",
            PARSE_ERROR,
            "nest deeper than the JSON parser allows",
            id="1000-deep",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":43,"method":"tools/call","params":["alltoken_chat"]}',
            43,
            INVALID_REQUEST,
            "params: Input should be an object",
            id="params-not-an-object",
        ),
        pytest.param(b"this is not json", None, PARSE_ERROR, "Invalid JSON", id="not-json"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":45,"method":"tools/call","params":{"name":"alltoken_ch',
            45,
            PARSE_ERROR,
            "Invalid JSON: EOF while parsing",
            id="cut-short",
        ),
        pytest.param(
            b'[{"jsonrpc":"2.0","id":44,"method":"ping"}]',
            None,
            INVALID_REQUEST,
            "not a JSON-RPC",
            id="batch",
        ),
    ],
)
async def test_an_unreadable_line_gets_a_json_rpc_error_and_the_server_carries_on(
    sim: RunningSimulator, tmp_path: Path, line: bytes, request_id: Any, code: int, phrase: str
) -> None:
    with anyio.fail_after(30):
        async with stdio_server(server_env(tmp_path, sim.base_url)) as server:
            await server.write_line(line)
            refused = (
                await server.reply(request_id)
                if request_id is not None
                else await server.first(lambda m: "error" in m and m.get("id") is None, "the null-id error")
            )
            after = await server.exchange(
                "after", "tools/call", {"name": "alltoken_chat", "arguments": {"prompt": "still here"}}
            )
    assert refused["error"]["code"] == code
    assert phrase in refused["error"]["message"]
    assert after["result"]["structuredContent"]["text"] == "Echo: still here"


async def test_well_formed_lines_near_the_edges_are_served_not_refused(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A surrogate pair is a valid escape, and 150 levels is within the parser's limit: the guard must not
    refuse what the SDK accepts."""
    with anyio.fail_after(30):
        async with stdio_server(server_env(tmp_path, sim.base_url)) as server:
            await server.write_line(chat_call_line(1, r'"smile \ud83d\ude00"'))
            pair = await server.reply(1)
            await server.write_line(chat_call_line(2, nested(150)))
            deep = await server.reply(2)
    assert pair["result"]["structuredContent"]["text"] == "Echo: smile \U0001f600"
    # A list where a string belongs is the tool's own argument error, not a transport refusal.
    assert "error" not in deep
    assert deep["result"]["isError"] is True


async def test_a_malformed_response_from_the_client_is_not_answered(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A response carries the id of one of the server's requests; an error with that id would read to the
    client as the answer to its own request with the same id."""
    with anyio.fail_after(30):
        async with stdio_server(server_env(tmp_path, sim.base_url)) as server:
            await server.write_line(b'{"jsonrpc":"2.0","id":7,"result":' + nested(1000).encode() + b"}")
            after = await server.exchange(8, "ping", {})
            written = list(server.messages)
    assert "result" in after
    assert [m for m in written if m.get("id") in (7, None)] == []


# ------------------------------------------------------------------------------ the envelope scanner


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"jsonrpc":"2.0","id":5,"method":"ping"}', Envelope(5, has_method=True)),
        ('  { "method" : "x" , "params" : {"id": 1} , "id" : "a\\"b" }', Envelope('a"b', has_method=True)),
        ('{"method":"x","params":' + nested(5000) + ',"id":-3}', Envelope(-3, has_method=True)),
        ('{"method":"x","params":{"s":"]}\\"{["},"id":9}', Envelope(9, has_method=True)),
        ('{"method":"x","params":"\\ud800","id":10}', Envelope(10, has_method=True)),
        ('{"id":true,"method":"x"}', Envelope(None, has_method=True)),
        ('{"id":[1],"method":"x"}', Envelope(None, has_method=True)),
        ('{"id":1,"result":{}}', Envelope(1, has_outcome=True)),
        ('{"id":1,"method":"x"', Envelope(1, has_method=True)),  # cut short after the members
        ('{"id":1,"method":"tools/call","params":{"name":', Envelope(1, has_method=True)),
        ('{"id":1,"method":"x","params":[[[', Envelope(1, has_method=True)),
        ('{"id":1,"meth', Envelope(1)),
        ('{"id":1 "method":"x"}', Envelope(1)),
        ('{"id":"unterminated', Envelope()),
        ("[1, 2]", Envelope()),
        ("", Envelope()),
    ],
)
def test_the_envelope_is_read_from_the_top_level_without_a_recursive_parse(
    line: str, expected: Envelope
) -> None:
    assert envelope_of(line) == expected
