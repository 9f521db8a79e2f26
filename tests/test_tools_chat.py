"""alltoken_chat through the real MCP server (in memory, both protocol eras) against the simulator over
loopback: answers with usage and cost, conversations (also across a restart), progress, cancellation,
fallbacks, enable_search rules, the in-call time bound, and every actionable error path."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.rawserver import RawResponse, raw_server
from tests.serverkit import ERAS, connect, data, error_text, settings_for, text_of


@pytest.mark.parametrize("mode", ERAS)
async def test_a_prompt_is_answered_with_usage_cost_and_a_new_conversation(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        result = await client.call_tool("alltoken_chat", {"prompt": "hello there", "model": "deepseek-v3.2"})
    out = data(result)
    assert out["text"] == "Echo: hello there"
    assert out["model"] == "deepseek-v3.2"
    assert out["finish_reason"] == "stop"
    # 2 prompt words + 4 framing tokens; 3 answer words ("Echo:", "hello", "there").
    assert out["usage"]["prompt_tokens"] == 6
    assert out["usage"]["completion_tokens"] == 3
    # The cost comment after [DONE]: deepseek-v3.2 costs 0.28 / 0.42 USD per 1M tokens.
    assert Decimal(out["cost_usd"]) == (6 * Decimal("0.28") + 3 * Decimal("0.42")) / 1_000_000
    assert out["request_id"]
    assert out["conversation_id"]
    assert out["warnings"] == []
    assert text_of(result).startswith("Echo: hello there")


async def test_the_default_model_comes_from_settings(sim: RunningSimulator, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_DEFAULT_CHAT_MODEL="kimi-k2.6")
    async with connect(settings) as client:
        out = data(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert out["model"] == "kimi-k2.6"


async def test_a_conversation_sends_its_history_and_survives_a_server_restart(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        first = data(await client.call_tool("alltoken_chat", {"prompt": "one two", "system": "be brief"}))
    # A new server process (same state directory) continues the thread.
    async with connect(settings, "legacy") as client:
        second = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "three", "conversation_id": first["conversation_id"]}
            )
        )
        stored = await client.read_resource(f"alltoken://conversations/{first['conversation_id']}")
    assert second["conversation_id"] == first["conversation_id"]
    # system (2 words) + user (2) + assistant "Echo: one two" (3) + user (1), each with 4 framing tokens.
    assert second["usage"]["prompt_tokens"] == (2 + 4) + (2 + 4) + (3 + 4) + (1 + 4)
    body = stored.contents[0]
    assert body.mime_type == "application/json"
    record = json.loads(body.text)  # type: ignore[union-attr]
    assert record["system"] == "be brief"
    assert [(m["role"], m["content"]) for m in record["messages"]] == [
        ("user", "one two"),
        ("assistant", "Echo: one two"),
        ("user", "three"),
        ("assistant", "Echo: three"),
    ]


async def test_system_replaces_the_stored_system_prompt(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        first = data(await client.call_tool("alltoken_chat", {"prompt": "a", "system": "old rules"}))
        cid = first["conversation_id"]
        second = data(
            await client.call_tool("alltoken_chat", {"prompt": "b", "conversation_id": cid, "system": "new"})
        )
        stored = await client.read_resource(f"alltoken://conversations/{cid}")
    # system "new" (1 word) replaced "old rules" (2 words) in what was sent.
    assert second["usage"]["prompt_tokens"] == (1 + 4) + (1 + 4) + (2 + 4) + (1 + 4)
    assert '"system": "new"' in stored.contents[0].text  # type: ignore[union-attr]


async def test_messages_may_carry_the_system_prompt_and_earlier_turns(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    messages = [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second question"},
    ]
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("alltoken_chat", {"messages": messages}))
    assert out["text"] == "Echo: second question"
    assert out["usage"]["prompt_tokens"] == 5 + 5 + 5 + 6


async def test_an_unknown_conversation_id_is_a_clear_error(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool("alltoken_chat", {"prompt": "hi", "conversation_id": "conv_nope"})
        with pytest.raises(Exception, match="No conversation 'conv_nope'"):
            await client.read_resource("alltoken://conversations/conv_nope")
    assert "No conversation 'conv_nope'" in error_text(result)
    assert "Omit conversation_id" in error_text(result)
    assert sim.state.counters()["requests"].get("POST /v1/chat/completions", 0) == 0


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "exactly one of `prompt`"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one of `prompt`"),
        ({"prompt": "a", "temperature": 2.5}, "temperature"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "role"),
        ({"messages": [{"role": "system", "content": "only rules"}]}, "add a user message"),
        ({"prompt": "a", "fallback_models": ["a", "b", "c", "d", "e", "f"]}, "fallback_models"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    sim: RunningSimulator, tmp_path: Path, arguments: dict[str, object], expected: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool("alltoken_chat", arguments)
    assert expected in error_text(result)
    assert sim.state.counters()["requests"].get("POST /v1/chat/completions", 0) == 0


async def test_progress_notifications_arrive_while_tokens_stream(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "tell me", "max_tokens": 50}, progress_callback=on_progress
            )
        )
    assert out["text"] == "Echo: tell me"
    assert seen, "no progress notification"
    assert seen[0][0] >= 1
    assert seen[0][1] == 50
    assert "tokens received" in (seen[0][2] or "")
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_cancelling_the_call_closes_the_upstream_stream(tmp_path: Path) -> None:
    first_chunk = (
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n'
    )
    async with raw_server(RawResponse(pieces=[first_chunk], hold=True)) as upstream:
        progressed = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        async with connect(settings_for(tmp_path, upstream.base_url)) as client:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        await client.call_tool(
                            "alltoken_chat", {"prompt": "long"}, progress_callback=on_progress
                        )

                    tg.start_soon(call)
                    await progressed.wait()
                    tg.cancel_scope.cancel()
                await upstream.client_gone.wait()
            # The server is still healthy after the cancelled call.
            assert (await client.list_tools()).tools


async def test_fallback_models_answer_when_all_providers_fail(sim: RunningSimulator, tmp_path: Path) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=503, code="all_providers_failed", count=1)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "hi", "model": "glm-5.1", "fallback_models": ["minimax-m2.7"]}
            )
        )
    assert out["model"] == "minimax-m2.7"
    assert any("glm-5.1 failed" in w and "fell back to minimax-m2.7" in w for w in out["warnings"])


async def test_a_server_error_without_fallbacks_says_what_to_do(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=503, code="all_providers_failed", count=1)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi", "model": "glm-5.1"}))
    assert "Every provider behind glm-5.1 failed" in text
    assert "fallback_models" in text
    assert "request_id" in text


async def test_enable_search_is_refused_for_openai_models_naming_search_capable_ones(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(
            await client.call_tool(
                "alltoken_chat", {"prompt": "news?", "model": "gpt-5.4", "enable_search": True}
            )
        )
    assert "gpt-5.4 does not support enable_search" in text
    assert "deepseek-v4-pro" in text
    assert "qwen3.6-flash" in text
    assert sim.state.counters()["requests"].get("POST /v1/chat/completions", 0) == 0


async def test_enable_search_warns_when_the_model_ignores_it_and_searches_when_it_can(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        ignored = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "news?", "model": "claude-sonnet-4-6", "enable_search": True}
            )
        )
        searched = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "news?", "model": "deepseek-v4-pro", "enable_search": True}
            )
        )
    assert any("ignores enable_search" in w for w in ignored["warnings"])
    assert searched["text"].startswith("[web search]")
    assert searched["warnings"] == []


async def test_json_schema_output_is_parsed(sim: RunningSimulator, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("alltoken_chat", {"prompt": "where?", "json_schema": schema}))
    assert isinstance(out["json_value"], dict)
    assert isinstance(out["json_value"]["city"], str)


async def test_thinking_reports_reasoning_tokens(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(
            await client.call_tool(
                "alltoken_chat", {"prompt": "why", "model": "deepseek-v4-pro", "thinking": True}
            )
        )
    assert out["text"] == "Echo: why"
    assert out["usage"]["reasoning_tokens"] > 0


async def test_a_slow_answer_is_cut_at_the_max_wait_and_returned_partially(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # 0.1 s per token in real time (speed 0.01), with a 0.5 s bound on the call.
    sim.state.update_config(chat_token_interval_s=10.0)
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_MAX_WAIT_SECONDS="0.5")
    prompt = " ".join(f"w{i}" for i in range(40))
    async with connect(settings) as client:
        with anyio.fail_after(5):
            started = time.monotonic()
            out = data(await client.call_tool("alltoken_chat", {"prompt": prompt}))
            took = time.monotonic() - started
    # Cut at the 0.5 s budget, not at a later one: the slack is ten times what a call takes beyond it here.
    assert 0.45 <= took <= 1.0
    assert out["finish_reason"] == "timeout"
    assert out["text"].startswith("Echo:")
    assert len(out["text"]) < len("Echo: " + prompt)
    assert any("ALLTOKEN_MAX_WAIT_SECONDS" in w for w in out["warnings"])
    assert out["conversation_id"] is None  # nothing saved: no half turn, no empty conversation
    assert conversation_count(tmp_path) == 0


async def test_a_model_that_sends_nothing_within_the_budget_is_an_error_and_saves_nothing(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.update_config(chat_first_token_s=500.0)  # 5 s real time, the budget is 0.5 s
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_MAX_WAIT_SECONDS="0.5")
    async with connect(settings) as client:
        with anyio.fail_after(3):
            started = time.monotonic()
            text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hello there"}))
            took = time.monotonic() - started
    assert 0.45 <= took <= 1.0  # it gave up at the budget, not at the model's first token (5 s)
    assert "sent no answer within 0.5 s (ALLTOKEN_MAX_WAIT_SECONDS)" in text
    assert "had not started" in text
    assert "Nothing was saved" in text
    assert conversation_count(tmp_path) == 0


async def test_an_unknown_model_suggests_close_matches_with_the_request_id(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(
            await client.call_tool("alltoken_chat", {"prompt": "hi", "model": "deepseek-v4-pr"})
        )
    assert "no model 'deepseek-v4-pr'" in text
    assert "Close matches: deepseek-v4-pro" in text
    assert "list_models" in text
    assert "(request_id " in text


async def test_a_rejected_key_explains_where_to_set_it_without_echoing_it(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    secret = "sk-wrong-key-1234567890abcdef"
    async with connect(settings_for(tmp_path, sim.base_url, api_key=secret)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "rejected the API key" in text
    assert "ALLTOKEN_API_KEY" in text
    assert "env" in text
    assert "(request_id " in text
    assert secret not in text


async def test_a_missing_key_is_explained_without_touching_the_network(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, api_key=None)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "No usable AllToken API key: ALLTOKEN_API_KEY is not set" in text
    assert "ALLTOKEN_API_KEY" in text


async def test_an_empty_balance_says_to_top_up(sim: RunningSimulator, tmp_path: Path) -> None:
    sim.state.update_config(balance_ok=False)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "Top up credits at https://alltoken.ai" in text
    assert "(request_id " in text


async def test_rate_limiting_after_retries_says_when_to_retry(sim: RunningSimulator, tmp_path: Path) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=429, count=None, retry_after=0)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "rate-limiting" in text
    assert "Retry in 1 s" in text
    assert "(request_id " in text


async def test_an_unreachable_gateway_is_reported_as_such(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "Could not reach AllToken" in text
    assert SIM_API_KEY not in text


def conversation_count(home: Path) -> int:
    with closing(sqlite3.connect(home / "state.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM conversations").fetchone()[0])
