"""Helpers for driving the real MCP server in tests: settings pointed at a simulator and a temporary
state directory, the in-memory client in either protocol era, and small accessors for tool results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as t
from mcp import Client

from alltoken_mcp.catalog import CatalogTTL
from alltoken_mcp.server import build_server
from alltoken_mcp.settings import Settings, load_settings
from alltoken_mcp.simulator import SIM_API_KEY

ERAS = ("legacy", "auto")
"""`legacy`: the 2025 initialize handshake; `auto`: the 2026-07-28 stateless era."""

DEAD_BASE_URL = "http://127.0.0.1:9/v1"
"""The discard port: nothing listens, so any request fails at once with a connection error."""


def settings_for(
    home: Path, base_url: str = DEAD_BASE_URL, *, api_key: str | None = SIM_API_KEY, **env: str
) -> Settings:
    values = {"ALLTOKEN_BASE_URL": base_url, "ALLTOKEN_MCP_HOME": str(home), "ALLTOKEN_INPUT_DIRS": str(home)}
    if api_key is not None:
        values["ALLTOKEN_API_KEY"] = api_key
    values.update(env)
    return load_settings(env=values)


@asynccontextmanager
async def connect(
    settings: Settings, mode: str = "auto", *, catalog_ttl: CatalogTTL | None = None
) -> AsyncIterator[Client]:
    """A fresh server (its own lifespan) and an in-memory client in the given protocol era."""
    server = build_server(settings, catalog_ttl=catalog_ttl)
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        yield client


def text_of(result: t.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, t.TextContent))


def data(result: t.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def resource_text(client: Client, uri: str) -> str:
    """The text of a resource (the first of its contents)."""
    content = (await client.read_resource(uri)).contents[0]
    assert isinstance(content, t.TextResourceContents), content
    return content.text


def error_text(result: t.CallToolResult) -> str:
    assert result.is_error, f"expected an error, got {result.structured_content}"
    return text_of(result)
