"""`JobManager`'s submit and reconcile branches, one test each, fast: a real store (SQLite in tmp_path), a
real client against the simulator on loopback (or tests/rawserver.py for answers the simulator never
gives), and no MCP server in between. Each test asserts what the branch exists to get right — the stored
row, what reached the upstream, and that a paid request is never sent twice."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.errors import APIStatusError, MissingAPIKeyError
from alltoken_mcp.jobs import IDEMPOTENCY_TRUST_SECONDS, JobManager, SubmitRejected
from alltoken_mcp.settings import Settings
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from alltoken_mcp.store import Job, Store, new_job_id, process_owner
from tests.pgkit import Database
from tests.rawserver import RawResponse, raw_server
from tests.serverkit import DEAD_BASE_URL, settings_for

IMAGE_CREATE = "POST /v1/images/generations/async"
VIDEO_CREATE = "POST /v1/videos/generations"
VIDEO = {"model": "seedance-1.5-pro", "prompt": "waves at dusk", "duration": 6, "resolution": "480p"}
IMAGE = {"model": "gpt-image-2", "prompt": "a red fox"}
PAST_WINDOW = IDEMPOTENCY_TRUST_SECONDS + 5
"""How long ago a lost create was sent when AllToken no longer remembers its key."""


@asynccontextmanager
async def manager(settings: Settings, database: Database) -> AsyncIterator[tuple[JobManager, Store]]:
    """A job manager on a fresh store; one attempt per request, so a failure is seen at once."""
    store = await database.open()
    try:
        async with AllTokenClient(
            base_url=settings.base_url, api_key=settings.api_key, retry=RetryPolicy(max_attempts=1)
        ) as client:
            yield JobManager(store=store, client=client, settings=settings, owner=process_owner()), store
    finally:
        await store.close()


def creates(sim: RunningSimulator, kind: str = "video") -> int:
    return sim.state.requests[IMAGE_CREATE if kind == "image" else VIDEO_CREATE]


# ------------------------------------------------------------------------------------------ submit


async def test_an_accepted_submit_stores_the_task_and_releases_the_lease(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    async with manager(settings_for(tmp_path, sim.base_url), database) as (jobs, store):
        job = await jobs.submit("image", dict(IMAGE))
        stored = await store.get_job(job.job_id)
    assert job.submit_state == "accepted"
    assert job.upstream_id in sim.state.images
    assert job.status in ("queued", "processing")
    assert stored is not None
    assert (stored.submit_state, stored.upstream_id) == ("accepted", job.upstream_id)
    assert stored.lease_owner is None  # released: the poller may take it at once
    assert stored.upstream_url == sim.base_url
    # Sent once, under the key that was on disk before it left.
    assert creates(sim, "image") == 1
    assert [key for (_, _, key) in sim.state.idempotency] == [job.idempotency_key]


async def test_a_refused_submit_fails_the_job_as_rejected(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    sim.state.add_fault(path="/v1/videos/generations", method="POST", status=400, message="bad ratio")
    async with manager(settings_for(tmp_path, sim.base_url), database) as (jobs, store):
        with pytest.raises(SubmitRejected) as caught:
            await jobs.submit("video", dict(VIDEO))
        (stored,) = await store.list_jobs()
    assert isinstance(caught.value.cause, APIStatusError)
    assert caught.value.record.job_id == stored.job_id
    assert (stored.status, stored.submit_state) == ("failed", "rejected")
    assert stored.error_code == "invalid_request"
    assert "bad ratio" in (stored.error_message or "")
    assert sim.state.tasks_created["videos"] == 0


async def test_a_submit_without_a_key_is_rejected_before_anything_is_sent(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    async with manager(settings_for(tmp_path, sim.base_url, api_key=None), database) as (jobs, store):
        with pytest.raises(SubmitRejected) as caught:
            await jobs.submit("image", dict(IMAGE))
        (stored,) = await store.list_jobs()
    assert isinstance(caught.value.cause, MissingAPIKeyError)
    assert (stored.status, stored.submit_state, stored.error_code) == (
        "failed",
        "rejected",
        "missing_api_key",
    )
    assert creates(sim, "image") == 0


async def test_a_submit_that_never_left_is_kept_to_be_sent_again_with_no_window_running(
    tmp_path: Path,
    database: Database,
) -> None:
    async with manager(settings_for(tmp_path, DEAD_BASE_URL), database) as (jobs, store):
        before = time.time()
        job = await jobs.submit("video", dict(VIDEO))
        stored = await store.get_job(job.job_id)
    assert stored is not None
    assert (stored.submitted_at, stored.note, stored.next_poll_at) == (None, job.note, job.next_poll_at)
    assert (job.status, job.submit_state, job.upstream_id) == ("queued", "sent", None)
    # Nothing reached AllToken: no key is remembered there, so the resend is not bound to its window.
    assert job.submitted_at is None
    assert job.poll_failures == 1
    assert job.next_poll_at >= before + 1  # backed off, not retried in a tight loop
    assert (job.note or "").startswith("submit outcome unknown, will retry: ")
    assert stored.lease_owner is None


async def test_a_submit_whose_answer_was_lost_keeps_its_send_time(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    sim.state.add_fault(path="/v1/videos/generations", method="POST", drop="before_body")
    async with manager(settings_for(tmp_path, sim.base_url), database) as (jobs, _):
        before = time.time()
        job = await jobs.submit("video", dict(VIDEO))
    assert sim.state.tasks_created["videos"] == 1  # AllToken did the work; we never heard back
    assert (job.status, job.submit_state, job.upstream_id) == ("queued", "sent", None)
    # The key window started when it was sent: a resend after it must not happen.
    assert job.submitted_at is not None
    assert before <= job.submitted_at <= time.time()
    assert (job.note or "").startswith("submit outcome unknown, will retry: ")


async def test_a_rate_limited_submit_waits_as_long_as_alltoken_asks(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    sim.state.add_fault(path="/v1/images/generations/async", method="POST", status=429, retry_after=7)
    async with manager(settings_for(tmp_path, sim.base_url), database) as (jobs, _):
        before = time.time()
        job = await jobs.submit("image", dict(IMAGE))
    assert (job.status, job.submit_state) == ("queued", "sent")
    # as long as asked, and up to a fifth longer so one 429's jobs spread out
    assert re.match(r"AllToken is rate-limiting this key; the submit is retried in [78] s", job.note or "")
    assert before + 7 <= job.next_poll_at <= time.time() + 7 * 1.2
    assert sim.state.tasks_created["images"] == 0


def conflict(error: dict[str, Any]) -> RawResponse:
    body = json.dumps({"error": {"code": "duplicate_request", "message": "same key", **error}}).encode()
    return RawResponse(
        status=409, headers=[("Content-Type", "application/json")], pieces=[body], framing="length"
    )


async def test_a_duplicate_answer_adopts_the_original_task(tmp_path: Path, database: Database) -> None:
    async with (
        raw_server(conflict({"task_id": "vgen_original"})) as upstream,
        manager(settings_for(tmp_path, upstream.base_url), database) as (jobs, _),
    ):
        job = await jobs.submit("video", dict(VIDEO))
    assert (job.submit_state, job.upstream_id, job.status) == ("accepted", "vgen_original", "queued")
    assert job.note == "adopted the original task (same key)"
    assert [r.path for r in upstream.requests] == ["/v1/videos/generations"]
    assert upstream.requests[0].headers["idempotency-key"] == job.idempotency_key


async def test_a_duplicate_answer_without_the_task_id_is_asked_again_later(
    tmp_path: Path, database: Database
) -> None:
    async with (
        raw_server(conflict({})) as upstream,
        manager(settings_for(tmp_path, upstream.base_url), database) as (jobs, _),
    ):
        before = time.time()
        job = await jobs.submit("video", dict(VIDEO))
    assert (job.submit_state, job.upstream_id, job.status) == ("sent", None, "queued")
    assert job.note == "AllToken reported a duplicate without its task id"
    assert job.poll_failures == 1
    assert job.next_poll_at >= before + 1


# ---------------------------------------------------------------------------- resend and reconcile


def lost_create(
    kind: str, body: dict[str, Any], *, sent_ago: float | None, key: str = "", **changes: Any
) -> Job:
    """A job whose create outcome is unknown (the server stopped before the answer was stored)."""
    now = time.time()
    values: dict[str, Any] = dict(
        job_id=new_job_id(),
        kind=kind,  # type: ignore[arg-type]
        status="queued",
        model=body["model"],
        prompt=body["prompt"],
        request=body,
        idempotency_key=key or f"alltoken-mcp-lost-{new_job_id()}",
        submit_state="sent",
        submitted_at=None if sent_ago is None else now - sent_ago,
        created_at=now - (sent_ago or 0),
        updated_at=now - (sent_ago or 0),
    )
    return Job(**{**values, **changes})


async def listed(sim: RunningSimulator, body: dict[str, Any], key: str | None = None) -> str:
    """A video created on the simulator by another request of the same account; its task id."""
    headers = {"Authorization": f"Bearer {SIM_API_KEY}", **({"Idempotency-Key": key} if key else {})}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=headers, timeout=10) as api:
        response = await api.post("/videos/generations", json=body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


async def resolved(tmp_path: Path, database: Database, sim: RunningSimulator, *lost: Job) -> list[Job]:
    """Store the lost jobs, run the poller until none is left unconfirmed, and return them as stored."""
    async with manager(settings_for(tmp_path, sim.base_url), database) as (jobs, store):
        for job in lost:
            await store.insert_job(job)
        async with anyio.create_task_group() as tg:
            tg.start_soon(jobs.run)
            with anyio.fail_after(10):
                while True:
                    now = [await jobs.get(job.job_id) for job in lost]
                    if all(j.submit_state != "sent" or not j.active for j in now):
                        break
                    await anyio.sleep(0.02)  # the poller works in its own task; the store is the only view
            tg.cancel_scope.cancel()
    return now


async def test_a_create_that_never_left_is_sent_now_and_its_window_starts(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    before = time.time()
    (job,) = await resolved(tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=None))
    assert job.submit_state == "accepted"
    assert job.upstream_id in sim.state.videos
    assert job.submitted_at is not None
    assert job.submitted_at >= before
    assert creates(sim) == 1


async def test_a_lost_create_inside_the_key_window_is_resent_and_adopts_the_original(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    key = "alltoken-mcp-resent-inside-window"
    original = await listed(sim, dict(VIDEO), key=key)
    (job,) = await resolved(tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=5, key=key))
    assert job.upstream_id == original
    assert job.note == "adopted the original task (same key)"
    assert sim.state.tasks_created["videos"] == 1  # the resend created nothing new


async def test_a_lost_image_create_past_the_window_fails_truthfully_without_a_resend(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    (job,) = await resolved(tmp_path, database, sim, lost_create("image", dict(IMAGE), sent_ago=PAST_WINDOW))
    assert (job.status, job.error_code, job.upstream_id) == ("failed", "submit_unconfirmed", None)
    assert "AllToken offers no way to look up an image task without its id" in (job.error_message or "")
    assert "no second task was created" in (job.error_message or "")
    assert creates(sim, "image") == 0


async def test_a_lost_video_create_past_the_window_adopts_the_one_matching_listed_task(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    lost = lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW)
    task_id = await listed(sim, dict(VIDEO))
    (job,) = await resolved(tmp_path, database, sim, lost)
    assert (job.submit_state, job.upstream_id) == ("accepted", task_id)
    assert job.note == "recovered from AllToken's video list"
    assert creates(sim) == 1  # only the listed one: ours was not sent again


@pytest.mark.parametrize(
    "other",
    [
        {**VIDEO, "duration": 8},
        {**VIDEO, "resolution": "720p"},
        {**VIDEO, "model": "seedance-2.5"},
    ],
    ids=["another-duration", "another-resolution", "another-model"],
)
async def test_a_listed_video_with_other_parameters_is_not_adopted(
    sim: RunningSimulator, tmp_path: Path, database: Database, other: dict[str, Any]
) -> None:
    await listed(sim, other)
    (job,) = await resolved(tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW))
    assert (job.status, job.error_code, job.upstream_id) == ("failed", "submit_unconfirmed", None)
    assert "No matching video was found in AllToken's task list." in (job.error_message or "")
    assert creates(sim) == 1


async def test_a_listed_video_created_long_after_the_window_is_not_adopted(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    await listed(sim, dict(VIDEO))  # created now; the lost create was sent an hour ago
    (job,) = await resolved(tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=3600))
    assert (job.status, job.upstream_id) == ("failed", None)
    assert "No matching video was found" in (job.error_message or "")


async def test_a_listed_video_another_job_owns_is_not_adopted(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    task_id = await listed(sim, dict(VIDEO))
    owner = lost_create(
        "video",
        dict(VIDEO),
        sent_ago=PAST_WINDOW,
        submit_state="accepted",
        upstream_id=task_id,
        status="failed",
    )
    (job, _) = await resolved(
        tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW), owner
    )
    assert (job.status, job.upstream_id) == ("failed", None)
    assert "No matching video was found" in (job.error_message or "")


async def test_two_equally_matching_listed_videos_are_neither_adopted(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    first, second = await listed(sim, dict(VIDEO)), await listed(sim, dict(VIDEO))
    (job,) = await resolved(tmp_path, database, sim, lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW))
    assert (job.status, job.upstream_id) == ("failed", None)
    assert f"2 videos in AllToken's task list match it equally well ({first}, {second}" in (
        job.error_message or ""
    ) or f"({second}, {first}" in (job.error_message or "")


async def test_a_listed_video_a_sibling_could_own_is_adopted_by_neither(
    sim: RunningSimulator, tmp_path: Path, database: Database
) -> None:
    task_id = await listed(sim, dict(VIDEO))
    ours = lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW)
    sibling = lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW + 30)
    jobs = await resolved(tmp_path, database, sim, ours, sibling)
    for job, rival in ((jobs[0], sibling), (jobs[1], ours)):
        assert (job.status, job.upstream_id) == ("failed", None)
        assert f"({task_id}) could equally be that of {rival.job_id}" in (job.error_message or "")
    assert creates(sim) == 1


@pytest.mark.parametrize(
    "sibling",
    [
        dict(sent_ago=PAST_WINDOW + 86400 + 60, status="failed", error_code="submit_unconfirmed"),
        dict(sent_ago=PAST_WINDOW, status="failed", submit_state="rejected", error_code="invalid_request"),
        dict(sent_ago=PAST_WINDOW, submit_state="accepted", upstream_id="vgen_its_own_task"),
        dict(sent_ago=PAST_WINDOW, request={**VIDEO, "duration": 8}),
        dict(sent_ago=None),
    ],
    ids=["sent-another-day", "refused-by-alltoken", "confirmed-elsewhere", "other-parameters", "never-sent"],
)
async def test_a_sibling_that_cannot_own_the_listed_video_is_no_rival(
    sim: RunningSimulator, tmp_path: Path, database: Database, sibling: dict[str, Any]
) -> None:
    task_id = await listed(sim, dict(VIDEO))
    ours = lost_create("video", dict(VIDEO), sent_ago=PAST_WINDOW)
    # Recorded for another upstream, so that this poller leaves it as it is (rivals are any upstream's).
    other = lost_create("video", dict(VIDEO), upstream_url="http://elsewhere.example/v1", **sibling)
    async with manager(settings_for(tmp_path, sim.base_url), database) as (_, store):
        await store.insert_job(other)
    (job,) = await resolved(tmp_path, database, sim, ours)
    assert (job.submit_state, job.upstream_id) == ("accepted", task_id)
