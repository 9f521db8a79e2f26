"""A job belongs to its upstream (base URL + key fingerprint): a server configured for another one never
polls, cancels or fails it, and `--simulate` keeps its own state and files.

The reproduction from issue 9: a video started against "real AllToken" (simulator A, key K1) with home H;
the server stopped; `alltoken-mcp --simulate` run on the same H with a job of its own; then the server with
A/K1 again downloads the video. Before, the simulate session polled the real task at its own simulator,
got 404 and marked the paid video failed. Every server here is the installed entry point in a subprocess,
and the state is read straight from the SQLite files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import AbstractAsyncContextManager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.job_records import JobRecord
from alltoken_mcp.settings import Upstream, key_fingerprint
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig
from alltoken_mcp.simulator.media import mp4
from alltoken_mcp.store import Job
from alltoken_mcp.transports import SIMULATED_UPSTREAM
from tests.rawstdio import StdioServer, stdio_server
from tests.test_jobs_crash import finish_all

K1 = SIM_API_KEY
K2 = "sk-sim-second-account-1111111111"
WAIT_SECONDS = 20
VIDEO = {"prompt": "a paid render of waves at dusk", "wait_seconds": 0}


@pytest.fixture
def sim_config() -> SimConfig:
    # Real-time renders: the video stays in flight until a test moves the simulator's clock.
    return SimConfig(speed=1.0, api_keys=(K1, K2))


def env_for(home: Path, base_url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env.update(
        ALLTOKEN_BASE_URL=base_url,
        ALLTOKEN_API_KEY=key,
        ALLTOKEN_MCP_HOME=str(home),
        ALLTOKEN_OUTPUT_DIR=str(home / "out"),
        ALLTOKEN_MAX_WAIT_SECONDS=str(WAIT_SECONDS),
    )
    return env


def server(env: dict[str, str], *args: str) -> AbstractAsyncContextManager[StdioServer]:
    """A started, initialized stdio server; stopped with SIGTERM (a clean exit) when the block ends."""
    return stdio_server(env, args, stop="sigterm")


async def call(srv: StdioServer, tool: str, arguments: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """(is_error, text, structuredContent) of a tool call."""
    result = await srv.request("tools/call", {"name": tool, "arguments": arguments})
    text = " ".join(c.get("text", "") for c in result["content"])
    return bool(result.get("isError")), text, result.get("structuredContent") or {}


async def full_record(srv: StdioServer, job_id: str) -> dict[str, Any]:
    """The job's full record, as the `alltoken://jobs/{id}` resource has it (tool answers are shorter)."""
    result = await srv.request("resources/read", {"uri": f"alltoken://jobs/{job_id}"})
    record: dict[str, Any] = json.loads(result["contents"][0]["text"])
    return record


