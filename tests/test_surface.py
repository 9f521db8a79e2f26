"""What the agent reads stays small: the tool list within its token budget (issue 11), schemas without
pydantic's noise, descriptions that quote the settings in force, and answers that echo the start of a
prompt rather than all of it. Sizes are bounds, not timings; benchmarks/bench_surface.py prints the
figures (tests/surfacekit.py counts for both)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.job_records import ANSWER_PROMPT_CHARS, SUMMARY_PROMPT_CHARS
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.serverkit import ERAS, connect, data, resource_text, settings_for, text_of
from tests.surfacekit import (
    AGENT_PROMPT,
    INPUT_BOUND,
    LIST_BOUND,
    LIST_JOBS_BOUND,
    STATUS_RATIO_BOUND,
    answer_sizes,
    listing_tokens,
    tool_tokens,
)

FAST = SimConfig(speed=0.001)


@pytest.mark.parametrize("mode", ERAS)
async def test_the_tool_list_stays_within_its_token_budget(tmp_path: Path, mode: str) -> None:
    async with connect(settings_for(tmp_path), mode) as client:
        listing = await client.list_tools()
    counted = [tool_tokens(tool) for tool in listing.tools]
    assert len(counted) == 8
    assert sum(c.head + c.input for c in counted) <= INPUT_BOUND
    assert listing_tokens(listing) <= LIST_BOUND


def _schemas(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (sub)schema of `node` with where it is; property names are not keywords."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _schemas(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties", "not"):
        yield from _schemas(node.get(key), f"{path}/{key}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(key) or ()):
            yield from _schemas(sub, f"{path}/{key}{i}")


async def test_published_schemas_carry_no_titles_null_branches_or_references(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        for where, schema in _schemas(tool.input_schema):
            assert not {"title", "anyOf", "$ref", "$defs"} & set(schema), f"{tool.name} input{where}"
            assert schema.get("default", 0) is not None, f"{tool.name} input{where}"
        assert tool.output_schema is not None
        for where, schema in _schemas(tool.output_schema):
            assert not {"title", "description", "default", "$ref"} & set(schema), f"{tool.name} output{where}"
    # What a property is called is not a keyword: a field named "description" keeps its schema.
    models = next(tool for tool in tools if tool.name == "list_models").output_schema
    assert models is not None
    assert models["properties"]["models"]["items"]["properties"]["description"] == {
        "type": ["string", "null"]
    }


async def test_an_explicit_null_is_accepted_where_the_schema_publishes_only_the_type(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        schema = next(t for t in (await client.list_tools()).tools if t.name == "alltoken_chat").input_schema
        assert schema["properties"]["temperature"] == {"type": "number", "minimum": 0, "maximum": 2}
        out = data(
            await client.call_tool(
                "alltoken_chat",
                {"prompt": "null is none", "model": None, "temperature": None, "system": None},
            )
        )
    assert out["text"] == "Echo: null is none"


async def test_descriptions_quote_the_defaults_and_the_wait_cap_in_force(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        ALLTOKEN_DEFAULT_CHAT_MODEL="qwen3-max",
        ALLTOKEN_DEFAULT_IMAGE_MODEL="wan2.7-image",
        ALLTOKEN_DEFAULT_VIDEO_MODEL="seedance-2.0",
        ALLTOKEN_MAX_WAIT_SECONDS="20",
    )
    async with connect(settings) as client:
        described = {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}
        instructions = client.instructions or ""
    assert "(default qwen3-max)" in described["alltoken_chat"]
    assert "(default model wan2.7-image)" in described["alltoken_image"]
    assert "(default model seedance-2.0, 5 s)" in described["alltoken_video"]
    assert f"under {tmp_path} or {settings.output_dir}" in described["alltoken_video"]
    assert "wait_seconds=20)" in described["alltoken_video"]
    assert "default and maximum: 20 s" in described["alltoken_image"]
    assert "at most 20 s" in described["job_status"]
    # Which calls cost money: said by each paid tool, and by no other.
    paid = {name for name, text in described.items() if "paid per" in text.lower()}
    assert paid == {"alltoken_chat", "alltoken_image", "alltoken_video"}
    assert "cost money" in instructions
    # Settings, not the names of the variables that hold them: a model cannot act on those.
    assert not [name for name, text in described.items() if "ALLTOKEN_" in text]


async def test_a_job_answer_echoes_the_start_of_its_prompt_and_the_resource_keeps_all_of_it(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started = await client.call_tool("alltoken_image", {"prompt": AGENT_PROMPT, "wait_seconds": 0})
        answer = data(started)
        full = json.loads(await resource_text(client, f"alltoken://jobs/{answer['job_id']}"))
        listed = data(await client.call_tool("list_jobs", {}))["jobs"]
    assert answer["prompt"] == AGENT_PROMPT[: ANSWER_PROMPT_CHARS - 1].rstrip() + "…"
    assert answer["prompt_chars"] == len(AGENT_PROMPT)
    assert f'Prompt ({len(AGENT_PROMPT):,} characters): "{answer["prompt"]}"' in text_of(started)
    assert full["prompt"] == AGENT_PROMPT
    assert listed[0]["prompt"] == AGENT_PROMPT[: SUMMARY_PROMPT_CHARS - 1].rstrip() + "…"


async def test_a_short_prompt_is_echoed_whole(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        answer = data(await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 0}))
    assert (answer["prompt"], answer["prompt_chars"]) == ("a fox", 5)


@pytest.mark.parametrize("sim_config", [FAST])
async def test_a_job_status_answer_carries_at_most_twice_its_text_as_structured_content(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # Paths appear in both halves and pull the ratio toward 1: a short output directory is the worst case.
    with tempfile.TemporaryDirectory(prefix="o") as short:
        async with connect(settings_for(tmp_path, sim.base_url, ALLTOKEN_OUTPUT_DIR=short)) as client:
            for n in (1, 10):  # each saved file adds to both halves: the bound holds for any number
                job = data(await client.call_tool("alltoken_image", {"prompt": AGENT_PROMPT, "n": n}))
                with anyio.fail_after(30):
                    status = await client.call_tool(
                        "job_status", {"job_id": job["job_id"], "wait_seconds": 20}
                    )
                assert data(status)["status"] == "completed"
                assert len(data(status)["files"]) == n
                text, structured = answer_sizes(status)
                assert structured <= STATUS_RATIO_BOUND * text, (n, text, structured)


@pytest.mark.parametrize("sim_config", [FAST])
async def test_a_200_job_list_fits_in_40_kb_and_sends_the_reader_to_job_status(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        with anyio.fail_after(120):
            for _ in range(200):
                made = await client.call_tool(
                    "alltoken_image", {"prompt": AGENT_PROMPT, "quality": "low", "wait_seconds": 0}
                )
                assert not made.is_error, text_of(made)
        listed = await client.call_tool("list_jobs", {"limit": 200})
    jobs = data(listed)["jobs"]
    assert len(jobs) == 200
    text, structured = answer_sizes(listed)
    assert text + structured <= LIST_JOBS_BOUND
    assert "job_status(job_id) gives one in full" in text_of(listed)
    assert "… and 190 more in the structured result." in text_of(listed)


def test_compacting_keeps_what_a_schema_accepts() -> None:
    from typing import Literal

    from pydantic import BaseModel

    from alltoken_mcp.tools.schemas import compact_input_schema, compact_output_schema

    class Node(BaseModel):
        title: str  # a property called "title" is not pydantic's title keyword
        mode: Literal["a", "b"] | None = None
        child: Node | None = None  # recursive: left as a reference

    schema = Node.model_json_schema()
    out = compact_output_schema(schema)
    assert out["properties"]["title"] == {"type": "string"}
    assert out["properties"]["mode"] == {"enum": ["a", "b", None], "type": ["string", "null"]}
    assert out["properties"]["child"]["anyOf"][0] == {"$ref": "#/$defs/Node"}
    assert "Node" in out["$defs"]
    given = compact_input_schema(schema)
    assert given["properties"]["mode"] == {"enum": ["a", "b"], "type": "string"}
    assert "title" not in given
    assert given["required"] == ["title"]
