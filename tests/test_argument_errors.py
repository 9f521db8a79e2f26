"""Arguments that do not fit a tool's input schema are answered with one line naming each argument and
what it must be — not pydantic's multi-line dump with documentation URLs — and nothing is sent or paid.
Unknown arguments are refused (a misspelt name used to be dropped and the call paid at the defaults),
with the closest valid name and the valid ones. A frame path the caller got wrong is quoted on one short
line however long or odd it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from alltoken_mcp.server import build_server
from alltoken_mcp.simulator import RunningSimulator
from alltoken_mcp.tools.arguments import closest_name, with_wait_cap
from alltoken_mcp.tools.schemas import compact_input_schema
from tests.serverkit import ERAS, connect, data, error_text, settings_for


@pytest.mark.parametrize("mode", ERAS)
async def test_schema_violations_are_one_line_naming_each_argument_and_what_it_must_be(
    tmp_path: Path, mode: str
) -> None:
    secret_looking = "x" * 201
    async with connect(settings_for(tmp_path), mode) as client:
        result = await client.call_tool(
            "alltoken_chat",
            {
                "prompt": 5,
                "messages": [{"role": "tool"}],
                "model": secret_looking,
                "temperature": 3,
                "max_tokens": 0,
            },
        )
    assert error_text(result) == (
        "Invalid arguments for alltoken_chat: prompt must be a string (got 5); "
        "messages.0.role must be one of system, user, assistant (got 'tool'); "
        "messages.0.content is required; model must be 1–200 characters (got 201); "
        "temperature must be between 0 and 2 (got 3); and 1 more. Nothing was sent; fix them and retry."
    )


async def test_a_rejected_value_is_quoted_short_and_escaped_on_one_line(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        result = await client.call_tool(
            "alltoken_image", {"prompt": "x", "quality": "best\nquality " * 500, "n": "lots"}
        )
    text = error_text(result)
    assert "\n" not in text
    assert (
        "quality must be one of auto, low, medium, high "
        "(got 'best\\nquality best\\nquality best\\nquality b'… (6,500 characters))" in text
    )
    assert "n must be a whole number between 1 and 10 (got 'lots')" in text
    assert len(text) < 400


async def test_text_with_a_lone_surrogate_is_named_as_invalid_unicode(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        result = await client.call_tool("job_status", {"job_id": "job_\ud800"})
    assert error_text(result) == (
        "Invalid arguments for job_status: job_id is not valid Unicode text (it contains a lone surrogate). "
        "Nothing was sent; fix them and retry."
    )


# ------------------------------------------------------------------------------------ unknown arguments


@pytest.mark.parametrize("mode", ERAS)
async def test_a_video_with_misspelt_arguments_is_refused_before_anything_is_sent(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        refused = await client.call_tool(
            "alltoken_video", {"prompt": "a wave", "length": 12, "aspect_ratio": "9:16"}
        )
        assert error_text(refused) == (
            "Invalid arguments for alltoken_video: length is not an argument (did you mean duration?); "
            "aspect_ratio is not an argument (did you mean ratio?). Valid arguments: prompt, model, "
            "duration, ratio, resolution, generate_audio, seed, camera_fixed, watermark, return_last_frame, "
            "first_frame, last_frame, wait_seconds, save_to, overwrite, preview. Nothing was sent; fix them "
            "and retry."
        )
        assert sim.state.counters()["requests"] == {}
        # The call as the hint spells it is rendered as asked.
        job = data(
            await client.call_tool("alltoken_video", {"prompt": "a wave", "duration": 12, "ratio": "9:16"})
        )
    task = sim.state.videos[job["upstream_id"]]
    assert (task.duration, task.ratio) == (12, "9:16")
    assert sim.state.counters()["tasks"]["videos"] == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_a_chat_naming_model_id_is_refused_instead_of_answered_by_the_default_model(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        refused = await client.call_tool("alltoken_chat", {"prompt": "hello", "model_id": "gpt-5.4"})
    text = error_text(refused)
    assert text.startswith(
        "Invalid arguments for alltoken_chat: model_id is not an argument (did you mean model?). "
        "Valid arguments: prompt, messages, model, system, conversation_id,"
    )
    assert sim.state.counters()["requests"] == {}


async def test_every_tool_refuses_an_unknown_argument_and_lists_the_valid_ones(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        tools = (await client.list_tools()).tools
        for tool in tools:
            schema = tool.input_schema
            valid = {name: "x" for name in schema.get("required", [])}
            text = error_text(await client.call_tool(tool.name, {**valid, "colour": "blue"}))
            assert text == (
                f"Invalid arguments for {tool.name}: colour is not an argument. Valid arguments: "
                f"{', '.join(schema['properties'])}. Nothing was sent; fix them and retry."
            )
    assert len(tools) == 8
    assert sim.state.counters()["requests"] == {}


def test_each_published_input_schema_is_exactly_the_schema_of_the_model_that_validates_the_call(
    tmp_path: Path,
) -> None:
    # The full schema is derived from the loose one rather than generated again from the strict model;
    # whatever the strict model would generate itself is what words the errors, and its compact form
    # (tools/schemas.py) is what is published.
    server = build_server(settings_for(tmp_path, ALLTOKEN_MAX_WAIT_SECONDS="90"))
    tools = server._tool_manager.list_tools()
    for tool in tools:
        own = with_wait_cap(tool.fn_metadata.arg_model.model_json_schema(by_alias=True), 90.0)
        assert server._argument_schemas[tool.name] == own, tool.name  # type: ignore[attr-defined]
        assert tool.parameters == compact_input_schema(own), tool.name
        assert tool.parameters["additionalProperties"] is False
    assert len(tools) == 8


async def test_an_unknown_key_in_a_chat_message_is_refused_with_the_message_fields(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool(
            "alltoken_chat",
            {"messages": [{"role": "user", "content": "hi", "Content": "hello", "name": "bob"}]},
        )
    assert error_text(result) == (
        "Invalid arguments for alltoken_chat: messages.0.Content is not a field here "
        "(did you mean content?); messages.0.name is not a field here. Fields of messages.0: role, content. "
        "Nothing was sent; fix them and retry."
    )
    assert sim.state.counters()["requests"] == {}


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("Prompt", "prompt"),
        ("wait-seconds", "wait_seconds"),
        ("waitSeconds", "wait_seconds"),
        ("modle", "model"),
        ("model_id", "model"),
        ("image_size", "size"),
        ("length", "duration"),
        ("num_images", "n"),
        ("colour", None),
        ("", None),
    ],
)
def test_the_closest_valid_name_covers_spelling_typos_parts_and_other_apis_words(
    name: str, closest: str | None
) -> None:
    valid = ["prompt", "model", "n", "size", "duration", "wait_seconds"]
    assert closest_name(name, valid) == closest


async def test_a_hostile_unknown_name_is_quoted_short_on_the_one_line(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        result = await client.call_tool("list_jobs", {"bad\nname" * 20: 1, "": 2, "prompt ": 3})
    text = error_text(result)
    assert "\n" not in text
    assert "'bad\\nnamebad\\nnamebad\\nnamebad\\nnamebad\\nname'… (160 characters) is not an argument" in text
    assert "'' is not an argument" in text
    assert "'prompt ' is not an argument. Valid arguments: kind, status, limit." in text


@pytest.mark.parametrize(
    "frame",
    ["line one\nline two.png", "x" * 4096, "/" + "deep/" * 800 + "a.png"],
    ids=["newline", "long-relative", "long-absolute"],
)
async def test_a_wrong_frame_path_is_quoted_on_one_short_line(
    sim: RunningSimulator, tmp_path: Path, frame: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool("alltoken_video", {"prompt": "a river", "first_frame": frame})
    text = error_text(result)
    assert "\n" not in text
    assert len(text) < 600
    assert text.startswith("Error executing tool alltoken_video: first_frame: '")  # the path, quoted
