"""`alltoken_chat`: one chat turn with any AllToken model, optionally continuing a stored conversation,
and the `alltoken://conversations/{conversation_id}` resource.

The answer is always streamed upstream (with usage), so the cost comment AllToken sends after `[DONE]`
is captured and progress notifications can be sent while tokens arrive. Cancelling the MCP request
cancels this coroutine, and the client's stream context closes the upstream connection. Conversations
live in the store: a turn is saved only once the answer is complete, so a failed call leaves no half
turn behind.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import BaseModel, ConfigDict, Field

from alltoken_mcp import budget
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import SEARCH_FAMILIES
from alltoken_mcp.client import ChatResult
from alltoken_mcp.errors import AllProvidersFailedError, AllTokenError, ModelNotFoundError, ServerError
from alltoken_mcp.people import current_person
from alltoken_mcp.settings import Settings
from alltoken_mcp.store import StoreError, StoreWriteError
from alltoken_mcp.tools.error_text import reports_store_errors, tool_error
from alltoken_mcp.tools.results import JSON_MIME, to_json, tool_result
from alltoken_mcp.tools.spend import refuse_over_budget

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
MAX_TEXT = 1_000_000  # characters per prompt / message: far above any context window, below abuse
MAX_ANSWER_CHARS = 1_000_000
"""The most of one answer that is read (text, reasoning and tool calls together): far above any model's
output limit, and the bound on memory when an upstream streams without end."""

# alltoken-api.md §2.6, live probe 2026-05-12.
_REJECTS_SEARCH = re.compile(r"^(gpt-|o\d|chatgpt)", re.IGNORECASE)
_IGNORES_SEARCH = ("claude", "glm", "kimi", "minimax")
_FLAKY_SEARCH = ("gemini",)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, not silently dropped

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT)


class ChatUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = Field(None, description="part of completion_tokens spent thinking")
    cached_tokens: int | None = None


class ChatOutput(BaseModel):
    text: str = Field(description="the answer")
    model: str = Field(description="the model that answered (a fallback if the first failed)")
    finish_reason: str | None = Field(None, description="stop | length | content_filter | timeout | …")
    usage: ChatUsage | None = None
    cost_usd: str | None = Field(None, description="what AllToken charged, USD as a decimal string")
    request_id: str | None = Field(None, description="AllToken's request id, for support")
    conversation_id: str | None = Field(
        description="pass it back to continue this conversation (none when the answer was not saved)"
    )
    json_value: Any = Field(None, description="the parsed answer when json_schema was given")
    warnings: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------ enable_search


def search_support(model: str) -> Literal["searches", "rejects", "ignores", "unreliable", "unknown"]:
    lowered = model.lower()
    if lowered.startswith(SEARCH_FAMILIES):
        return "searches"
    if _REJECTS_SEARCH.match(lowered):
        return "rejects"
    if lowered.startswith(_IGNORES_SEARCH):
        return "ignores"
    if lowered.startswith(_FLAKY_SEARCH):
        return "unreliable"
    return "unknown"


async def _search_models(state: AppState) -> list[str]:
    try:
        view = await state.catalog.snapshot()
    except AllTokenError:
        return []
    return [m.id for m in view.models if "search" in m.supports]


async def _check_search(state: AppState, models: Sequence[str]) -> list[str]:
    """Refuse models that fail with enable_search; warnings for those that ignore it."""
    warnings: list[str] = []
    for model in models:
        support = search_support(model)
        if support == "rejects":
            capable = await _search_models(state) or [f"{family}-*" for family in SEARCH_FAMILIES]
            raise ToolError(
                f"{model} does not support enable_search: AllToken answers 503 all_providers_failed for "
                f"OpenAI models with web search. Use a search-capable model ({', '.join(capable[:8])}) or "
                "drop enable_search."
            )
        if support == "ignores":
            warnings.append(
                f"{model} ignores enable_search (no web search was done); "
                "use a DeepSeek or Qwen model to search."
            )
        elif support == "unreliable":
            warnings.append(f"{model} handles enable_search inconsistently (empty answers or refusals seen).")
        elif support == "unknown":
            warnings.append(f"{model} is not known to support enable_search; the flag may be ignored.")
    return warnings


# --------------------------------------------------------------------------------------- the call


def _response_format(json_schema: dict[str, Any]) -> dict[str, Any]:
    """Accept either a bare JSON Schema or the whole `{name, schema, strict}` block."""
    if isinstance(json_schema.get("schema"), dict) and "name" in json_schema:
        block = json_schema
    else:
        block = {"name": "response", "schema": json_schema, "strict": True}
    return {"type": "json_schema", "json_schema": block}


class _Progress:
    """Throttled progress: the first fragment at once, then at most every PROGRESS_INTERVAL_S."""

    def __init__(self, ctx: Context[AppState], total: int | None) -> None:
        self._ctx = ctx
        self._total = total
        self._last = 0.0
        self.fragments = 0

    async def tick(self, model: str) -> None:
        self.fragments += 1
        now = time.monotonic()
        if self.fragments == 1 or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            await self._ctx.report_progress(
                self.fragments, self._total, f"{model}: {self.fragments} tokens received"
            )


class _CutShort(Exception):
    """The call's budget ended before the answer did. `text`/`reasoning_chars`: what had arrived."""

    def __init__(self, text: str, reasoning_chars: int) -> None:
        super().__init__("cut short")
        self.text = text
        self.reasoning_chars = reasoning_chars


