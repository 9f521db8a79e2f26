"""The simulator's chat surface, auth and error envelope, over real loopback HTTP."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from alltoken_mcp.simulator import RunningSimulator

REQUEST_ID = re.compile(r"^[0-9a-v]{20}$")


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def _stream(api: httpx2.AsyncClient, body: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The `data:` payloads (JSON or "[DONE]") and the comment lines of one SSE response, in order."""
    async with api.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events: list[Any] = []
    comments: list[str] = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        assert "\n" not in block, f"each event is a single line: {block!r}"
        if block.startswith(": "):
            comments.append(block[2:])
        else:
            assert block.startswith("data: ")
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events, comments


async def test_v1_without_a_valid_bearer_key_is_401_invalid_api_key(sim: RunningSimulator) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as client:
        missing = await client.get("/models")
        wrong = await client.get("/models", headers={"Authorization": "Bearer sk-wrong"})
    for response in (missing, wrong):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "auth_error"
        assert error["param"] is None
        assert error["message"] == "Invalid or revoked API key"
        assert REQUEST_ID.match(error["request_id"])
        assert response.headers["x-gateway-request-id"] == error["request_id"]


async def test_accept_language_localizes_only_the_message(sim: RunningSimulator) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as client:
        english = (await client.get("/models")).json()["error"]
        chinese = (await client.get("/models", headers={"Accept-Language": "zh-CN,zh;q=0.9"})).json()["error"]
    assert chinese["code"] == english["code"] == "invalid_api_key"
    assert chinese["type"] == english["type"]
    assert chinese["message"] != english["message"]
    assert "密钥" in chinese["message"]


