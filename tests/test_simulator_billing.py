"""The simulator's spend endpoints: every paid request is charged at the catalog's published price and
can be looked up under the id it is filed under; `/v1/usage` reports the balance left."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig

CHAT = {"model": "gpt-5.4-nano", "messages": [{"role": "user", "content": "count the beans"}]}


async def _json(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _cost_comment(api: httpx2.AsyncClient) -> tuple[str, Decimal]:
    """One streamed chat turn: its request id and the cost its comment line states."""
    async with api.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response:
        lines = [line async for line in response.aiter_lines()]
        request_id = response.headers["x-gateway-request-id"]
    comment = next(line for line in lines if line.startswith(": "))
    return request_id, Decimal(json.loads(comment[2:])["cost"])


async def test_a_chat_turn_is_billed_at_its_cost_comment_under_its_request_id(
    api: httpx2.AsyncClient,
) -> None:
    request_id, cost = await _cost_comment(api)
    record = await _json(await api.get(f"/billing/transactions/{request_id}"))
    assert record["request_id"] == request_id
    [entry] = record["ledgers"]
    assert (entry["direction"], entry["change_type"], entry["model"]) == (
        "deduct",
        "credit_deduct",
        CHAT["model"],
    )
    assert Decimal(str(entry["cost"])) == cost
    assert Decimal(str(record["summary"]["total_cost"])) == -cost  # signed by direction
    assert record["summary"]["total_cost_str"] == f"-${cost:.4f}"
    usage = await _json(await api.get("/usage"))
    assert Decimal(str(usage["usage_quota"])) == round(Decimal(100) - cost, 6)
    assert usage["currency"] == "USD"
    assert usage["token_quota"] == {"total_remaining": 0, "by_model": []}


async def test_an_image_charge_is_n_times_the_per_image_price_filed_under_the_create_request_id(
    api: httpx2.AsyncClient,
) -> None:
    created = await api.post(
        "/images/generations/async",
        json={"model": "gpt-image-2", "prompt": "a cat", "quality": "low", "n": 3},
    )
    body = await _json(created, 202)
    by_request = await _json(
        await api.get(f"/billing/transactions/{created.headers['x-gateway-request-id']}")
    )
    assert Decimal(str(by_request["ledgers"][0]["cost"])) == Decimal("0.033")  # 3 × $0.011 (low)
    assert by_request["summary"]["category"] == "image"
    missing = await api.get(f"/billing/transactions/{body['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, media_billed_under="task_id")])
async def test_media_charges_can_be_filed_under_the_task_id_instead(api: httpx2.AsyncClient) -> None:
    created = await api.post(
        "/videos/generations",
        json={"model": "seedance-2.0", "prompt": "waves", "duration": 4, "resolution": "720p"},
    )
    task = await _json(created, 202)
    record = await _json(await api.get(f"/billing/transactions/{task['id']}"))
    assert Decimal(str(record["ledgers"][0]["cost"])) == Decimal("0.208")  # 4 s × $0.052 (720p)
    assert (
        await api.get(f"/billing/transactions/{created.headers['x-gateway-request-id']}")
    ).status_code == 404


async def test_a_failed_render_is_refunded_and_leaves_the_balance_as_it_was(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    created = await api.post("/videos/generations", json={"model": "seedance-2.0", "prompt": "[fail] waves"})
    task = await _json(created, 202)
    sim.state.advance_to(sim.state.videos[task["id"]].timeline.finished + 0.001)
    record = await _json(await api.get(f"/billing/transactions/{created.headers['x-gateway-request-id']}"))
    assert [e["direction"] for e in record["ledgers"]] == ["deduct", "refund"]
    assert record["summary"]["total_cost"] == 0
    assert (await _json(await api.get("/usage")))["usage_quota"] == 100


async def test_the_transaction_list_pages_newest_first_with_a_summary_of_the_page(
    api: httpx2.AsyncClient,
) -> None:
    first, _ = await _cost_comment(api)
    second, _ = await _cost_comment(api)
    page = (await _json(await api.get("/billing/transactions", params={"limit": 1})))["data"]
    assert page["total"] == 2
    assert [i["request_id"] for i in page["items"]] == [second]
    assert page["summary"]["cost_deducted"] == page["items"][0]["cost"]
    rest = (await _json(await api.get("/billing/transactions", params={"limit": 1, "offset": 1})))["data"]
    assert [i["request_id"] for i in rest["items"]] == [first]
    refused = await api.get("/billing/transactions", params={"limit": 0})
    assert refused.status_code == 400


async def test_another_keys_charges_are_not_found(sim: RunningSimulator, api: httpx2.AsyncClient) -> None:
    request_id, _ = await _cost_comment(api)
    sim.state.update_config(api_keys=(SIM_API_KEY, "sk-sim-other-00000000000000"))
    async with httpx2.AsyncClient(
        base_url=sim.base_url, headers={"Authorization": "Bearer sk-sim-other-00000000000000"}
    ) as other:
        assert (await other.get(f"/billing/transactions/{request_id}")).status_code == 404
        assert (await _json(await other.get("/usage")))["usage_quota"] == 100