async def _record_cost(state: AppState, model: str, result: ChatResult | None) -> list[str]:
    """Put the turn on the spend ledger: its exact cost from the cost comment, unknown when the answer was
    cut short or AllToken sent none. A failure to record is a warning: the answer is paid for either way."""
    cost = result.cost.cost if result is not None and result.cost is not None else None
    try:
        await state.spend.record_chat(
            model, cost, result.request_id if result is not None else None, person=current_person()
        )
    except StoreError as exc:
        return [f"This turn was not added to the spend ledger: {exc}"]
    return []


async def _stream_once(state: AppState, body: dict[str, Any], progress: _Progress) -> ChatResult:
    """The whole answer, or `_CutShort` when the call's budget ends first."""
    parts: list[str] = []
    reasoning_chars = 0
    model = str(body["model"])
    with anyio.move_on_after(budget.remaining()):
        async with state.client.stream_chat(body, max_chars=MAX_ANSWER_CHARS) as stream:
            async for event in stream:
                if event.kind == "content":
                    parts.append(event.text)
                elif event.kind == "reasoning":
                    reasoning_chars += len(event.text)
                await progress.tick(model)
            return stream.result()
    raise _CutShort("".join(parts), reasoning_chars)


def _nothing_received(model: str, seconds: float, reasoning_chars: int) -> str:
    why = (
        f"it was still thinking ({reasoning_chars:,} characters of reasoning arrived, no answer yet)"
        if reasoning_chars
        else "the answer had not started (the model or its route is slow right now, or the stream stalled)"
    )
    return (
        f"{model} sent no answer within {seconds:g} s (ALLTOKEN_MAX_WAIT_SECONDS): {why}. Nothing was saved "
        "to the conversation. Retry, pick a faster model, turn thinking off, or raise "
        "ALLTOKEN_MAX_WAIT_SECONDS if the host allows longer calls."
    )


def _history_messages(stored: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in stored]


def chat_description(settings: Settings) -> str:
    return (
        f"One chat turn with any AllToken model (default {settings.default_chat_model}): a second opinion "
        "or a sub-task for another model family. Paid per token (list_models shows prices). Give prompt or "
        "messages; pass the result's conversation_id back to continue the thread."
    )


