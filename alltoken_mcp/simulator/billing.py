"""The spend endpoints: `GET /v1/usage`, `GET /v1/billing/transactions[/{request_id}]` (alltoken-api.md §7,
"Spend endpoints"), and the charges behind them.

Every paid request is charged at the price the simulated catalog publishes: a chat turn its cost comment's
`cost`, an image task `n` × the per-image price of its quality, a video task its duration × the per-second
price of its resolution. A chat charge is filed under the request's `x-gateway-request-id`. Which id a
media charge is filed under is not documented (alltoken-api.md: [INFERRED]), so `SimConfig.media_billed_under`
chooses: the create call's request id (default) or the task id. A task that ends failed or cancelled gets
a refund entry next to its deduction, as a gateway that charges on submit would show it. The account starts
with `SimConfig.usage_quota_usd`; `/v1/usage` reports what is left.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator import images, videos
from alltoken_mcp.simulator.endpoint import Ctx, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid, rfc3339
from alltoken_mcp.simulator.state import Charge, SimState

_CHANGE_TYPES = {"chat": "credit_deduct", "image": "image_deduct", "video": "video_deduct"}
_SOURCES = {"chat": "credit", "image": "image", "video": "video"}
MAX_PAGE = 100


def _task_status(state: SimState, charge: Charge) -> str | None:
    """The status of the media task a charge is for (None for chat, or a task that is gone)."""
    if charge.task_id is None:
        return None
    if charge.category == "image" and charge.task_id in state.images:
        return images.status_of(state, state.images[charge.task_id])
    if charge.category == "video" and charge.task_id in state.videos:
        return videos.status_of(state, state.videos[charge.task_id])
    return None


def _usd(value: Decimal, *, places: int = 4) -> str:
    """`$0.0420`, `-$0.0420`: AllToken's display strings."""
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):.{places}f}"


def _item(charge: Charge, direction: str, created: float, number: int) -> dict[str, Any]:
    refund = direction == "refund"
    return {
        "id": number,
        "change_type": "credit_refund" if refund else _CHANGE_TYPES[charge.category],
        "description": f"{'Refund' if refund else 'Charge'} for {charge.model}",
        "direction": direction,
        "source": _SOURCES[charge.category],
        "pay_mode": "balance",
        "category": charge.category,
        "tokens_delta": charge.tokens if refund else -charge.tokens,
        "cost": float(charge.cost),
        "cost_str": _usd(charge.cost),
        "billing_type": 2,
        "model_id": charge.model,
        "model": charge.model,
        "request_id": charge.filed_under,
        "remark": None,
        "created_at": rfc3339(created).replace("Z", "+00:00"),
    }


def ledger_items(state: SimState, charge: Charge) -> list[dict[str, Any]]:
    """The charge's ledger entries, oldest first: its deduction, and a refund once its task failed."""
    items = [_item(charge, "deduct", charge.created, charge.number)]
    if _task_status(state, charge) in ("failed", "cancelled"):
        items.append(_item(charge, "refund", state.wall(), charge.number + 1))
    return items


def net_cost(state: SimState, charge: Charge) -> Decimal:
    return Decimal(0) if len(ledger_items(state, charge)) > 1 else charge.cost


@v1
async def usage(ctx: Ctx) -> Response:
    state = ctx.state
    spent = sum((net_cost(state, c) for c in state.charges.values() if c.owner == ctx.owner), Decimal(0))
    left = Decimal(str(state.config.usage_quota_usd)) - spent
    return JSONResponse(
        {
            "currency": "USD",
            "usage_quota": float(round(left, 6)),
            "usage_quota_str": _usd(left, places=2),
            "token_quota": {"total_remaining": 0, "by_model": []},
        }
    )


@v1
async def transaction(ctx: Ctx) -> Response:
    filed_under = ctx.request.path_params["request_id"]
    charge = ctx.state.charges.get(filed_under)
    if charge is None or charge.owner != ctx.owner:
        raise ApiFailure(404, "not_found", f"No transactions for request {filed_under}")
    items = ledger_items(ctx.state, charge)
    total = sum(
        (Decimal(str(i["cost"])) * (1 if i["direction"] == "refund" else -1) for i in items), Decimal(0)
    )
    return JSONResponse(
        {
            "request_id": filed_under,
            "summary": {
                "total_tokens_delta": sum(i["tokens_delta"] for i in items),
                "total_cost": float(total),
                "total_cost_str": _usd(total),
                "model": charge.model,
                "billing_type": 2,
                "category": charge.category,
                "first_created_at": items[0]["created_at"],
            },
            "ledgers": items,
        }
    )


@v1
async def transactions(ctx: Ctx) -> Response:
    params = ctx.request.query_params
    limit, offset = params.get("limit", "20"), params.get("offset", "0")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise invalid(f"limit must be an integer from 1 to {MAX_PAGE}", "limit")
    if not offset.isdigit():
        raise invalid("offset must be a non-negative integer", "offset")
    state = ctx.state
    every = [i for c in state.charges.values() if c.owner == ctx.owner for i in ledger_items(state, c)]
    every.sort(key=lambda i: (i["created_at"], i["id"]), reverse=True)
    page = every[int(offset) : int(offset) + int(limit)]
    deducted = sum((Decimal(str(i["cost"])) for i in page if i["direction"] == "deduct"), Decimal(0))
    added = sum((Decimal(str(i["cost"])) for i in page if i["direction"] == "refund"), Decimal(0))
    summary = {
        "tokens_added": sum(i["tokens_delta"] for i in page if i["tokens_delta"] > 0),
        "tokens_deducted": -sum(i["tokens_delta"] for i in page if i["tokens_delta"] < 0),
        "cost_added": float(added),
        "cost_added_str": _usd(added),
        "cost_deducted": float(deducted),
        "cost_deducted_str": _usd(deducted),
    }
    return JSONResponse({"data": {"summary": summary, "total": len(every), "items": page}})
