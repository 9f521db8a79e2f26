"""Spend control through the real server against the simulator: the ledger of known costs (chat from the
cost comment, media from AllToken's billing record), `alltoken://usage` and route_health, the daily budget,
and the confirmation of paid renders (ALLTOKEN_CONFIRM) in both protocol eras."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext

from alltoken_mcp.server import build_server
from alltoken_mcp.settings import Settings
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.serverkit import ERAS, connect, data, error_text, settings_for, text_of

CHAT_CREATE = "POST /v1/chat/completions"
IMAGE_CREATE = "POST /v1/images/generations/async"
VIDEO_CREATE = "POST /v1/videos/generations"
VIDEO = {"prompt": "waves at dusk", "model": "seedance-1.5-pro", "duration": 5, "resolution": "720p"}
IMAGE = {"prompt": "a red fox", "model": "gpt-image-2", "n": 2, "quality": "low", "wait_seconds": 30}


async def usage(client: Client) -> dict[str, Any]:
    result = await client.read_resource("alltoken://usage")
    content = result.contents[0]
    assert isinstance(content, t.TextResourceContents)
    parsed: dict[str, Any] = json.loads(content.text)
    return parsed


async def costed(client: Client, job_id: str) -> dict[str, Any]:
    """The job's record once its charge is on the ledger: the poller looks the cost up after it has
    completed the job (a job's completion never waits for billing), so this polls for it."""
    with anyio.fail_after(20):
        while (await usage(client))["today"]["charges"] == 0:  # noqa: ASYNC110 (nothing to wait on)
            await anyio.sleep(0.02)
    return data(await client.call_tool("job_status", {"job_id": job_id}))


async def finished(client: Client, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            record = data(await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 5}))
            if record["status"] not in ("queued", "processing"):
                return record


# ------------------------------------------------------------------------------------------ ledger


