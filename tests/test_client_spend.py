"""The client's spend calls: `usage()` and `billing_record()` against the simulator, bounded like every
small GET, and read tolerantly (a shape the spec does not promise reads as "unknown", never an error)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from alltoken_mcp.client import AccountUsage, AllTokenClient, BillingRecord
from alltoken_mcp.client._client import MAX_SMALL_BODY
from alltoken_mcp.client.models import usd
from alltoken_mcp.errors import NotFoundError, ResponseTooLargeError
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.rawserver import RawResponse, raw_server

IMAGE = {"model": "gpt-image-2", "prompt": "a cat", "quality": "medium", "n": 2}


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[AllTokenClient]:
    async with AllTokenClient(sim.base_url, SIM_API_KEY) as running:
        yield running


async def test_a_created_task_carries_the_request_id_its_charge_is_filed_under(
    client: AllTokenClient,
) -> None:
    task = await client.create_image(IMAGE, idempotency_key="k-1")
    assert task.request_id is not None
    record = await client.billing_record(task.request_id)
    assert record.charged_usd() == Decimal("0.084")  # 2 × $0.042 (medium)
    with pytest.raises(NotFoundError):
        await client.billing_record(task.id)


async def test_usage_reports_the_quota_left_after_a_charge(client: AllTokenClient) -> None:
    before = await client.usage()
    await client.create_image(IMAGE, idempotency_key="k-2")
    after = await client.usage()
    assert before.quota_usd == Decimal(100)
    assert after.quota_usd == Decimal("99.916")
    assert after.tokens_remaining == 0


async def test_an_oversized_spend_answer_is_refused_at_the_small_body_cap() -> None:
    endless = RawResponse(
        headers=[("Content-Type", "application/json")], pieces=itertools.repeat(b" " * 65536)
    )
    async with (
        raw_server(endless, endless) as upstream,
        AllTokenClient(upstream.base_url, "sk-test-1234567890") as c,
    ):
        with pytest.raises(ResponseTooLargeError, match=f"more than {MAX_SMALL_BODY // 1024} KiB"):
            await c.usage()
        with pytest.raises(ResponseTooLargeError):
            await c.billing_record("req_1")


@pytest.mark.parametrize(
    ("payload", "charged"),
    [
        ({"ledgers": [{"direction": "deduct", "cost": 0.0023}]}, Decimal("0.0023")),
        ({"ledgers": [{"direction": "deduct", "cost_str": "$0.0420"}]}, Decimal("0.042")),
        ({"ledgers": [{"direction": "deduct", "cost": "-0.5"}]}, Decimal("0.5")),  # sign comes from direction
        (
            {"ledgers": [{"direction": "deduct", "cost": 0.2}, {"direction": "refund", "cost": 0.2}]},
            Decimal(0),
        ),
        (
            {"ledgers": [{"direction": "deduct", "cost": 1}, {"direction": "add", "cost": 5}]},
            Decimal(1),
        ),
        ({"summary": {"total_cost": -0.0023}}, Decimal("0.0023")),
        ({"summary": {"total_cost_str": "-$0.0023"}}, Decimal("0.0023")),
        ({"summary": {"total_cost": "lots"}, "ledgers": [{"direction": "deduct", "cost": None}]}, None),
        ({"summary": "nope", "ledgers": "nope"}, None),
        ({"ledgers": [{"direction": "deduct", "cost": float("nan")}]}, None),
        ({}, None),
    ],
)
def test_a_billing_record_is_read_tolerantly(payload: dict[str, Any], charged: Decimal | None) -> None:
    assert BillingRecord.model_validate(payload).charged_usd() == charged


def test_usage_falls_back_to_the_display_string_and_ignores_what_it_cannot_read() -> None:
    assert AccountUsage.model_validate({"usage_quota_str": "-$1.50"}).quota_usd == Decimal("-1.50")
    odd = AccountUsage.model_validate({"usage_quota": True, "token_quota": {"total_remaining": "many"}})
    assert (odd.quota_usd, odd.tokens_remaining) == (None, None)
    assert usd("$ 0.5") == Decimal("0.5")
    assert usd("0.5 USD") is None
