"""Crash safety: `kill -9` the stdio server in every phase of a media job, restart it on the same home,
and check that the job finishes with no lost result and no second paid task.

The server is the installed `alltoken-mcp` entry point, spoken to in raw JSON-RPC over its pipes so the
test holds its pid (`StdioServer`); the simulator runs in this process and is reached over loopback.
Phases are pinned with simulator faults rather than timing: a `latency_ms` fault keeps a request from
being processed (nothing created yet), a `hold_ms` fault processes it and keeps the answer back (created,
but never heard of), a `mid_body` hold stops a download after its file was opened.

Every test runs on both store backends (the `database` fixture): the SQLite file in the home directory,
and a fresh PostgreSQL database on the session's server. The test reads (and ages) what the servers
stored through the store API, as a server would, so the same assertions hold on either.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig
from alltoken_mcp.simulator.state import ImageTask, VideoTask
from alltoken_mcp.store import Job
from tests import pgkit
from tests.rawstdio import StdioServer, stdio_servers

IMAGE_CREATE = "/v1/images/generations/async"
IMAGE_TASK = "/v1/images/generations/{task_id}"
VIDEO_CREATE = "/v1/videos/generations"
VIDEO_TASK = "/v1/videos/generations/{task_id}"
HOLD_MS = 30_000
"""Long enough that a held request never finishes within a test (the simulator cancels it at teardown)."""
STEP_SECONDS = 0.02
WAIT_SECONDS = 20


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01)


# ----------------------------------------------------------------------------------- the subprocess


def server_env(home: Path, base_url: str, database: pgkit.Database | None = None) -> dict[str, str]:
    """A server on `home` (its SQLite file there), or on `database` when one is given (either backend)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALLTOKEN_")}
    env.update(
        {
            "ALLTOKEN_BASE_URL": base_url,
            "ALLTOKEN_API_KEY": SIM_API_KEY,
            "ALLTOKEN_MCP_HOME": str(home),
            "ALLTOKEN_OUTPUT_DIR": str(home / "out"),
            "ALLTOKEN_INPUT_DIRS": str(home),
            "ALLTOKEN_MAX_WAIT_SECONDS": str(WAIT_SECONDS),
        }
    )
    if database is not None:
        env.update(database.env())
    return env


@asynccontextmanager
async def mcp_servers(
    database: pgkit.Database, base_url: str, count: int
) -> AsyncIterator[list[StdioServer]]:
    """`count` started and initialized servers sharing one home and one state database. They are
    killed on exit: the tests here are done with them by then, and a clean stop on stdin EOF is tested
    in test_server_stdio."""
    async with stdio_servers([server_env(database.home, base_url, database)] * count) as servers:
        yield servers


@asynccontextmanager
async def mcp_server(database: pgkit.Database, base_url: str) -> AsyncIterator[StdioServer]:
    async with mcp_servers(database, base_url, 1) as (server,):
        yield server


# ----------------------------------------------------------------------------------- state helpers


async def until(
    condition: Callable[[], bool],
    what: str,
    seconds: float = 10,
    detail: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Wait for a condition another process brings about (no event to wait on across processes)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {'' if detail is None else await detail()}")
        await anyio.sleep(STEP_SECONDS)


async def stored_jobs(database: pgkit.Database) -> list[Job]:
    """Every job the servers stored, oldest first (either backend, read through the store API)."""
    async with database.opened() as store:
        jobs = await store.list_jobs(limit=1000)
    return sorted(jobs, key=lambda job: (job.created_at, job.job_id))


async def only_job(database: pgkit.Database) -> Job:
    jobs = await stored_jobs(database)
    assert len(jobs) == 1, jobs
    return jobs[0]


async def lease_of(database: pgkit.Database) -> tuple[str | None, float | None, str | None]:
    """Who holds the only job's lease, until when, and the job's note (to say why nothing happened)."""
    job = await only_job(database)
    return job.lease_owner, job.lease_expires_at, job.note


async def age_submission(database: pgkit.Database, seconds: float) -> None:
    """Pretend the create requests went out `seconds` earlier (past the idempotency window)."""
    async with database.opened() as store:
        for job in await store.list_jobs(limit=1000):
            if job.submitted_at is not None:
                await store.update_job(job.job_id, submitted_at=job.submitted_at - seconds)


def partial_files(out: Path) -> list[Path]:
    return sorted(out.glob(".*.partial")) if out.exists() else []


def assert_files_intact(record: dict[str, Any], out: Path) -> None:
    """Every recorded file is whole (size and sha256 match), and the output dir holds nothing else."""
    assert record["files"], record
    for saved in record["files"]:
        data = Path(saved["path"]).read_bytes()
        assert len(data) == saved["bytes"]
        assert hashlib.sha256(data).hexdigest() == saved["sha256"]
    assert partial_files(out) == [], "temp files were left behind"
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f["path"]).name for f in record["files"])


