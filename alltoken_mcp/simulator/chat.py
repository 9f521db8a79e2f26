"""`POST /v1/chat/completions`: deterministic answers, non-stream JSON and SSE (alltoken-api.md §2).

The answer is a function of the request so tests can assert on it:
- plain prompt → `"Echo: <last user text>"` (vision input adds "I see N image(s). ");
- a `role: tool` last message → `"Tool result: <its content>"`;
- `tools` present and (`"[tool]"` in the prompt, `tool_choice: "required"` or a named function) → one tool
  call whose arguments satisfy the function's JSON Schema (strings get the prompt text);
- `response_format` json_object → `{"answer": ...}`; json_schema → an object satisfying the schema;
- `thinking` on a thinking-capable model → `reasoning_content` first.
Tokens are whitespace-delimited words; usage and the post-`[DONE]` cost comment follow from them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from alltoken_mcp.simulator.catalog import CHAT_BY_ID, ChatModel
from alltoken_mcp.simulator.endpoint import Ctx, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid, request_id_of

_ROLES = ("system", "developer", "user", "assistant", "tool")
_WORD = re.compile(r"\S+\s*")


def words(text: str) -> list[str]:
    """Our tokenizer: each word with its trailing whitespace is one token."""
    leading = text[: len(text) - len(text.lstrip())]
    parts = _WORD.findall(text)
    if parts and leading:
        parts[0] = leading + parts[0]
    return parts


def _pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _content_text(content: Any) -> tuple[str, int]:
    """The text of a message's content and how many images it carries."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise invalid("messages[].content must be a string, an array of content parts, or null", "messages")
    texts: list[str] = []
    images = 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            images += 1
        else:
            raise invalid(
                "content parts must be {type:'text',text} or {type:'image_url',image_url:{url}}", "messages"
            )
    return " ".join(texts), images


