"""The installed `alltoken-mcp` entry point as a host runs it: a subprocess speaking MCP over stdio, with
the simulator on loopback in this process. Every tool and resource over the wire, progress
notifications, a raw check that every byte on stdout is JSON-RPC, start-up with no key and no network,
`--simulate`, and a clean exit when stdin closes."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.rawstdio import ENTRY_POINT
from tests.serverkit import DEAD_BASE_URL, data, error_text


def server_env(home: Path, base_url: str, api_key: str | None = SIM_API_KEY) -> dict[str, str]:
    env = {
        "ALLTOKEN_BASE_URL": base_url,
        "ALLTOKEN_MCP_HOME": str(home),
        "ALLTOKEN_INPUT_DIRS": str(home),
        "ALLTOKEN_API_KEY": api_key or "",
    }
    # Keep the import path of this test run (e.g. a checkout other than the installed one).
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@asynccontextmanager
async def stdio(env: dict[str, str], *args: str, mode: str = "legacy") -> AsyncIterator[Client]:
    params = StdioServerParameters(command=ENTRY_POINT, args=list(args), env=env)
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:  # type: ignore[arg-type]
                yield client
        except BaseException:
            errlog.seek(0)
            sys.stderr.write(f"server stderr:\n{errlog.read()}\n")
            raise


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_tool_and_resource_works_over_stdio(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(30):
        async with stdio(server_env(tmp_path, sim.base_url), mode=mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"alltoken_chat", "list_models", "route_health"} <= names
            chat = data(
                await client.call_tool(
                    "alltoken_chat", {"prompt": "over stdio"}, progress_callback=on_progress
                )
            )
            models = data(await client.call_tool("list_models", {"modality": "video", "limit": 2}))
            health = data(await client.call_tool("route_health", {"model": "deepseek-v4-pro"}))
            bad = await client.call_tool("alltoken_chat", {"prompt": "x", "model": "qwen3.6-flsh"})
            conversation = await client.read_resource(f"alltoken://conversations/{chat['conversation_id']}")
            catalog = await client.read_resource("alltoken://models")
            one = await client.read_resource("alltoken://models/seedance-2.0")
            gateway = await client.read_resource("alltoken://health")
    assert chat["text"] == "Echo: over stdio"
    assert chat["cost_usd"] is not None
    assert progress
    assert len(models["models"]) == 2
    assert {r["model"] for r in health["routes"]} == {"deepseek-v4-pro"}
    assert "Close matches: qwen3.6-flash" in error_text(bad)
    assert json.loads(conversation.contents[0].text)["messages"][1]["content"] == "Echo: over stdio"  # type: ignore[union-attr]
    assert len(json.loads(catalog.contents[0].text)["models"]) == 27  # type: ignore[union-attr]
    assert json.loads(one.contents[0].text)["video"]["durations"]["max"] == 15  # type: ignore[union-attr]
    assert json.loads(gateway.contents[0].text)["summary"]["total_routes"] > 0  # type: ignore[union-attr]


async def test_initialize_and_tools_list_need_no_key_and_no_network(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with stdio(server_env(tmp_path, DEAD_BASE_URL, api_key=None)) as client:
            tools = (await client.list_tools()).tools
            refused = await client.call_tool("alltoken_chat", {"prompt": "hi"})
    assert {"alltoken_chat", "list_models", "route_health"} <= {t.name for t in tools}
    assert "ALLTOKEN_API_KEY" in error_text(refused)


async def test_simulate_flag_serves_without_a_key(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with stdio(server_env(tmp_path, DEAD_BASE_URL, api_key=None), "--simulate") as client:
            out = data(await client.call_tool("alltoken_chat", {"prompt": "simulated"}))
    assert out["text"] == "Echo: simulated"


async def _read_messages(process: Process, wanted_ids: set[int], into: list[bytes]) -> None:
    """Collect stdout lines until every id in `wanted_ids` has been answered."""
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            into.append(line)
            message = json.loads(line)
            wanted_ids.discard(message.get("id"))
        if not wanted_ids:
            return


async def test_every_byte_on_stdout_is_a_json_rpc_message(sim: RunningSimulator, tmp_path: Path) -> None:
    requests: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {
                "name": "alltoken_chat",
                "arguments": {"prompt": "raw"},
                "_meta": {"progressToken": "p"},
            },
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "list_models", "arguments": {}},
        },
        {"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": "alltoken://health"}},
        {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "nope", "arguments": {}}},
    ]
    env = {**os.environ, **server_env(tmp_path, sim.base_url)}
    lines: list[bytes] = []
    with anyio.fail_after(30):
        async with await anyio.open_process([ENTRY_POINT, "--log-level", "DEBUG"], env=env) as process:
            assert process.stdin is not None
            await process.stdin.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests[:2]))
            await _read_messages(process, {1}, lines)
            await process.stdin.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests[2:]))
            await _read_messages(process, {2, 3, 4, 5, 6}, lines)
            await process.stdin.aclose()
            # stdin EOF ends the server; whatever it still writes must be protocol too.
            assert process.stdout is not None
            rest = b"".join([chunk async for chunk in process.stdout])
            assert await process.wait() == 0
    lines += [line for line in rest.split(b"\n") if line]
    messages = [json.loads(line) for line in lines]
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    assert all(("id" in m and ("result" in m or "error" in m)) or "method" in m for m in messages)
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert by_id[3]["result"]["structuredContent"]["text"] == "Echo: raw"
    assert by_id[6]["result"]["isError"] is True
    assert any(m.get("method") == "notifications/progress" for m in messages)