def finish_all(sim: RunningSimulator) -> None:
    """Jump the simulator's clock to the end of every render (no waiting for it)."""
    tasks: list[ImageTask | VideoTask] = [*sim.state.images.values(), *sim.state.videos.values()]
    sim.state.advance_to(max(task.timeline.finished for task in tasks))


IMAGE_ARGS = {"prompt": "a lighthouse in fog", "quality": "low", "wait_seconds": 0}
VIDEO_ARGS = {"prompt": "waves at dusk", "wait_seconds": 0}


def tool_call(kind: str) -> tuple[str, dict[str, Any]]:
    return ("alltoken_image", IMAGE_ARGS) if kind == "image" else ("alltoken_video", VIDEO_ARGS)


def tasks_of(sim: RunningSimulator, kind: str) -> dict[str, Any]:
    return dict(sim.state.images if kind == "image" else sim.state.videos)


async def lose_the_create_answer(sim: RunningSimulator, database: pgkit.Database, kind: str) -> None:
    """A server submits a job; AllToken creates the task but the answer never arrives; the server dies."""
    create = IMAGE_CREATE if kind == "image" else VIDEO_CREATE
    sim.state.add_fault(path=create, method="POST", hold_ms=HOLD_MS)  # created, answer never arrives
    async with mcp_server(database, sim.base_url) as first:
        await first.start_tool(*tool_call(kind))
        await until(lambda: len(tasks_of(sim, kind)) == 1, "the task to be created")
        await first.kill()


async def settled(server: StdioServer, job_id: str) -> dict[str, Any]:
    """The job record once it left the active states (or the wait ran out)."""
    return await server.tool("job_status", {"job_id": job_id, "wait_seconds": WAIT_SECONDS})


# ----------------------------------------------------------------------------------- the phases


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_killed_before_the_create_was_processed(
    sim: RunningSimulator, database: pgkit.Database, kind: str
) -> None:
    home, create = database.home, IMAGE_CREATE if kind == "image" else VIDEO_CREATE
    sim.state.add_fault(path=create, method="POST", latency_ms=HOLD_MS)  # reaches AllToken, not processed
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            await first.start_tool(*tool_call(kind))
            await until(lambda: sim.state.requests[f"POST {create}"] == 1, "the create request")
            row = await only_job(database)
            await first.kill()
        assert (row.submit_state, row.upstream_id) == ("sent", None)  # key on disk, no answer
        assert tasks_of(sim, kind) == {}
        async with mcp_server(database, sim.base_url) as second:
            await until(
                lambda: len(tasks_of(sim, kind)) == 1,
                "the restarted server to resubmit",
                detail=lambda: lease_of(database),
            )
            finish_all(sim)
            record = await settled(second, row.job_id)
    assert record["status"] == "completed", record
    assert list(tasks_of(sim, kind)) == [record["upstream_id"]]  # exactly one paid task
    assert_files_intact(record, home / "out")


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_killed_after_the_create_was_processed_adopts_the_task(
    sim: RunningSimulator, database: pgkit.Database, kind: str
) -> None:
    home, create = database.home, IMAGE_CREATE if kind == "image" else VIDEO_CREATE
    with anyio.fail_after(40):
        await lose_the_create_answer(sim, database, kind)
        row = await only_job(database)
        assert (row.submit_state, row.upstream_id) == ("sent", None)
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, row.job_id)
    assert record["status"] == "completed", record
    assert sim.state.requests[f"POST {create}"] == 2  # resent with the stored key...
    assert list(tasks_of(sim, kind)) == [record["upstream_id"]]  # ...and the original task adopted
    assert_files_intact(record, home / "out")


