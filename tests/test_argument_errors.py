"""Arguments that do not fit a tool's input schema are answered with one line naming each argument and
what it accepts — not pydantic's multi-line dump with the rejected values and documentation URLs — and a
frame path the caller got wrong is quoted on one short line however long or odd it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from alltoken_mcp.simulator import RunningSimulator
from tests.serverkit import ERAS, connect, error_text, settings_for


@pytest.mark.parametrize("mode", ERAS)
async def test_schema_violations_are_one_line_naming_each_argument(tmp_path: Path, mode: str) -> None:
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
    text = error_text(result)
    assert "\n" not in text
    assert text.startswith("Invalid arguments for alltoken_chat: prompt: Input should be a valid string; ")
    assert "messages.0.role: Input should be 'system', 'user' or 'assistant'" in text
    assert "messages.0.content: required" in text
    assert "model: String should have at most 200 characters" in text
    assert "temperature: Input should be less than or equal to 2; and 1 more." in text  # max_tokens
    assert secret_looking not in text
    assert "pydantic" not in text


async def test_text_with_a_lone_surrogate_is_named_as_invalid_unicode(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        result = await client.call_tool("job_status", {"job_id": "job_\ud800"})
    assert error_text(result) == (
        "Invalid arguments for job_status: job_id: not valid Unicode text (it contains a lone surrogate). "
        "Fix them (see the tool's input schema) and retry."
    )


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
