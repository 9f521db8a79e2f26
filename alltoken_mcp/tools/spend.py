"""Spend in the tool layer: the daily budget check every paid tool makes first, the confirmation of paid
renders (ALLTOKEN_CONFIRM, through MCP form elicitation), and the `alltoken://usage` resource.

Confirmation works in both protocol eras. In the 2025 handshake era the question is an
`elicitation/create` request sent mid-call (and must be answered within the call's time budget). In the
2026-07-28 era the call answers `InputRequiredResult` carrying the question, and the client calls the tool
again with the answer: the tool body runs again from the start (every check repeats, nothing has been sent
yet), and the answer counts only for the question it answers (`request_state` is the question's digest).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import is_version_at_least

from alltoken_mcp import budget
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import find_model
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.people import current_budget, current_person
from alltoken_mcp.settings import CONFIRM_VAR
from alltoken_mcp.spend import BudgetReached, usd_text
from alltoken_mcp.store import JobKind
from alltoken_mcp.tools.results import to_json
from alltoken_mcp.tools.state_resources import add_state_resource

USAGE_URI = "alltoken://usage"
CONFIRM_KEY = "alltoken_confirm_render"
"""The key of the confirmation question in `InputRequiredResult.input_requests`."""
INPUT_REQUIRED_VERSION = "2026-07-28"
"""The first protocol version whose tool calls ask the client through `InputRequiredResult`."""
PROMPT_SHOWN = 200
"""How much of the prompt the confirmation question quotes."""
UPSTREAM_DEFAULT_DURATION = 5


async def refuse_over_budget(state: AppState) -> None:
    """Raise a ToolError (nothing sent) when today's known spend has reached ALLTOKEN_DAILY_BUDGET_USD."""
    try:
        await state.spend.check_budget(person=current_person(), budget=current_budget())
    except BudgetReached as exc:
        raise ToolError(str(exc)) from None


CONFIRM_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
"""The confirmation form has no fields: the answer is accept (send it) or decline."""


def _money(value: Any) -> Decimal | None:
    try:
        amount = Decimal(str(value).strip().removeprefix("$"))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


async def _pricing(state: AppState, kind: JobKind, model: str) -> dict[str, Any]:
    """The catalog's published pricing of `model` (empty when the catalog does not say or cannot be read)."""
    try:
        entry = find_model(await state.catalog.models(kind), model)
    except AllTokenError:
        return {}
    return entry.pricing or {} if entry is not None else {}


def _tiers(prices: dict[str, Any], unit: str) -> str:
    return ", ".join(f"{tier} ${price}{unit}" for tier, price in prices.items()) or "none published"


def _price(total_of: int, prices: Any, tier: Any, unit: str) -> str:
    """`about $0.08 at the catalog price ($0.04 per image)`, or the published tiers when the tier is not
    known (quality "auto", a default resolution, a duration the model chooses)."""
    prices = prices if isinstance(prices, dict) else {}
    each = _money(prices.get(tier)) if isinstance(tier, str) else None
    if each is None or total_of <= 0:
        return f"catalog price: {_tiers(prices, unit)}"
    return f"about {usd_text(each * total_of)} at the catalog price ({usd_text(each)}{unit})"


async def render_question(state: AppState, kind: JobKind, body: dict[str, Any]) -> str:
    """What the user is asked before a paid render: model, count or duration, resolution, known price."""
    model = str(body["model"])
    pricing = await _pricing(state, kind, model)
    if kind == "image":
        count = int(body.get("n") or 1)
        quality = body.get("quality") or "auto"
        what = f"{count} image(s) with {model}, size {body.get('size') or 'auto'}, {quality} quality"
        price = _price(count, pricing.get("per_image"), quality, " per image")
    else:
        duration = body.get("duration")
        seconds = UPSTREAM_DEFAULT_DURATION if duration in (None, 0) else int(duration)
        resolution = body.get("resolution")
        length = "a length the model chooses" if seconds == -1 else f"{seconds} s"
        what = f"{length} of video with {model} at {resolution or 'its default resolution'}"
        price = _price(seconds, pricing.get("per_second"), resolution, " per second")
    prompt = str(body.get("prompt") or "")
    shown = prompt if len(prompt) <= PROMPT_SHOWN else prompt[: PROMPT_SHOWN - 1] + "…"
    return f"Send this paid render to AllToken? {what}; {price}. Prompt: {shown!r}"