@pytest.mark.parametrize("mode", ERAS)
async def test_a_chat_turns_exact_cost_is_on_the_ledger_with_the_account_quota(
    tmp_path: Path, sim: RunningSimulator, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        turn = data(await client.call_tool("alltoken_chat", {"prompt": "one two three", "model": "gpt-5.5"}))
        spent = await usage(client)
    cost = Decimal(turn["cost_usd"])
    assert cost > 0
    assert Decimal(spent["today"]["known_usd"]) == Decimal(spent["month"]["known_usd"]) == cost
    assert (spent["today"]["charges"], spent["today"]["unknown_cost"]) == (1, 0)
    assert Decimal(spent["account"]["quota_usd"]) == round(100 - cost, 6)
    assert spent["daily_budget_usd"] is None
    assert spent["budget_resets_at"].endswith("T00:00:00Z")


async def test_a_completed_image_job_carries_what_alltoken_billed_for_it(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        record = data(await client.call_tool("alltoken_image", IMAGE))
        assert record["status"] == "completed"
        record = await costed(client, record["job_id"])
        spent = await usage(client)
    assert record["cost_usd"] == "0.022"  # 2 × $0.011, the catalog's low-quality price
    assert Decimal(spent["today"]["known_usd"]) == Decimal("0.022")
    assert sim.state.requests["GET /v1/billing/transactions/{request_id}"] == 1  # the request id answered


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, media_billed_under="task_id")])
async def test_a_media_charge_filed_under_the_task_id_is_found_as_well(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started = data(await client.call_tool("alltoken_video", VIDEO))
        await finished(client, started["job_id"])
        record = await costed(client, started["job_id"])
    assert Decimal(record["cost_usd"]) == Decimal("0.26")  # 5 s × $0.052 (720p)
    assert sim.state.requests["GET /v1/billing/transactions/{request_id}"] == 2  # request id 404, task id


@pytest.mark.parametrize("status", [404, 500])
async def test_a_charge_without_a_readable_billing_record_is_unknown_and_the_job_still_completes(
    tmp_path: Path, sim: RunningSimulator, status: int
) -> None:
    sim.state.add_fault(path="/v1/billing/transactions/{request_id}", status=status, count=None)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        record = await costed(client, data(await client.call_tool("alltoken_image", IMAGE))["job_id"])
        spent = await usage(client)
        health = await client.call_tool("route_health", {})
    assert (record["status"], record["cost_usd"], len(record["files"])) == ("completed", None, 2)
    assert spent["today"] == {"known_usd": "0", "charges": 1, "unknown_cost": 1}
    assert "+1 charge of unknown cost" in text_of(health)


async def test_route_health_shows_known_spend_and_the_quota(tmp_path: Path, sim: RunningSimulator) -> None:
    async with connect(settings_for(tmp_path, sim.base_url, ALLTOKEN_DAILY_BUDGET_USD="5")) as client:
        turn = data(await client.call_tool("alltoken_chat", {"prompt": "hello", "model": "gpt-5.5"}))
        out = data(await client.call_tool("route_health", {}))
        text = text_of(await client.call_tool("route_health", {}))
    cost = Decimal(turn["cost_usd"])
    assert Decimal(out["spend"]["today"]["known_usd"]) == cost
    assert out["spend"]["daily_budget_usd"] == "5"
    assert f"Known spend: ${cost:.4f} today (UTC)" in text
    assert "daily budget $5" in text
    assert f"account quota left ${round(100 - cost, 6)}" in text


# ------------------------------------------------------------------------------------------ budget


async def test_the_daily_budget_refuses_every_paid_call_once_known_spend_reaches_it(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_DAILY_BUDGET_USD="0.00001")
    async with connect(settings) as client:
        first = data(await client.call_tool("alltoken_chat", {"prompt": "one two three", "model": "gpt-5.5"}))
        refusals = [
            error_text(await client.call_tool("alltoken_chat", {"prompt": "again"})),
            error_text(await client.call_tool("alltoken_image", {"prompt": "a fox"})),
            error_text(await client.call_tool("alltoken_video", {"prompt": "a wave"})),
        ]
        assert not (await client.call_tool("list_models", {})).is_error  # free calls go on
    spent = Decimal(first["cost_usd"])
    assert spent >= Decimal("0.00001")
    for text in refusals:
        assert f"Daily budget reached: ${spent:.4f} known spend today (UTC)" in text
        assert "ALLTOKEN_DAILY_BUDGET_USD=$0.00001" in text
        assert "resets at 00:00 UTC (in " in text
        assert "Nothing was sent" in text
    requests = sim.state.requests
    assert (requests[CHAT_CREATE], requests[IMAGE_CREATE], requests[VIDEO_CREATE]) == (1, 0, 0)


async def test_a_budget_not_yet_reached_lets_paid_calls_through(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url, ALLTOKEN_DAILY_BUDGET_USD="1")) as client:
        for _ in range(2):
            data(await client.call_tool("alltoken_chat", {"prompt": "hi", "model": "gpt-5.5"}))
    assert sim.state.requests[CHAT_CREATE] == 2


# ------------------------------------------------------------------------------------ confirmation


@asynccontextmanager
async def asking(
    settings: Settings, mode: str, answer: str | None
) -> AsyncIterator[tuple[Client, list[t.ElicitRequestParams]]]:
    """The server with a client that answers every elicitation with `answer` (None: declares none)."""
    asked: list[t.ElicitRequestParams] = []

    async def reply(context: ClientRequestContext, params: t.ElicitRequestParams) -> t.ElicitResult:
        asked.append(params)
        return t.ElicitResult(action=answer, content={} if answer == "accept" else None)  # type: ignore[arg-type]

    callback = reply if answer is not None else None
    async with Client(build_server(settings), mode=mode, elicitation_callback=callback) as client:  # type: ignore[arg-type]
        yield client, asked


