"""The real server against a hostile upstream: endless bodies, endless streams, 429 storms, answers that
never come. Every tool call must end inside ALLTOKEN_MAX_WAIT_SECONDS (plus the 1 s grace) with an error
the calling model can act on, reading a bounded amount, and nothing may be paid twice.

The upstream is `tests.rawserver` (byte-exact scripted answers, endless ones included) or the simulator
with faults; the server is the real one, driven by the in-memory MCP client.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import mcp_types as t
import pytest

from alltoken_mcp.client._client import MAX_LIST_BODY
from alltoken_mcp.simulator import RunningSimulator
from alltoken_mcp.tools.chat import MAX_ANSWER_CHARS
from tests.pgkit import Database
from tests.rawserver import RawResponse, raw_server
from tests.serverkit import connect, data, error_text, settings_for

BUDGET = 2.0
"""ALLTOKEN_MAX_WAIT_SECONDS for these tests."""
BOUND = BUDGET + 1.0 + 0.5
"""What a call may take: the budget, the 1 s grace, and a little scheduling slack."""
IMAGE_CREATE = "/v1/images/generations/async"


def sse(delta: dict[str, str]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def rate_limited(retry_after: int) -> RawResponse:
    return RawResponse(
        status=429,
        headers=[("Content-Type", "application/json"), ("Retry-After", str(retry_after))],
        pieces=[b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'],
        framing="length",
    )


async def timed_call(
    home: Path, base_url: str, tool: str, arguments: dict[str, object]
) -> tuple[t.CallToolResult, float]:
    """The tool's result and how long the call took, with ALLTOKEN_MAX_WAIT_SECONDS = BUDGET."""
    settings = settings_for(home, base_url, ALLTOKEN_MAX_WAIT_SECONDS=str(BUDGET))
    async with connect(settings) as client:
        started = time.monotonic()
        with anyio.fail_after(BOUND + 5):
            result = await client.call_tool(tool, arguments)
        return result, time.monotonic() - started


# ------------------------------------------------------------------------------ endless answers


async def test_an_endless_chat_stream_is_cut_at_the_answer_bound_and_not_saved(tmp_path: Path) -> None:
    chunk = sse({"content": "x" * 4000})
    endless = RawResponse(pieces=itertools.repeat(chunk))
    async with raw_server(endless) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_MAX_WAIT_SECONDS="30")
        async with connect(settings) as client:
            with anyio.fail_after(30):
                out = data(await client.call_tool("alltoken_chat", {"prompt": "talk forever"}))
            with anyio.fail_after(5):
                await upstream.client_gone.wait()  # it stopped reading and closed the connection
    assert MAX_ANSWER_CHARS < len(out["text"]) <= MAX_ANSWER_CHARS + 64 * 1024
    assert out["finish_reason"] == "length"
    assert any("cut at 1,000,000 characters" in w for w in out["warnings"])
    assert out["conversation_id"] is None


async def test_endless_reasoning_without_an_answer_is_an_error_not_an_empty_success(tmp_path: Path) -> None:
    endless = RawResponse(pieces=itertools.repeat(sse({"reasoning_content": "hmm " * 1000})))
    async with raw_server(endless) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_MAX_WAIT_SECONDS="30")
        async with connect(settings) as client:
            with anyio.fail_after(30):
                text = error_text(await client.call_tool("alltoken_chat", {"prompt": "think forever"}))
    assert "characters of reasoning or tool calls and no answer" in text
    assert "Nothing was saved" in text


async def test_a_stream_that_stalls_after_a_few_words_returns_them_inside_the_budget(
    tmp_path: Path,
) -> None:
    stalled = RawResponse(pieces=[sse({"content": "The answer is"})], hold=True)
    async with raw_server(stalled) as upstream:
        result, took = await timed_call(tmp_path, upstream.base_url, "alltoken_chat", {"prompt": "q"})
    out = data(result)
    assert out["text"] == "The answer is"
    assert out["finish_reason"] == "timeout"
    assert took < BOUND


async def test_an_endless_json_listing_is_refused_at_its_cap(tmp_path: Path) -> None:
    endless = RawResponse(
        headers=[("Content-Type", "application/json")], pieces=itertools.repeat(b"[" * 65536)
    )
    # The catalog reads its four listings at once: every one of them is endless, and the video tool
    # reports the one it needed.
    async with raw_server(*[endless] * 4) as upstream:
        result, took = await timed_call(
            tmp_path, upstream.base_url, "alltoken_video", {"prompt": "a wave", "wait_seconds": 0}
        )
        with anyio.fail_after(5):
            await upstream.client_gone.wait()
    text = error_text(result)
    assert f"more than {MAX_LIST_BODY // 1024} KiB" in text
    assert "/v1/videos/models" in text
    assert took < BOUND


# ------------------------------------------------------------------------------ the budget