def rows(database: Path) -> dict[str, dict[str, Any]]:
    """Every job row of a state database, by job id, exactly as stored."""
    if not database.exists():
        return {}
    with closing(sqlite3.connect(database, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        return {row["job_id"]: dict(row) for row in db.execute("SELECT * FROM jobs")}


async def start_real_video(sim: RunningSimulator, home: Path) -> dict[str, Any]:
    """Start a video against A with K1, stop the server, and return the job's stored row."""
    async with server(env_for(home, sim.base_url, K1)) as first:
        record = await first.tool("alltoken_video", VIDEO)
    row = rows(home / "state.sqlite3")[record["job_id"]]
    assert (row["status"], row["upstream_id"]) == ("queued", record["upstream_id"]), row
    assert (row["upstream_url"], row["upstream_key"]) == (sim.base_url, key_fingerprint(K1))
    assert row["lease_owner"] is None  # the stopped server let go of it
    return row


async def collect_real_video(sim: RunningSimulator, home: Path, job_id: str) -> None:
    """The server with A/K1 again: the render finishes and the video is saved byte for byte."""
    finish_all(sim)
    async with server(env_for(home, sim.base_url, K1)) as again:
        record = await again.tool("job_status", {"job_id": job_id, "wait_seconds": WAIT_SECONDS})
    assert record["status"] == "completed", record
    assert record["error"] is None
    [video] = record["files"]
    assert Path(video["path"]).parent == home / "out"
    saved = await anyio.Path(video["path"]).read_bytes()
    assert saved == mp4(VIDEO["prompt"])  # what AllToken served for the task


async def test_simulate_on_the_same_home_leaves_a_real_video_alone_and_it_is_downloaded_later(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with anyio.fail_after(90):
        real = await start_real_video(sim, home)
        requests_to_a = dict(sim.state.requests)

        # The user tries the server without credits, in the same environment (A's URL and K1 are set).
        async with server(env_for(home, sim.base_url, K1), "--simulate") as simulated:
            image = await simulated.tool("alltoken_image", {"prompt": "a try-it fox", "wait_seconds": 0})
            done = await simulated.tool(
                "job_status", {"job_id": image["job_id"], "wait_seconds": WAIT_SECONDS}
            )
            # A try-it session neither sees the real job nor can cancel it.
            unknown, text, _ = await call(simulated, "job_cancel", {"job_id": real["job_id"]})
            listed = await simulated.tool("list_jobs", {})
            simulated_record = await full_record(simulated, image["job_id"])

        assert done["status"] == "completed", done
        assert unknown
        assert f"No job '{real['job_id']}' is stored" in text
        assert [job["job_id"] for job in listed["jobs"]] == [image["job_id"]]
        assert simulated_record["upstream"] == SIMULATED_UPSTREAM

        # The real job is exactly as the stopped server left it; A heard nothing from the simulate session.
        assert rows(home / "state.sqlite3") == {real["job_id"]: real}
        assert dict(sim.state.requests) == requests_to_a
        # The simulate job and its file live apart, under <home>/simulate/.
        simulated_rows = rows(home / "simulate" / "state.sqlite3")
        assert list(simulated_rows) == [image["job_id"]]
        assert Path(done["files"][0]["path"]).parent == home / "simulate" / "media"
        assert not (home / "out").exists() or not any((home / "out").iterdir())

        await collect_real_video(sim, home, real["job_id"])


async def test_another_key_on_the_same_base_url_is_another_upstream(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with anyio.fail_after(90):
        real = await start_real_video(sim, home)
        task_polls = "GET /v1/videos/generations/{task_id}"
        polls_before = sim.state.requests[task_polls]

        async with server(env_for(home, sim.base_url, K2)) as other:
            # A job of its own, seen through to the end: its poller ran for many rounds meanwhile.
            mine = await other.tool(
                "alltoken_image", {"prompt": "the second account's fox", "wait_seconds": 0}
            )
            sim.state.advance_to(sim.state.images[mine["upstream_id"]].timeline.finished)
            done = await other.tool("job_status", {"job_id": mine["job_id"], "wait_seconds": WAIT_SECONDS})

            started = time.monotonic()
            status = await other.tool("job_status", {"job_id": real["job_id"], "wait_seconds": WAIT_SECONDS})
            waited = time.monotonic() - started
            refused, refusal, _ = await call(other, "job_cancel", {"job_id": real["job_id"]})
            real_record = await full_record(other, real["job_id"])
            _, listing, listed = await call(other, "list_jobs", {})

        assert done["status"] == "completed", done
        belongs = (
            f"{sim.base_url} with the API key with fingerprint {key_fingerprint(K1)} "
            f"(this server's key is {key_fingerprint(K2)})"
        )
        # job_status shows it as it was, says whose it is, and does not wait for what cannot move here.
        assert (status["status"], status["error"], status["foreign"]) == ("queued", None, True)
        assert real_record["upstream"] == sim.base_url
        assert status["note"] == (
            f"This job belongs to {belongs}; run the server with that configuration to continue it. This "
            "server does not poll, cancel or fail it."
        )
        assert waited < WAIT_SECONDS / 2
        assert refused
        assert f"Job {real['job_id']} was not cancelled: it belongs to {belongs}." in refusal
        marks = {job["job_id"]: job.get("foreign", False) for job in listed["jobs"]}
        assert marks == {real["job_id"]: True, mine["job_id"]: False}
        assert f"{real['job_id']} video queued" in listing
        assert "[not this server's: job_status says whose]" in listing
        # Never polled with K2 (AllToken would have answered 404 and the job been failed), never written.
        assert sim.state.requests[task_polls] == polls_before
        assert rows(home / "state.sqlite3")[real["job_id"]] == real
        assert sim.state.videos[real["upstream_id"]].owner == K1

        await collect_real_video(sim, home, real["job_id"])


async def test_another_base_url_with_the_same_key_leaves_the_job_alone(tmp_path: Path) -> None:
    """Two simulators stand for two AllToken deployments (say production and a staging proxy)."""
    from alltoken_mcp.simulator import serve_simulator

    home = tmp_path / "home"
    config = SimConfig(speed=1.0)
    with anyio.fail_after(60):
        async with serve_simulator(config) as a, serve_simulator(config) as b:
            real = await start_real_video(a, home)
            async with server(env_for(home, b.base_url, K1)) as other:
                status = await other.tool("job_status", {"job_id": real["job_id"], "wait_seconds": 0})
                # Its poller has had rounds to act; b would answer 404 for a's task.
                mine = await other.tool("alltoken_image", {"prompt": "staging fox", "wait_seconds": 0})
                b.state.advance_to(b.state.images[mine["upstream_id"]].timeline.finished)
                await other.tool("job_status", {"job_id": mine["job_id"], "wait_seconds": WAIT_SECONDS})
            assert status["foreign"] is True
            assert status["note"].startswith(f"This job belongs to {a.base_url}; run the server with that")
            assert not [r for r in b.state.requests if r.startswith("GET /v1/videos/generations")]
            assert rows(home / "state.sqlite3")[real["job_id"]] == real
            await collect_real_video(a, home, real["job_id"])


def test_a_record_marks_only_jobs_of_another_upstream() -> None:
    here = Upstream("https://api.alltoken.ai/v1", key_fingerprint("sk-mine-0000000000"))
    now = time.time()
    base = Job(
        job_id="job_00000000000000a1",
        kind="video",
        status="processing",
        model="seedance-1.5-pro",
        prompt="waves",
        request={},
        idempotency_key="k",
        submit_state="accepted",
        created_at=now,
        updated_at=now,
        note="stored note",
    )
    own = Job(**{**base.__dict__, "upstream_url": here.base_url, "upstream_key": here.key_fingerprint})
    legacy = base  # recorded before upstreams were: the first server with a key adopts it
    keyless = Upstream(here.base_url, None)
    assert JobRecord.from_job(own, here).foreign is False
    assert JobRecord.from_job(own, here).note == "stored note"
    assert JobRecord.from_job(legacy, here).foreign is False
    assert JobRecord.from_job(legacy, keyless).foreign is True  # a keyless server could only fail it
    foreign = JobRecord.from_job(own, keyless)
    assert foreign.foreign is True
    assert foreign.note is not None
    assert f"with the API key with fingerprint {here.key_fingerprint} (this server has no usable key)" in (
        foreign.note
    )