def register(server: MCPServer[AppState], settings: Settings) -> None:
    """`alltoken_chat` and the conversation resource; the description quotes `settings`' default model."""

    @server.tool(
        name="alltoken_chat",
        title="Chat with an AllToken model",
        description=chat_description(settings),
        annotations=t.ToolAnnotations(
            title="Chat with an AllToken model",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    @reports_store_errors
    async def alltoken_chat(
        ctx: Context[AppState],
        prompt: Annotated[str | None, Field(min_length=1, max_length=MAX_TEXT)] = None,
        messages: Annotated[
            list[ChatMessage] | None,
            Field(min_length=1, max_length=500, description="turns, oldest first (instead of prompt)"),
        ] = None,
        model: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
        system: Annotated[
            str | None,
            Field(max_length=MAX_TEXT, description="replaces a stored conversation's system prompt"),
        ] = None,
        conversation_id: Annotated[
            str | None,
            Field(min_length=1, max_length=100, description="from an earlier result, to continue it"),
        ] = None,
        temperature: Annotated[float | None, Field(ge=0, le=2)] = None,
        max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None,
        enable_search: Annotated[
            bool,
            Field(description="search the web first (DeepSeek, Qwen; +6-15 s; not OpenAI models)"),
        ] = False,
        thinking: Annotated[
            bool | None,
            Field(description="reasoning on or off (thinking models)"),
        ] = None,
        json_schema: Annotated[
            dict[str, Any] | None,
            Field(description="JSON Schema the answer must match; parsed into json_value"),
        ] = None,
        fallback_models: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=200)]] | None,
            Field(max_length=5, description="tried in order if the model's providers fail"),
        ] = None,
    ) -> Annotated[t.CallToolResult, ChatOutput]:
        state = app_state(ctx)
        if (prompt is None) == (messages is None):
            raise ToolError("Pass exactly one of `prompt` (a string) or `messages` (a list of turns).")
        new_turns = [ChatMessage(role="user", content=prompt)] if prompt is not None else list(messages or [])
        systems = [m for m in new_turns if m.role == "system"]
        if systems:
            if system is not None or len(systems) > 1:
                raise ToolError("Give the system prompt once: either `system` or one system message.")
            system = systems[0].content
            new_turns = [m for m in new_turns if m.role != "system"]
        if not new_turns:
            raise ToolError("`messages` holds only a system prompt; add a user message.")

        chain = [model or state.settings.default_chat_model, *(fallback_models or [])]
        warnings = await _check_search(state, chain) if enable_search else []

        history: list[dict[str, str]] = []
        if conversation_id is not None:
            conversation = await state.store.get_conversation(conversation_id)
            if conversation is None or not conversation.visible_to(current_person()):
                raise ToolError(
                    f"No conversation {conversation_id!r} is stored on this machine. Omit conversation_id "
                    "to start a new conversation (the result gives its id)."
                )
            history = _history_messages(conversation.messages)
            if system is None:
                system = conversation.system

        wire_messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        wire_messages += history + [m.model_dump() for m in new_turns]
        body: dict[str, Any] = {"messages": wire_messages}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if enable_search:
            body["enable_search"] = True
        if thinking is not None:
            body["thinking"] = thinking
        if json_schema is not None:
            body["response_format"] = _response_format(json_schema)

        await refuse_over_budget(state)
        progress = _Progress(ctx, max_tokens)
        budget_seconds = state.settings.max_wait_seconds
        result: ChatResult | None = None
        partial = ""
        answered_by = chain[0]
        for position, candidate in enumerate(chain):
            answered_by = candidate
            try:
                result = await _stream_once(state, {**body, "model": candidate}, progress)
                break
            except _CutShort as cut:
                if not cut.text:
                    raise ToolError(
                        _nothing_received(candidate, budget_seconds, cut.reasoning_chars)
                    ) from None
                partial = cut.text
                break
            except (AllProvidersFailedError, ServerError) as exc:
                if position + 1 < len(chain):
                    warnings.append(f"{candidate} failed ({exc}); fell back to {chain[position + 1]}.")
                    continue
                raise tool_error(exc, model=candidate) from exc
            except ModelNotFoundError as exc:
                raise tool_error(exc, model=candidate, known_models=await state.catalog.known_ids()) from exc
            except AllTokenError as exc:
                raise tool_error(exc, model=candidate) from exc

        warnings += await _record_cost(state, answered_by, result)
        finish: str | None
        complete = result is not None and not result.truncated
        if result is not None and result.truncated and not result.text:
            raise ToolError(
                f"{answered_by} sent {MAX_ANSWER_CHARS:,} characters of reasoning or tool calls and no "
                "answer, so this server stopped reading (its bound on one answer). Nothing was saved to "
                "the conversation. Retry with thinking off or a smaller max_tokens."
            )
        if result is None:
            warnings.append(
                f"Stopped after {budget_seconds:g} s (ALLTOKEN_MAX_WAIT_SECONDS): the answer is cut short "
                "and was not saved to the conversation; ask for a shorter answer or raise max wait."
            )
            text, finish = partial, "timeout"
        else:
            finish = result.finish_reason
            text = result.text
            if result.truncated:
                warnings.append(
                    f"The answer was cut at {MAX_ANSWER_CHARS:,} characters (this server's bound on one "
                    "answer) and was not saved to the conversation; ask for a shorter answer."
                )
                finish = "length"

        json_value: Any = None
        if json_schema is not None and complete:
            try:
                json_value = json.loads(text)
            except ValueError:
                warnings.append("The answer is not valid JSON although json_schema was given.")

        if complete:
            turns = [m.model_dump() for m in new_turns] + [{"role": "assistant", "content": text}]
            try:
                conversation_id = await state.store.save_turn(
                    conversation_id, system=system, model=answered_by, messages=turns, person=current_person()
                )
            except StoreWriteError as exc:  # the answer is paid for: return it all the same
                warnings.append(f"This turn was not saved to the conversation: {exc}")
                conversation_id = None

        usage = ChatUsage.model_validate(result.usage.model_dump()) if result and result.usage else None
        out = ChatOutput(
            text=text,
            model=(result.model if result and result.model else answered_by),
            finish_reason=finish,
            usage=usage,
            cost_usd=str(result.cost.cost) if result and result.cost else None,
            request_id=result.request_id if result else None,
            conversation_id=conversation_id,
            json_value=json_value,
            warnings=warnings,
        )
        return tool_result(_chat_text(out), out)

    @server.resource(
        "alltoken://conversations/{conversation_id}",
        name="conversation",
        title="A stored alltoken_chat conversation",
        description="The system prompt and every turn of one conversation, oldest first (JSON).",
        mime_type=JSON_MIME,
    )
    async def conversation_resource(conversation_id: str, ctx: Context[AppState]) -> str:
        conversation = await app_state(ctx).store.get_conversation(conversation_id)
        if conversation is None or not conversation.visible_to(current_person()):
            raise ResourceNotFoundError(f"No conversation {conversation_id!r} is stored on this machine.")
        return to_json(
            {
                "conversation_id": conversation_id,
                "system": conversation.system,
                "model": getattr(conversation, "model", None),
                "messages": _history_messages(conversation.messages),
            }
        )


def _chat_text(out: ChatOutput) -> str:
    facts = [out.model]
    if out.usage is not None:
        facts.append(f"{out.usage.total_tokens} tokens")
    if out.cost_usd is not None:
        facts.append(f"${out.cost_usd}")
    if out.conversation_id is not None:
        facts.append(f"conversation_id {out.conversation_id}")
    lines = [out.text, "", "— " + " · ".join(facts)]
    lines += [f"warning: {w}" for w in out.warnings]
    return "\n".join(lines)