def _needs_confirmation(state: AppState, kind: JobKind) -> bool:
    mode = state.settings.confirm
    return mode == "media" or (mode == "video" and kind == "video")


def _supports_form_elicitation(ctx: Context[AppState]) -> bool:
    """As the SDK decides it: a bare `elicitation: {}` (before modes existed) counts as form support."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _digest(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()


async def confirm_render(
    ctx: Context[AppState], kind: JobKind, body: dict[str, Any]
) -> t.InputRequiredResult | None:
    """Ask the user before a paid render when ALLTOKEN_CONFIRM says so. None: go ahead (no question, or the
    user accepted). An `InputRequiredResult` (2026-07-28 era): return it; the client calls again with the
    answer. Raises ToolError (nothing sent) when the user declines or the client cannot be asked."""
    state = app_state(ctx)
    if not _needs_confirmation(state, kind):
        return None
    setting = f"{CONFIRM_VAR}={state.settings.confirm}"
    version = ctx.protocol_version
    modern = version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION)
    if state.stateless and not modern:
        # The answer to a question would be a new request, which round robin may send to another replica.
        raise ToolError(
            f"{setting} asks before each paid render, and this server runs stateless (--stateless), where "
            f"a {version or '2025-era'} session cannot be asked anything. Nothing was sent. Connect with a "
            f"client speaking MCP {INPUT_REQUIRED_VERSION}, or have the operator serve sticky sessions "
            f"without --stateless or set {CONFIRM_VAR}=never."
        )
    if not _supports_form_elicitation(ctx):
        raise ToolError(
            f"{setting} requires a client that supports MCP form elicitation (to ask you before each paid "
            f"render), and this client does not declare it. Nothing was sent. Use a host that supports "
            f"elicitation, or set {CONFIRM_VAR}=never in this server's configuration."
        )
    question = await render_question(state, kind, body)
    if modern:
        answer = (ctx.input_responses or {}).get(CONFIRM_KEY)
        if not isinstance(answer, t.ElicitResult) or ctx.request_state != _digest(question):
            ask = t.ElicitRequest(
                params=t.ElicitRequestFormParams(message=question, requested_schema=CONFIRM_SCHEMA)
            )
            return t.InputRequiredResult(input_requests={CONFIRM_KEY: ask}, request_state=_digest(question))
    else:
        seconds = budget.remaining()
        with anyio.move_on_after(seconds):
            answer = await ctx.request_context.session.elicit_form(
                question, CONFIRM_SCHEMA, related_request_id=ctx.request_id
            )
        if answer is None:
            raise ToolError(
                f"No answer to the confirmation within {seconds:.0f} s (this call's time budget). Nothing "
                "was sent; call again to be asked again."
            )
    assert isinstance(answer, t.ElicitResult)
    if answer.action != "accept":
        what = "declined" if answer.action == "decline" else "dismissed"
        raise ToolError(
            f"Not sent: the user {what} the {kind} render ({setting} asks before each one). Nothing was "
            "paid. Do not retry unless the user asks for it."
        )
    return None


def register(server: MCPServer[AppState]) -> None:
    async def usage_resource(state: AppState) -> str:
        return to_json(await state.spend.report(person=current_person(), budget=current_budget()))

    add_state_resource(
        server,
        USAGE_URI,
        usage_resource,
        name="usage",
        title="AllToken spend",
        description="Known spend today and this month (UTC), the daily budget and the account quota (JSON).",
    )