async def test_after_the_key_window_a_lost_video_create_is_found_in_the_list(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    with anyio.fail_after(40):
        await lose_the_create_answer(sim, database, "video")
        sim.state.forget_idempotency()  # as if the 60 s window had passed upstream...
        await age_submission(database, 70.0)  # ...and here
        job_id = (await only_job(database)).job_id
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, job_id)
    assert record["status"] == "completed", record
    assert sim.state.requests[f"POST {VIDEO_CREATE}"] == 1  # not sent again: the key is no longer trusted
    assert sim.state.requests[f"GET {VIDEO_CREATE}"] >= 1  # reconciled through the list
    assert list(sim.state.videos) == [record["upstream_id"]]
    assert_files_intact(record, home / "out")


async def test_after_the_key_window_a_lost_image_create_fails_truthfully_without_resending(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    with anyio.fail_after(40):
        await lose_the_create_answer(sim, database, "image")
        sim.state.forget_idempotency()
        await age_submission(database, 70.0)
        job_id = (await only_job(database)).job_id
        async with mcp_server(database, sim.base_url) as second:
            record = await second.tool("job_status", {"job_id": job_id, "wait_seconds": WAIT_SECONDS})
    assert record["status"] == "failed", record
    message = record["error"]["message"]
    assert "may have reached AllToken" in message
    assert "not sent again" in message
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] == 1
    assert len(sim.state.images) == 1
    assert not (home / "out").exists() or list((home / "out").iterdir()) == []


async def test_killed_mid_poll_the_restarted_server_finishes_the_video(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            # The first status poll is answered "processing" upstream, and the answer is held.
            sim.state.add_fault(path=VIDEO_TASK, method="GET", hold_ms=HOLD_MS)
            submitted = await first.tool(*tool_call("video"))
            task = sim.state.videos[submitted["upstream_id"]]
            sim.state.advance_to(task.timeline.started)
            await until(lambda: sim.state.faults == [], "a poll to be in flight")
            await first.kill()
        assert (await only_job(database)).status in ("queued", "processing")
        assert task.timeline.phase(sim.state.now()) == "processing"
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, submitted["job_id"])
    assert record["status"] == "completed", record
    assert list(sim.state.videos) == [submitted["upstream_id"]]
    assert sim.state.requests[f"POST {VIDEO_CREATE}"] == 1
    assert_files_intact(record, home / "out")


async def test_killed_mid_download_leaves_no_partial_file_and_the_restart_completes(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    out = database.home / "out"
    sim.state.add_fault(path="/_cdn/videos/{name}", method="GET", hold_ms=HOLD_MS, hold_at="mid_body")
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            submitted = await first.tool(*tool_call("video"))
            finish_all(sim)
            await until(lambda: partial_files(out) != [], "the download to have started")
            await first.kill()
        row = await only_job(database)
        assert row.status in ("queued", "processing")
        assert row.video_url  # kept before the download started
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, submitted["job_id"])
    assert record["status"] == "completed", record
    assert list(sim.state.videos) == [submitted["upstream_id"]]
    assert sim.state.requests["GET /_cdn/videos/{name}"] == 2
    assert_files_intact(record, out)  # the killed download's temp file is gone too


async def test_killed_after_the_one_time_image_delivery_recovers_it_from_r2(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    # The poll that hands out the base64 is processed (the delivery is spent), its answer never arrives.
    sim.state.add_fault(path=IMAGE_TASK, method="GET", hold_ms=HOLD_MS)
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            submitted = await first.tool(*tool_call("image"))
            finish_all(sim)
            await until(lambda: sim.state.b64_deliveries == 1, "the one-time delivery")
            await first.kill()
        assert (await only_job(database)).sources == []  # it never heard of the result
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, submitted["job_id"])
    assert record["status"] == "completed", record
    assert record["error"] is None
    assert sim.state.b64_deliveries == 1
    assert sim.state.requests["GET /_r2/images/{task_id}/{index}.png"] == 1
    expected = sim.state.images[submitted["upstream_id"]].images
    assert expected is not None
    assert record["files"][0]["sha256"] == hashlib.sha256(expected[0]).hexdigest()
    assert_files_intact(record, home / "out")