async def test_public_account_endpoints_need_no_auth_but_user_endpoints_refuse_api_keys(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    async with httpx2.AsyncClient(base_url=sim.origin) as anonymous:
        for path in (
            "/api-account/models",
            "/api-account/health/summary",
            "/api-account/health/routes",
            "/api-account/providers",
            "/api-account/rankings/all",
        ):
            response = await anonymous.get(path)
            assert response.status_code == 200, path
            assert "data" in response.json()
    user = await api.get(f"{sim.origin}/api-account/user/balance")
    assert user.status_code == 401
    assert user.json()["error"]["code"] == "invalid_token"
    assert user.json()["error"]["type"] == "auth_error"


async def test_unknown_chat_model_is_404_model_not_found_with_request_id_at_top_level(
    api: httpx2.AsyncClient,
) -> None:
    response = await api.post("/chat/completions", json={"model": "gpt-9", "messages": _user("hi")})
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["type"] == "invalid_request_error"
    assert "gpt-9" in body["error"]["message"]
    assert "request_id" not in body["error"]
    assert body["request_id"] == response.headers["x-gateway-request-id"]


async def test_balance_toggle_makes_billable_calls_402_insufficient_balance(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    changed = await api.post(f"{sim.origin}/_sim/config", json={"balance_ok": False})
    assert changed.json()["balance_ok"] is False
    chat = await api.post("/chat/completions", json={"model": "gpt-5.4-nano", "messages": _user("hi")})
    image = await api.post("/images/generations/async", json={"model": "gpt-image-2", "prompt": "a cat"})
    video = await api.post("/videos/generations", json={"model": "seedance-2.0", "prompt": "a cat"})
    for response in (chat, image, video):
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "insufficient_balance"
    assert (await api.get("/models")).status_code == 200  # listing is not billable
    assert sim.state.tasks_created["images"] == sim.state.tasks_created["videos"] == 0


async def test_non_stream_chat_echoes_the_prompt_with_usage_and_gateway_request_id(
    api: httpx2.AsyncClient,
) -> None:
    response = await api.post(
        "/chat/completions", json={"model": "gpt-5.4-nano", "messages": _user("hello there")}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["service_tier"] == "default"
    assert body["x-gateway-request-id"] == response.headers["x-gateway-request-id"]
    assert REQUEST_ID.match(body["x-gateway-request-id"])
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there"}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3  # "Echo: ", "hello ", "there"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


async def test_stream_sends_role_then_content_then_finish_usage_done_and_a_cost_comment(
    api: httpx2.AsyncClient,
) -> None:
    body = {
        "model": "gpt-5.4-nano",
        "messages": _user("one two three"),
        "stream_options": {"include_usage": True},
    }
    events, comments = await _stream(api, body)
    chunks = [e for e in events if e != "[DONE]"]
    assert events[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: one two three"
    final = chunks[-2]
    assert final["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    # The comment comes after [DONE]: cost = prompt × input + completion × output, prices per 1K tokens.
    assert len(comments) == 1
    cost = json.loads(comments[0])
    assert cost["input_price"] == "0.0002000000"  # gpt-5.4-nano: $0.20 per 1M input tokens
    assert cost["output_price"] == "0.0012500000"
    assert (cost["prompt_tokens"], cost["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    expected = (
        Decimal(cost["input_price"]) * usage["prompt_tokens"]
        + Decimal(cost["output_price"]) * usage["completion_tokens"]
    ) / 1000
    assert Decimal(cost["cost"]) == expected.quantize(Decimal("0.0000000001"))
    assert re.fullmatch(r"\d+\.\d{10}", cost["cost"])


async def test_stream_without_include_usage_has_null_usage_on_every_chunk(api: httpx2.AsyncClient) -> None:
    events, comments = await _stream(api, {"model": "glm-5.1", "messages": _user("hi")})
    chunks = [e for e in events if e != "[DONE]"]
    assert all(c["usage"] is None and c["choices"] for c in chunks)
    assert len(comments) == 1


async def test_thinking_streams_reasoning_content_before_the_answer(api: httpx2.AsyncClient) -> None:
    body = {
        "model": "deepseek-v4-pro",
        "messages": _user("why"),
        "thinking": {"type": "enabled"},
        "stream_options": {"include_usage": True},
    }
    events, _ = await _stream(api, body)
    # Skip the first chunk: it carries the role (and an empty content).
    kinds = [k for e in events[1:] if e != "[DONE]" and e["choices"] for k in e["choices"][0]["delta"]]
    first_content = kinds.index("content")
    assert "reasoning_content" in kinds[:first_content]
    assert "reasoning_content" not in kinds[first_content:]
    usage = events[-2]["usage"]
    reasoning = [
        e["choices"][0]["delta"]["reasoning_content"]
        for e in events[:-1]
        if e["choices"] and "reasoning_content" in e["choices"][0]["delta"]
    ]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(reasoning)
    plain = await api.post(
        "/chat/completions", json={"model": "deepseek-v4-pro", "messages": _user("why"), "thinking": True}
    )
    assert plain.json()["choices"][0]["message"]["reasoning_content"] == "".join(reasoning)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["city", "days"],
        },
    },
}


async def test_tool_call_streams_a_header_fragment_then_arguments_and_ends_with_tool_calls(
    api: httpx2.AsyncClient,
) -> None:
    events, _ = await _stream(
        api, {"model": "kimi-k2.6", "messages": _user("[tool] Paris"), "tools": [WEATHER_TOOL]}
    )
    deltas = [e["choices"][0]["delta"] for e in events if e != "[DONE]"]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    head, rest = calls[0], calls[1:]
    assert head["index"] == 0
    assert head["type"] == "function"
    assert head["id"].startswith("call_")
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) > 1
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in rest)
    arguments = json.loads("".join(c["function"]["arguments"] for c in rest))
    assert arguments == {"city": "Paris", "days": 3}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_non_stream_tool_call_has_null_content_and_a_tool_result_turn_is_answered(
    api: httpx2.AsyncClient,
) -> None:
    first = await api.post(
        "/chat/completions",
        json={"model": "claude-sonnet-4-6", "tools": [WEATHER_TOOL], "messages": _user("[tool] Oslo")},
    )
    message = first.json()["choices"][0]["message"]
    assert message["content"] is None
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    call = message["tool_calls"][0]
    follow_up = [
        *_user("[tool] Oslo"),
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    second = await api.post(
        "/chat/completions",
        json={"model": "claude-sonnet-4-6", "tools": [WEATHER_TOOL], "messages": follow_up},
    )
    assert second.json()["choices"][0]["message"]["content"] == "Tool result: sunny"


async def test_json_schema_response_format_yields_an_object_satisfying_the_schema(
    api: httpx2.AsyncClient,
) -> None:
    schema = {
        "type": "object",
        "required": ["title", "score", "ok"],
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}, "ok": {"type": "boolean"}},
    }
    body = {
        "model": "qwen3.6-flash",
        "messages": _user("rate this"),
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": True},
        },
    }
    content = json.loads(
        (await api.post("/chat/completions", json=body)).json()["choices"][0]["message"]["content"]
    )
    assert isinstance(content["title"], str)
    assert isinstance(content["ok"], bool)
    assert isinstance(content["score"], float)
    body["response_format"] = {"type": "json_object"}
    plain = (await api.post("/chat/completions", json=body)).json()["choices"][0]["message"]["content"]
    assert json.loads(plain) == {"answer": "Echo: rate this"}


@pytest.mark.parametrize(
    ("model", "status"), [("gpt-5.4", 503), ("deepseek-v3.2", 200), ("claude-opus-4-7", 200)]
)
async def test_enable_search_is_rejected_for_openai_models_only(
    api: httpx2.AsyncClient, model: str, status: int
) -> None:
    response = await api.post(
        "/chat/completions", json={"model": model, "messages": _user("news"), "enable_search": True}
    )
    assert response.status_code == status
    if status == 503:
        assert response.json()["error"]["code"] == "all_providers_failed"


async def test_max_tokens_truncates_the_answer_with_finish_reason_length(api: httpx2.AsyncClient) -> None:
    response = await api.post(
        "/chat/completions", json={"model": "minimax-m2.7", "max_tokens": 2, "messages": _user("a b c d e")}
    )
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "Echo: a "
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_malformed_chat_requests_get_a_400_that_names_the_field(api: httpx2.AsyncClient) -> None:
    no_messages = await api.post("/chat/completions", json={"model": "glm-5.1", "messages": []})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    not_json = await api.post(
        "/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert "JSON" in not_json.json()["error"]["message"]
