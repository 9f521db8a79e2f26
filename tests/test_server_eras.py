"""The server's surface in both protocol eras, in memory: tool metadata (titles, annotations, schemas),
structured results that validate against the output schemas, errors as isError results rather than
protocol errors, resources, and start-up that touches neither the key nor the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from alltoken_mcp.simulator import RunningSimulator
from tests.serverkit import DEAD_BASE_URL, ERAS, connect, data, error_text, settings_for


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_carry_titles_annotations_and_output_schemas(tmp_path: Path, mode: str) -> None:
    async with connect(settings_for(tmp_path, DEAD_BASE_URL, api_key=None), mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    chat, models, health = tools["alltoken_chat"], tools["list_models"], tools["route_health"]
    for tool in (chat, models, health):
        assert tool.title
        assert tool.description
        assert tool.annotations is not None
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
    assert chat.annotations is not None
    assert chat.annotations.open_world_hint is True
    assert chat.annotations.read_only_hint is False
    for tool in (models, health):
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
    chat_args = chat.input_schema["properties"]
    assert chat_args["temperature"] == {"type": "number", "minimum": 0, "maximum": 2}
    assert {"prompt", "messages", "model", "system", "conversation_id", "enable_search", "thinking"} <= set(
        chat_args
    )
    assert {"text", "model", "usage", "cost_usd", "request_id", "conversation_id", "warnings"} <= set(
        chat.output_schema["properties"]  # type: ignore[index]
    )


@pytest.mark.parametrize("mode", ERAS)
async def test_results_and_errors_behave_the_same_in_both_eras(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        chat = data(await client.call_tool("alltoken_chat", {"prompt": "era"}))
        models = data(await client.call_tool("list_models", {"modality": "image"}))
        health = data(await client.call_tool("route_health", {"status": "degraded"}))
        refused = await client.call_tool(
            "alltoken_chat", {"prompt": "x", "model": "gpt-5.5", "enable_search": True}
        )
        invalid = await client.call_tool("list_models", {"limit": 0})
        unknown = await client.call_tool("no_such_tool", {})
        resource = await client.read_resource("alltoken://health")
    assert chat["text"] == "Echo: era"
    assert models["total"] == 4
    assert {r["status"] for r in health["routes"]} == {"degraded"}
    assert "does not support enable_search" in error_text(refused)
    assert "limit" in error_text(invalid)
    assert "no_such_tool" in error_text(unknown)
    assert resource.contents[0].mime_type == "application/json"


async def test_an_unknown_conversation_resource_is_a_not_found_error(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, DEAD_BASE_URL), "legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("alltoken://conversations/conv_missing")
    assert caught.value.error.code == -32602
    assert "No conversation 'conv_missing'" in caught.value.error.message