@pytest.mark.parametrize("tool", ["alltoken_video", "list_models", "route_health", "alltoken_chat"])
@pytest.mark.parametrize("retry_after", [20, 120])
async def test_a_429_storm_ends_the_call_inside_the_budget_with_the_retry_after(
    tmp_path: Path, tool: str, retry_after: int
) -> None:
    arguments: dict[str, object] = {"prompt": "hi"} if tool.startswith("alltoken_") else {}
    async with raw_server(*[rate_limited(retry_after)] * 40) as upstream:
        result, took = await timed_call(tmp_path, upstream.base_url, tool, arguments)
        requests = len(upstream.requests)
    text = error_text(result)
    assert "rate-limiting" in text
    assert f"Retry in {retry_after} s" in text  # the server's own figure, not the loop's sleep cap
    assert took < BOUND
    assert requests <= 4  # one per listing fetched, none repeated: a 20 s wait does not fit


async def test_a_rate_limited_image_submit_returns_the_job_queued_and_the_poller_carries_on(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path=IMAGE_CREATE, method="POST", status=429, retry_after=3)
    result, took = await timed_call(tmp_path, sim.base_url, "alltoken_image", {"prompt": "a fox"})
    job = data(result)
    assert took < BOUND
    assert job["status"] == "queued"
    # the 3 s asked, stretched by up to a fifth
    assert re.search(r"rate-limiting this key; the submit is retried in [34] s", job["note"])
    assert sim.state.images == {}
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        with anyio.fail_after(20):
            done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 15}))
    assert done["status"] == "completed", done
    assert len(sim.state.images) == 1
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] == 2


async def test_a_create_that_is_never_answered_returns_the_job_inside_the_budget(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path=IMAGE_CREATE, method="POST", latency_ms=60_000)
    result, took = await timed_call(tmp_path, sim.base_url, "alltoken_image", {"prompt": "a fox"})
    job = data(result)
    assert took < BOUND
    assert job["status"] == "queued"
    assert "submit outcome unknown" in job["note"]


async def test_job_cancel_under_a_429_storm_ends_inside_the_budget(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_MAX_WAIT_SECONDS=str(BUDGET))
    async with connect(settings) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "waves", "wait_seconds": 0}))
        sim.state.add_fault(
            path="/v1/videos/generations/{task_id}/cancel", status=429, retry_after=30, count=None
        )
        started = time.monotonic()
        with anyio.fail_after(BOUND + 5):
            result = await client.call_tool("job_cancel", {"job_id": job["job_id"]})
        took = time.monotonic() - started
    assert took < BOUND
    assert "Retry in 30 s" in error_text(result)


def test_a_zero_budget_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be more than 0"):
        settings_for(tmp_path, ALLTOKEN_MAX_WAIT_SECONDS="0")


# ------------------------------------------------------------------------------ failed status checks

VIDEO_TASK = "/v1/videos/generations/{task_id}"


async def _video_until_settled(sim: RunningSimulator, home: Path) -> dict[str, object]:
    async with connect(settings_for(home, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "waves", "wait_seconds": 0}))
        sim.state.advance_to(sim.state.videos[str(job["upstream_id"])].timeline.finished)
        with anyio.fail_after(30):
            return data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 25}))


async def test_status_checks_refused_with_403_fail_the_job_with_the_reason(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path=VIDEO_TASK, method="GET", status=403, message="key not allowed", count=None)
    record = await _video_until_settled(sim, tmp_path)
    assert record["status"] == "failed", record
    message = str(record["error"]["message"])  # type: ignore[index]
    assert "Gave up after 3 failed attempts" in message
    assert "key not allowed" in message
    assert "may still finish upstream and be charged" in message
    assert sim.state.requests[f"GET {VIDEO_TASK}"] == 3


async def test_server_errors_on_status_checks_are_retried_and_the_video_completes(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path=VIDEO_TASK, method="GET", status=503, count=2)
    record = await _video_until_settled(sim, tmp_path)
    assert record["status"] == "completed", record
    assert sim.state.requests[f"GET {VIDEO_TASK}"] >= 3


async def test_an_image_answer_with_more_images_than_asked_for_saves_none_of_them(
    sim: RunningSimulator, api: httpx2.AsyncClient, tmp_path: Path
) -> None:
    listing = (await api.get("/images/models")).content
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    task = {"id": "igen_0123456789abcdef01234567", "status": "completed", "model": "gpt-image-2"}
    flood = json.dumps({**task, "data": [{"b64_json": png}] * 50}).encode()

    def answer(body: bytes, status: int = 200) -> RawResponse:
        return RawResponse(
            status=status, headers=[("Content-Type", "application/json")], pieces=[body], framing="length"
        )

    queued = json.dumps({**task, "status": "queued"}).encode()
    # The image model list answers each of the catalog's four listings (they are read at once, in any
    # order); then the create and the polls.
    script = [*[answer(listing)] * 4, answer(queued, 202), *[answer(flood)] * 3]
    async with raw_server(*script) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_OUTPUT_DIR=str(tmp_path / "out"))
        async with connect(settings) as client:
            with anyio.fail_after(20):
                arguments = {"prompt": "a fox", "wait_seconds": 15}
                record = data(await client.call_tool("alltoken_image", arguments))
    assert record["status"] == "failed", record
    assert "more than the 1 image(s) this job asked for" in record["error"]["message"]
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_create_refused_with_429_starts_no_key_window_so_a_late_resend_still_goes_out(
    sim: RunningSimulator, database: Database
) -> None:
    # Every attempt of the first submit is refused (a 429 proves nothing was created): the job keeps no
    # `submitted_at`, so even long after, the poller may still send it — instead of failing a job that
    # was never charged as "may have been charged".
    sim.state.add_fault(path=IMAGE_CREATE, method="POST", status=429, retry_after=0, count=4)
    async with connect(settings_for(database.home, sim.base_url, **database.env())) as client:
        job = data(await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 0}))
        assert job["status"] == "queued"
        async with database.opened() as store:
            stored = await store.get_job(job["job_id"])
            assert stored is not None
            assert stored.submitted_at is None
            await store.update_job(stored.job_id, created_at=stored.created_at - 3600)
        sim.state.advance(60)
        with anyio.fail_after(20):
            done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 15}))
    assert done["status"] == "completed", done
    assert len(sim.state.images) == 1


