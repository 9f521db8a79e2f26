"""What the tools and resources return: a tool result (short text + structured record), and JSON bodies."""

from __future__ import annotations

import json
from typing import Any

import mcp_types as t
from pydantic import BaseModel

JSON_MIME = "application/json"


def tool_result(text: str, structured: BaseModel) -> t.CallToolResult:
    """A result with a short text for the model and the full record as structuredContent."""
    return t.CallToolResult(
        content=[t.TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def to_json(value: BaseModel | dict[str, Any] | list[Any]) -> str:
    """Resource bodies: indented JSON, so a host that shows them raw is still readable."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return json.dumps(data, indent=2, ensure_ascii=False)