def sample_json(schema: Any, text: str, depth: int = 0) -> Any:
    """A value satisfying simple JSON Schemas: objects, arrays, enums, strings, numbers, booleans."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combinator), list) and schema[combinator]:
            return sample_json(schema[combinator][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            props = {}
        return {name: sample_json(sub, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [sample_json(schema.get("items", {}), text, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        value: float = len(text)
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    limit = schema.get("maxLength")
    return text[:limit] if isinstance(limit, int) else text


@dataclass
class Plan:
    """Everything the response will contain, decided before any byte is sent."""

    model: ChatModel
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_call: dict[str, Any] | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        args = len(self.tool_call["function"]["arguments"]) // 4 + 1 if self.tool_call else 0
        return len(self.reasoning) + len(self.content) + args

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "audio_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": len(self.reasoning),
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def cost(self) -> dict[str, Any]:
        inp, out = self.model.input_per_1k, self.model.output_per_1k
        total = inp * self.prompt_tokens / 1000 + out * self.completion_tokens / 1000

        def money(value: Decimal) -> str:
            return f"{value.quantize(Decimal('0.0000000001')):f}"

        return {
            "cost": money(total),
            "input_price": money(inp),
            "output_price": money(out),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _thinking_on(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, dict) and value.get("type") in ("enabled", "disabled"):
        return bool(value["type"] == "enabled")
    raise invalid("thinking must be a boolean or {type: 'enabled'|'disabled'}", "thinking")


def _validate_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools must be an array of {type:'function', function:{name, parameters?}}", "tools")
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid(
                "each tool must be {type:'function', function:{name, description?, parameters?}}", "tools"
            )
    return tools


def plan_answer(body: dict[str, Any], model: ChatModel) -> Plan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty array", "messages")
    prompt_tokens = 0
    prompt, images = "", 0
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise invalid(f"each message needs a role, one of {', '.join(_ROLES)}", "messages")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise invalid("a message with role 'tool' requires tool_call_id", "messages")
        text, count = _content_text(message.get("content"))
        prompt_tokens += len(words(text)) + 4 + 85 * count
        if message["role"] == "user":
            prompt, images = text, count
    tools = _validate_tools(body.get("tools"))
    prompt_tokens += len(json.dumps(tools)) // 4 if tools else 0
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise invalid("max_tokens must be an integer >= 1", "max_tokens")

    plan = Plan(model=model, prompt_tokens=prompt_tokens)
    last = messages[-1]
    if _thinking_on(body.get("thinking")) and model.thinking:
        plan.reasoning = words(f"The user wrote: {prompt.strip()}. I will answer by echoing it back.")

    choice = body.get("tool_choice", "auto")
    wants_tool = choice == "required" or isinstance(choice, dict) or "[tool]" in prompt
    if tools and choice != "none" and last.get("role") != "tool" and wants_tool:
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        fn = next((t["function"] for t in tools if t["function"]["name"] == named), tools[0]["function"])
        clean = prompt.replace("[tool]", "").strip()
        arguments = json.dumps(
            sample_json(fn.get("parameters", {"type": "object"}), clean), ensure_ascii=False
        )
        digest = hashlib.sha256(f"{fn['name']}:{clean}".encode()).hexdigest()[:24]
        plan.tool_call = {
            "id": f"call_{digest}",
            "type": "function",
            "function": {"name": fn["name"], "arguments": arguments},
        }
        plan.finish_reason = "tool_calls"
        return plan

    if last.get("role") == "tool":
        answer = f"Tool result: {_content_text(last.get('content'))[0]}"
    else:
        answer = (
            "I see 1 image. " if images == 1 else f"I see {images} images. " if images else ""
        ) + f"Echo: {prompt}"
    if body.get("enable_search") and model.search:
        answer = f"[web search] {answer}"
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        answer = json.dumps({"answer": answer}, ensure_ascii=False)
    elif kind == "json_schema":
        block = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = block.get("schema", block) if isinstance(block, dict) else {"type": "object"}
        answer = json.dumps(sample_json(schema, answer), ensure_ascii=False)
    elif kind not in (None, "text"):
        raise invalid("response_format.type must be text, json_object or json_schema", "response_format")

    stop = body.get("stop")
    stops = (
        [stop]
        if isinstance(stop, str)
        else [s for s in stop if isinstance(s, str)]
        if isinstance(stop, list)
        else []
    )
    cut = min((answer.find(s) for s in stops if s and s in answer), default=-1)
    if cut >= 0:
        answer = answer[:cut]
    tokens = _pieces(answer) if kind in ("json_object", "json_schema") else words(answer)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens, plan.finish_reason = tokens[:max_tokens], "length"
    plan.content = tokens
    return plan


def _resolve_model(body: dict[str, Any]) -> ChatModel:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise invalid("model is required (e.g. deepseek-v4-pro)", "model")
    model = CHAT_BY_ID.get(name)
    if model is None:
        raise ApiFailure(
            404,
            "model_not_found",
            f"The model `{name}` does not exist.",
            param="model",
            request_id_at_top=True,
        )
    return model


@v1
async def chat_completions(ctx: Ctx) -> Response:
    body = await ctx.json()
    model = _resolve_model(body)
    plan = plan_answer(body, model)
    config = ctx.state.config
    ctx.require_balance()
    if body.get("enable_search") and any(model.id.startswith(p) for p in config.search_rejecting_prefixes):
        raise ApiFailure(503, "all_providers_failed", error_type="api_error")
    request_id = request_id_of(ctx.request)
    ctx.state.charge(
        ctx.owner,
        "chat",
        model.id,
        Decimal(plan.cost()["cost"]),
        request_id=request_id,
        tokens=plan.prompt_tokens + plan.completion_tokens,
    )
    first = config.chat_first_token_s + (config.search_latency_s if body.get("enable_search") else 0.0)
    if body.get("stream"):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(
            _sse(plan, ctx, first, include_usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    steps = len(plan.reasoning) + len(plan.content) + (1 if plan.tool_call else 0)
    await anyio.sleep(config.scaled(first + steps * config.chat_token_interval_s))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if plan.reasoning:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.tool_call:
        message["content"] = None
        message["tool_calls"] = [plan.tool_call]
    return JSONResponse(
        {
            "id": _completion_id(request_id),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.id,
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
            "usage": plan.usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_alltoken_sim",
            "x-gateway-request-id": request_id,
        }
    )


def _completion_id(request_id: str) -> str:
    return "chatcmpl-" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def _event(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def _sse(plan: Plan, ctx: Ctx, first: float, include_usage: bool) -> AsyncIterator[bytes]:
    config = ctx.state.config
    base = {
        "id": _completion_id(request_id_of(ctx.request)),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": plan.model.id,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}
        )

    await anyio.sleep(config.scaled(first))
    yield chunk({"role": "assistant", "content": ""})
    deltas: list[dict[str, Any]] = [{"reasoning_content": piece} for piece in plan.reasoning]
    if plan.tool_call:
        call = plan.tool_call
        head = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for piece in _pieces(call["function"]["arguments"]):
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        deltas.extend({"content": piece} for piece in plan.content)
    for delta in deltas:
        await anyio.sleep(config.scaled(config.chat_token_interval_s))
        yield chunk(delta)
    yield chunk({}, plan.finish_reason)
    if include_usage:
        yield _event({**base, "choices": [], "usage": plan.usage()})
    yield _event("[DONE]")
    yield (": " + json.dumps(plan.cost(), separators=(",", ":")) + "\n\n").encode()