@pytest.mark.parametrize("mode", ERAS)
async def test_a_declined_render_sends_nothing(tmp_path: Path, sim: RunningSimulator, mode: str) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="video")
    async with asking(settings, mode, "decline") as (client, asked):
        text = error_text(await client.call_tool("alltoken_video", VIDEO))
        listed = data(await client.call_tool("list_jobs", {}))
    assert "Not sent: the user declined the video render (ALLTOKEN_CONFIRM=video" in text
    assert sim.state.requests[VIDEO_CREATE] == 0
    assert listed["jobs"] == []
    [question] = asked
    assert isinstance(question, t.ElicitRequestFormParams)
    assert "5 s of video with seedance-1.5-pro at 720p" in question.message
    assert "about $0.2600 at the catalog price ($0.0520 per second)" in question.message
    assert "'waves at dusk'" in question.message


@pytest.mark.parametrize("mode", ERAS)
async def test_an_accepted_render_is_sent_once(tmp_path: Path, sim: RunningSimulator, mode: str) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="video")
    async with asking(settings, mode, "accept") as (client, asked):
        record = data(await client.call_tool("alltoken_video", VIDEO))
    assert record["status"] in ("queued", "processing")
    assert (len(asked), sim.state.requests[VIDEO_CREATE]) == (1, 1)


async def test_confirm_video_leaves_images_alone_and_confirm_media_asks_for_them(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    image = {**IMAGE, "wait_seconds": 0}
    async with asking(settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="video"), "auto", "decline") as (
        client,
        asked,
    ):
        data(await client.call_tool("alltoken_image", image))
        data(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert asked == []
    async with asking(settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="media"), "auto", "decline") as (
        client,
        asked,
    ):
        text = error_text(await client.call_tool("alltoken_image", image))
    assert "declined the image render" in text
    [question] = asked
    assert "2 image(s) with gpt-image-2, size auto, low quality" in question.message
    assert "about $0.0220 at the catalog price ($0.0110 per image)" in question.message
    assert sim.state.requests[IMAGE_CREATE] == 1  # only the unconfirmed one


@pytest.mark.parametrize("mode", ERAS)
async def test_confirmation_without_elicitation_support_is_refused_saying_why(
    tmp_path: Path, sim: RunningSimulator, mode: str
) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="media")
    async with asking(settings, mode, None) as (client, _):
        text = error_text(await client.call_tool("alltoken_image", IMAGE))
    assert "ALLTOKEN_CONFIRM=media requires a client that supports MCP form elicitation" in text
    assert "Nothing was sent" in text
    assert sim.state.requests[IMAGE_CREATE] == 0


@pytest.mark.parametrize("mode", ERAS)
async def test_a_stateless_team_server_asks_2026_clients_and_tells_2025_clients_why_it_cannot(
    tmp_path: Path, sim: RunningSimulator, mode: str
) -> None:
    """Behind round robin a 2025-era answer would be a new request to any replica, so a stateless server
    says so (not "this client does not support elicitation"). In the 2026 era the answer is a new call
    carrying the sealed requestState, which any replica opens with the shared secret."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.test_http import server_env
    from tests.test_lb_http import RoundRobin, port_of, replicas

    asked: list[t.ElicitRequestParams] = []

    async def accept(context: ClientRequestContext, params: t.ElicitRequestParams) -> t.ElicitResult:
        asked.append(params)
        return t.ElicitResult(action="accept", content={})

    env = server_env(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="media", ALLTOKEN_MCP_MEDIA_SECRET="s" * 40)
    with anyio.fail_after(60):
        async with replicas(env, 2, ["--stateless"]) as servers:
            transport = RoundRobin([port_of(s) for s in servers])
            async with (
                httpx2.AsyncClient(transport=transport, timeout=30) as http,
                Client(
                    streamable_http_client(servers[0].url, http_client=http),  # type: ignore[arg-type]
                    mode=mode,  # type: ignore[arg-type]
                    elicitation_callback=accept,
                ) as client,
            ):
                result = await client.call_tool("alltoken_image", {**IMAGE, "wait_seconds": 0})
    if mode == "legacy":
        text = error_text(result)
        assert "this server runs stateless (--stateless)" in text
        assert "Nothing was sent" in text
        assert (len(asked), sim.state.requests[IMAGE_CREATE]) == (0, 0)
    else:
        assert data(result)["status"] in ("queued", "processing", "completed")
        assert (len(asked), sim.state.requests[IMAGE_CREATE]) == (1, 1)
