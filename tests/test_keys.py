"""Values that are not keys: an unexpanded `${ALLTOKEN_API_KEY}`, a placeholder, quotes, an empty value.

The server still starts with them (a host shows only "Failed to connect" for one that exits), never sends
them to AllToken, and every call that needs the key says exactly what was found and the fix — the same
words `doctor` prints (tests/test_doctor.py). Also: a base URL without /v1 that answers 404 says so."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from alltoken_mcp.settings import KEY_NOT_SET, load_settings
from alltoken_mcp.simulator import RunningSimulator
from tests.serverkit import connect, data, error_text, settings_for
from tests.test_server_stdio import server_env, stdio

CLAUDE_CODE_UNSET = (
    "No usable AllToken API key: ALLTOKEN_API_KEY is the literal text ${ALLTOKEN_API_KEY}: Claude Code "
    "passes that when ALLTOKEN_API_KEY is not set in the shell it was started from (it expands ${…} in "
    ".mcp.json from its own environment). Export ALLTOKEN_API_KEY before starting claude, or put the key "
    "itself in the config."
)


def message(text: str) -> str:
    """A tool error's own text, without the SDK's "Error executing tool NAME: " in front."""
    return re.sub(r"^Error executing tool \w+: ", "", text)


def problem_of(value: str, home: Path) -> str | None:
    settings = load_settings(env={"ALLTOKEN_API_KEY": value, "ALLTOKEN_MCP_HOME": str(home)})
    if settings.key_problem is None:
        assert settings.api_key is not None
        return None
    assert settings.api_key is None  # a value that is not a key is never used as one
    return str(settings.key_problem)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("${ALLTOKEN_API_KEY}", "Export ALLTOKEN_API_KEY before starting claude"),
        ("${MY_ALLTOKEN_KEY}", "Export MY_ALLTOKEN_KEY before starting claude"),
        ("${ALLTOKEN_API_KEY:-}", "is the literal text ${ALLTOKEN_API_KEY:-}: Claude Code passes that"),
        ("$ALLTOKEN_API_KEY", "a shell variable reference, but hosts start MCP servers without a shell"),
        ("%ALLTOKEN_API_KEY%", "a Windows variable reference that nothing expanded"),
        ("paste-your-key-here", "is the placeholder text 'paste-your-key-here', not a key"),
        ("your-api-key", "is the placeholder text 'your-api-key', not a key"),
        ("YOUR_ALLTOKEN_API_KEY", "is the placeholder text 'YOUR_ALLTOKEN_API_KEY', not a key"),
        ("<your AllToken key>", "is the placeholder text '<your AllToken key>', not a key"),
        ("sk-...", "is the placeholder text 'sk-...', not a key"),
        ("sk-xxxxxxxxxxxx", "is the placeholder text 'sk-xxxxxxxxxxxx', not a key"),
        ('"sk-live-abcdef123456"', "is wrapped in quotes, which became part of the value"),
        ("'sk-live-abcdef123456'", "is wrapped in quotes, which became part of the value"),
        ("sk-live-abc def", "contains whitespace or control characters inside it"),
        ("", "ALLTOKEN_API_KEY is set but empty. Set ALLTOKEN_API_KEY in this MCP server's environment"),
        (" \n", "ALLTOKEN_API_KEY is set but empty."),
    ],
)
def test_a_value_that_is_not_a_key_is_refused_with_what_was_found_and_the_fix(
    value: str, says: str, tmp_path: Path
) -> None:
    problem = problem_of(value, tmp_path)
    assert problem is not None
    assert problem.startswith("No usable AllToken API key: ALLTOKEN_API_KEY ")
    assert says in problem
    assert "\n" not in problem


def test_the_claude_code_case_reads_exactly_as_documented(tmp_path: Path) -> None:
    assert problem_of("${ALLTOKEN_API_KEY}", tmp_path) == CLAUDE_CODE_UNSET


@pytest.mark.parametrize(
    "value", ["sk-live-abcdef123456", "  sk-live-abcdef123456\n", "sk-proj-Ab_cd-EF12.gh34", "ak_live_x9Yz"]
)
def test_real_looking_keys_are_used_and_surrounding_whitespace_is_ignored(value: str, tmp_path: Path) -> None:
    assert problem_of(value, tmp_path) is None
    settings = load_settings(env={"ALLTOKEN_API_KEY": value, "ALLTOKEN_MCP_HOME": str(tmp_path)})
    assert settings.api_key == value.strip()


def test_a_quoted_key_is_never_echoed(tmp_path: Path) -> None:
    problem = problem_of('"sk-live-abcdef123456"', tmp_path)
    assert problem is not None
    assert "abcdef" not in problem


async def test_the_stdio_server_starts_with_an_unexpanded_reference_and_every_call_says_why(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    with anyio.fail_after(30):
        async with stdio(server_env(tmp_path, sim.base_url, api_key="${ALLTOKEN_API_KEY}")) as client:
            tools = (await client.list_tools()).tools
            chat = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
            image = error_text(await client.call_tool("alltoken_image", {"prompt": "a fox"}))
            models = data(await client.call_tool("list_models", {"modality": "video", "limit": 1}))
    assert "alltoken_chat" in {tool.name for tool in tools}
    assert message(chat) == CLAUDE_CODE_UNSET
    assert message(image) == CLAUDE_CODE_UNSET
    assert models["models"]  # the public catalog needs no key
    assert any(w.startswith(CLAUDE_CODE_UNSET) for w in models["warnings"])
    # The placeholder was never sent as a Bearer key: only the public catalog was asked.
    assert [r for r in sim.state.requests if "/v1/" in r] == []


async def test_a_missing_key_gives_the_same_answer_in_every_tool(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, api_key=None)) as client:
        chat = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
        video = error_text(await client.call_tool("alltoken_video", {"prompt": "waves"}))
    assert message(chat) == message(video) == str(KEY_NOT_SET)
    assert message(chat).startswith(
        "No usable AllToken API key: ALLTOKEN_API_KEY is not set. Set ALLTOKEN_API_KEY in"
    )


async def test_a_rejected_key_says_where_the_key_goes(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url, api_key="sk-revoked-key-0123456789")) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert message(text).startswith("AllToken rejected the API key (invalid_api_key")
    assert "Set ALLTOKEN_API_KEY in this MCP server's environment" in text


async def test_a_base_url_without_v1_that_answers_404_names_v1_in_the_tool_error(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.origin)) as client:
        chat = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
        image = error_text(await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 0}))
    hint = (
        f"ALLTOKEN_BASE_URL is {sim.origin}, without /v1: AllToken's API is under /v1, so set "
        f"ALLTOKEN_BASE_URL={sim.origin}/v1"
    )
    assert message(chat).startswith(
        "AllToken answered HTTP 404 not_found: POST /chat/completions: Not Found."
    )
    assert hint in chat
    assert hint in image


async def test_a_404_under_a_v1_base_url_gets_no_such_hint(sim: RunningSimulator, tmp_path: Path) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=404, count=None)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert message(text).startswith("AllToken answered HTTP 404")
    assert "without /v1" not in text