async def test_killed_mid_r2_download_recovers_from_the_kept_r2_url(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    out = database.home / "out"
    sim.state.add_fault(path=IMAGE_TASK, method="GET", drop="before_body")  # the b64 answer is lost
    sim.state.add_fault(
        path="/_r2/images/{task_id}/{index}.png", method="GET", hold_ms=HOLD_MS, hold_at="mid_body"
    )
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            submitted = await first.tool(*tool_call("image"))
            finish_all(sim)
            await until(lambda: partial_files(out) != [], "the r2 download to have started")
            await first.kill()
        row = await only_job(database)
        assert (row.sources[0].url or "").endswith("/0.png")  # kept before touching the disk
        assert row.status in ("queued", "processing")
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, submitted["job_id"])
    assert record["status"] == "completed", record
    assert record["error"] is None
    assert sim.state.b64_deliveries == 1  # spent once, on the dropped answer
    assert sim.state.requests["GET /_r2/images/{task_id}/{index}.png"] == 2
    expected = sim.state.images[submitted["upstream_id"]].images
    assert expected is not None
    assert record["files"][0]["sha256"] == hashlib.sha256(expected[0]).hexdigest()
    assert_files_intact(record, out)


# ----------------------------------------------------------------------------------- the key window


async def test_a_resend_rate_limited_past_the_key_window_is_not_sent_and_fails_truthfully(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    # The create was processed but its answer lost; the server died. On restart, 42 s into the 50 s the
    # key is trusted for, the resend is refused with 429 and Retry-After 10: waiting it out would land
    # the resend after AllToken forgot the key (here: as soon as our own window closes) — a second task.
    with anyio.fail_after(40):
        await lose_the_create_answer(sim, database, "image")
        await age_submission(database, 42.0)
        ((_, remembered_at),) = sim.state.idempotency.values()
        sim.state.update_config(idempotency_window_s=sim.state.now() - remembered_at + 8.0)
        sim.state.add_fault(path=IMAGE_CREATE, method="POST", status=429, retry_after=10)
        job_id = (await only_job(database)).job_id
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, job_id)
    assert record["status"] == "failed", record
    message = record["error"]["message"]
    assert "may have been charged" in message
    assert "no second task was created" in message
    assert len(sim.state.images) == 1  # exactly one paid task
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] == 2  # the original and the rate-limited resend


async def _stranger_creates(sim: RunningSimulator, body: dict[str, Any]) -> None:
    """Another client on the same key starts a video of its own."""
    headers = {"Authorization": f"Bearer {SIM_API_KEY}"}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=headers, timeout=10) as api:
        response = await api.post("/videos/generations", json=body)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "strangers",
    [
        [{"duration": 8}],  # another duration: cannot be ours
        [{}, {}],  # two that fit equally well: ambiguous
    ],
    ids=["different-parameters", "two-equal-candidates"],
)
async def test_after_the_key_window_a_strangers_video_is_never_adopted(
    sim: RunningSimulator, database: pgkit.Database, strangers: list[dict[str, Any]]
) -> None:
    home = database.home
    ours = {"prompt": "waves at dusk", "duration": 6, "resolution": "480p"}
    sim.state.add_fault(path=VIDEO_CREATE, method="POST", latency_ms=HOLD_MS)  # never processed
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as first:
            await first.start_tool("alltoken_video", {**ours, "wait_seconds": 0})
            await until(lambda: sim.state.requests[f"POST {VIDEO_CREATE}"] == 1, "the create request")
            await first.kill()
        sim.state.faults.clear()
        for extra in strangers:
            await _stranger_creates(
                sim, {"model": "seedance-1.5-pro", "prompt": "a stranger's city", **ours, **extra}
            )
        await age_submission(database, 70.0)
        job_id = (await only_job(database)).job_id
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, job_id)
    assert record["status"] == "failed", record
    assert record["upstream_id"] is None
    assert "no second task was created" in record["error"]["message"]
    assert len(sim.state.videos) == len(strangers)  # ours was never created, and not sent again
    assert not (home / "out").exists() or list((home / "out").iterdir()) == []