async def test_a_burst_of_list_models_behind_a_failing_fetch_shares_its_outcome(tmp_path: Path) -> None:
    failing = RawResponse(
        status=503, headers=[("Content-Type", "application/json")], pieces=[b"{}"], framing="length"
    )
    async with raw_server(*[failing] * 400) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_MAX_WAIT_SECONDS="30")
        async with connect(settings) as client:
            results: list[t.CallToolResult] = []

            async def one() -> None:
                results.append(await client.call_tool("list_models", {}))

            with anyio.fail_after(25):
                await one()  # a failed fetch before: the burst must still try once itself
                before = len(upstream.requests)
                async with anyio.create_task_group() as tg:
                    for _ in range(10):
                        tg.start_soon(one)
        burst = len(upstream.requests) - before
    assert len(results) == 11
    assert all("server error" in error_text(result) for result in results)
    assert 0 < burst <= 16  # one fetch: 4 listings × 4 attempts, not one fetch per queued call


# ------------------------------------------------------------------------------ shapes that cost memory


async def test_endless_new_tool_calls_reach_the_answer_bound(tmp_path: Path) -> None:
    def calls() -> Iterator[bytes]:
        for index in itertools.count():
            call = {"index": index, "id": f"c{index}", "function": {"name": "f", "arguments": ""}}
            yield sse({"tool_calls": [call]})  # type: ignore[dict-item]

    async with raw_server(RawResponse(pieces=calls())) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_MAX_WAIT_SECONDS="30")
        async with connect(settings) as client:
            with anyio.fail_after(30):
                text = error_text(await client.call_tool("alltoken_chat", {"prompt": "call tools forever"}))
    assert "characters of reasoning or tool calls and no answer" in text


async def test_an_event_that_never_ends_is_refused(tmp_path: Path) -> None:
    endless = RawResponse(pieces=itertools.repeat(b"data: x\n" * 1000))
    async with raw_server(endless) as upstream:
        settings = settings_for(tmp_path, upstream.base_url, ALLTOKEN_MAX_WAIT_SECONDS="30")
        async with connect(settings) as client:
            with anyio.fail_after(30):
                text = error_text(await client.call_tool("alltoken_chat", {"prompt": "hi"}))
    assert "data lines" in text
    assert "without ending it" in text


async def test_a_listing_with_too_many_entries_is_refused_before_it_is_validated(tmp_path: Path) -> None:
    rows = json.dumps({"data": [{"id": f"m{i}"} for i in range(5000)]}).encode()
    listing = RawResponse(headers=[("Content-Type", "application/json")], pieces=[rows], framing="length")
    async with raw_server(*[listing] * 4) as upstream:  # the catalog's four listings
        result, took = await timed_call(
            tmp_path, upstream.base_url, "alltoken_video", {"prompt": "a wave", "wait_seconds": 0}
        )
    assert "listed 5000 entries" in error_text(result)
    assert took < BOUND


async def test_a_complete_answer_whose_stream_stays_open_is_complete_and_saved(tmp_path: Path) -> None:
    answer = [
        sse({"content": "All done."}),
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    async with raw_server(RawResponse(pieces=answer, hold=True)) as upstream:
        result, took = await timed_call(tmp_path, upstream.base_url, "alltoken_chat", {"prompt": "q"})
    out = data(result)
    assert (out["text"], out["finish_reason"]) == ("All done.", "stop")
    assert out["conversation_id"] is not None
    assert took < BUDGET


async def test_status_answers_that_do_not_fit_the_api_fail_the_job_after_three_like_a_refusal(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # A 200 carrying an error envelope instead of a task: no id, no status. Asking again will not help.
    sim.state.add_fault(path=VIDEO_TASK, method="GET", status=200, message="not a task", count=None)
    record = await _video_until_settled(sim, tmp_path)
    assert record["status"] == "failed", record
    message = str(record["error"]["message"])  # type: ignore[index]
    assert "Gave up after 3 failed attempts" in message
    assert "does not fit the API" in message
    assert sim.state.requests[f"GET {VIDEO_TASK}"] == 3