async def two_unconfirmed_siblings(sim: RunningSimulator, database: pgkit.Database) -> str:
    """Two videos with the same parameters, then kill -9: X's create never reached AllToken, Y's was
    created but its answer lost. Returns Y's idempotency key (the one the only task was created under)."""
    sim.state.add_fault(path=VIDEO_CREATE, method="POST", latency_ms=HOLD_MS)  # X: never processed
    sim.state.add_fault(path=VIDEO_CREATE, method="POST", hold_ms=HOLD_MS)  # Y: created, answer lost
    async with mcp_server(database, sim.base_url) as first:
        await first.start_tool(*tool_call("video"))
        await until(lambda: sim.state.requests[f"POST {VIDEO_CREATE}"] == 1, "X's create request")
        await first.start_tool(*tool_call("video"))
        await until(lambda: len(sim.state.videos) == 1, "Y's task to be created")
        await first.kill()
    (y_key,) = [key for (_, _, key) in sim.state.idempotency]
    return y_key


async def test_after_the_key_window_a_sibling_jobs_video_is_not_adopted(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    # Two of our own videos with the same parameters: X's create never reached AllToken, Y's was created
    # but its answer lost. The listing cannot tell whose the one task is, so neither job adopts it.
    with anyio.fail_after(40):
        await two_unconfirmed_siblings(sim, database)
        sim.state.faults.clear()
        sim.state.forget_idempotency()
        await age_submission(database, 70.0)
        finish_all(sim)
        async with mcp_server(database, sim.base_url) as second:
            records = [await settled(second, row.job_id) for row in await stored_jobs(database)]
    assert [r["status"] for r in records] == ["failed", "failed"], records
    for record in records:
        assert record["upstream_id"] is None
        assert "could equally be that of job_" in record["error"]["message"]
    assert len(sim.state.videos) == 1  # nothing sent again


async def test_after_the_key_window_the_task_of_a_job_that_gave_up_is_not_adopted_by_another(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    # As above, but Y already gave up earlier (failed as unconfirmed, its task unowned): X must still not
    # take Y's task for its own.
    with anyio.fail_after(40):
        y_key = await two_unconfirmed_siblings(sim, database)
        async with database.opened() as store:
            (y_job,) = [job for job in await store.list_jobs() if job.idempotency_key == y_key]
            await store.update_job(y_job.job_id, status="failed", error_code="submit_unconfirmed")
        sim.state.faults.clear()
        sim.state.forget_idempotency()
        await age_submission(database, 70.0)
        finish_all(sim)
        (x_row,) = [row for row in await stored_jobs(database) if row.idempotency_key != y_key]
        async with mcp_server(database, sim.base_url) as second:
            record = await settled(second, x_row.job_id)
    assert record["status"] == "failed", record
    assert record["upstream_id"] is None
    assert "could equally be that of job_" in record["error"]["message"]


# ----------------------------------------------------------------------------------- the database restarts


def drop_connections(admin_url: str, database_url: str) -> int:
    """What a PostgreSQL restart or failover does to its clients: every connection to the database is
    ended. Returns how many were."""
    import psycopg

    name = database_url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


async def test_a_database_restart_under_a_running_server_fails_no_call_and_loses_no_job(
    sim: RunningSimulator, tmp_path: Path, postgres_admin_url: str, postgres_url: str
) -> None:
    """PostgreSQL only (SQLite has no server to restart; its file failing is test_store_failures). Every
    connection the server holds is ended between two tool calls, as a restart or failover ends them."""
    database = pgkit.Database("postgresql", tmp_path / "state.sqlite3", postgres_url)
    with anyio.fail_after(40):
        async with mcp_server(database, sim.base_url) as server:
            video = await server.tool(*tool_call("video"))
            dropped = await anyio.to_thread.run_sync(drop_connections, postgres_admin_url, postgres_url)
            listing = await server.tool("list_jobs", {})
            image = await server.tool(*tool_call("image"))
            finish_all(sim)
            records = [await settled(server, job["job_id"]) for job in (video, image)]
            # Wake-ups from other replicas resume too: the LISTEN connection is opened again.
            await until(lambda: "job changes again" in server.stderr_text(), "LISTEN to be back")
            stderr = server.stderr_text()
    assert dropped >= 2, dropped  # the pooled connection(s) and the LISTEN connection
    assert [job["job_id"] for job in listing["jobs"]] == [video["job_id"]]
    assert [record["status"] for record in records] == ["completed", "completed"], records
    assert (sim.state.tasks_created["images"], sim.state.tasks_created["videos"]) == (1, 1)
    assert_files_intact({"files": [f for record in records for f in record["files"]]}, database.home / "out")
    assert "Traceback" not in stderr
