"""SIGTERM ends the server cleanly on both transports: the tool call in flight is abandoned (stdio) or, on
HTTP, given the drain time and then answered "shutting down, call again"; the download in progress is
abandoned, its temp file is removed, the job poller stops and releases its lease (so the
next server takes the job over without waiting), the process exits 0, and stderr holds no traceback.

The server is the installed entry point in a subprocess (raw JSON lines over stdio; `serve --http` with
the SDK's HTTP client); the simulator runs in this process and holds the video download mid-body, so the
signal always arrives while the file is half written. The tests with a job run on both store backends
(the `database` fixture): the released lease is read back through the store API.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import sys
import tempfile
import termios
from pathlib import Path

import anyio
import httpx2
import mcp_types as t
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests import pgkit
from tests.rawstdio import ENTRY_POINT, INITIALIZE_PARAMS, stdio_server
from tests.serverkit import text_of
from tests.test_http import http_server_process
from tests.test_jobs_crash import finish_all, only_job, partial_files, server_env, until

VIDEO_CONTENT = "/_cdn/videos/{name}"
HOLD_MS = 30_000
"""The download is held for longer than any test runs (the simulator cancels it at teardown)."""
EXIT_SECONDS = 10
"""Generous: a clean shutdown takes well under a second on stdio and a few on HTTP. A server that
waited for the in-flight call (30 s) or the held download would miss it."""


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01)


def hold_the_download(sim: RunningSimulator) -> None:
    sim.state.add_fault(path=VIDEO_CONTENT, method="GET", hold_ms=HOLD_MS, hold_at="mid_body")


async def assert_shut_down_cleanly(status: int | None, stderr: str, database: pgkit.Database) -> None:
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert "SIGTERM" in stderr or "Shutting down" in stderr  # it was the signal, handled
    if database.url is None:
        # The last connection to a WAL database folds the log back in and deletes it when it closes.
        assert not database.path.with_name(f"{database.path.name}-wal").exists(), "the store was not closed"
    job = await only_job(database)
    assert job.status in ("queued", "processing")  # abandoned, not failed
    assert (job.lease_owner, job.lease_expires_at) == (None, None)
    assert partial_files(database.home / "out") == []


async def test_sigterm_stops_the_stdio_server_mid_download_and_releases_the_lease(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    hold_the_download(sim)
    with anyio.fail_after(40):
        async with stdio_server(server_env(home, sim.base_url, database), ["--log-level", "INFO"]) as server:
            started = await server.exchange(
                1,
                "tools/call",
                {"name": "alltoken_video", "arguments": {"prompt": "waves", "wait_seconds": 0}},
            )
            job_id = started["result"]["structuredContent"]["job_id"]
            finish_all(sim)
            await until(lambda: partial_files(home / "out") != [], "the download to start")
            assert (await only_job(database)).lease_owner is not None
            # A call that would wait 30 s more; its first progress report says it is running.
            await server.write(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {
                        "name": "job_status",
                        "arguments": {"job_id": job_id, "wait_seconds": 30},
                        "_meta": {"progressToken": "waiting"},
                    },
                }
            )
            await server.first(lambda m: m.get("method") == "notifications/progress", "the wait to start")
            server.process.send_signal(signal.SIGTERM)  # stdin stays open: the signal alone must end it
            with anyio.fail_after(EXIT_SECONDS):
                status = await server.process.wait()
            stderr = server.stderr_text()
    await assert_shut_down_cleanly(status, stderr, database)
    assert all(m.get("jsonrpc") == "2.0" for m in server.messages)  # stdout stayed protocol only


async def test_after_sigterm_the_next_server_takes_the_job_over_and_finishes_it(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    hold_the_download(sim)
    env = server_env(home, sim.base_url, database)
    with anyio.fail_after(40):
        async with stdio_server(env) as first:
            started = await first.exchange(
                1,
                "tools/call",
                {"name": "alltoken_video", "arguments": {"prompt": "waves", "wait_seconds": 0}},
            )
            job_id = started["result"]["structuredContent"]["job_id"]
            finish_all(sim)
            await until(lambda: partial_files(home / "out") != [], "the download to start")
            first.process.send_signal(signal.SIGTERM)
            assert await first.process.wait() == 0
        async with stdio_server(env) as second:
            finished = await second.exchange(
                2, "tools/call", {"name": "job_status", "arguments": {"job_id": job_id, "wait_seconds": 20}}
            )
    record = finished["result"]["structuredContent"]
    assert record["status"] == "completed", record
    assert sim.state.requests[f"GET {VIDEO_CONTENT}"] == 2
    assert [Path(f["path"]).name for f in record["files"]] == [p.name for p in (home / "out").iterdir()]


async def test_sigterm_stops_the_http_server_mid_download_and_releases_the_lease(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    home = database.home
    hold_the_download(sim)
    progressed = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progressed.set()

    handed_back: list[t.CallToolResult] = []

    async def wait_for_the_job(client: Client, job_id: str) -> None:
        # Longer than the drain: handed back with an answer, not left to a dropped stream.
        handed_back.append(
            await client.call_tool(
                "job_status", {"job_id": job_id, "wait_seconds": 30}, progress_callback=on_progress
            )
        )

    env = {**server_env(home, sim.base_url, database), "PATH": os.environ.get("PATH", "")}
    with anyio.fail_after(40):
        async with (
            http_server_process(env, extra_args=["--shutdown-grace", "4"]) as server,
            httpx2.AsyncClient(timeout=60) as http,
        ):
            async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
                started = await client.call_tool("alltoken_video", {"prompt": "waves", "wait_seconds": 0})
                assert isinstance(started.structured_content, dict)
                job_id = started.structured_content["job_id"]
                finish_all(sim)
                await until(lambda: partial_files(home / "out") != [], "the download to start")
                assert (await only_job(database)).lease_owner is not None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_for_the_job, client, job_id)
                    await progressed.wait()
                    server.process.send_signal(signal.SIGTERM)
                    with anyio.fail_after(EXIT_SECONDS):
                        status = await server.process.wait()
            stderr = "\n".join(server.stderr)
    await assert_shut_down_cleanly(status, stderr, database)
    assert "ERROR" not in stderr  # the event streams cut short by the shutdown are not reported as errors
    [answer] = handed_back
    assert answer.is_error
    assert "job_status was interrupted: this AllToken MCP server is shutting down" in text_of(answer)


def unread_bytes(fd: int) -> int:
    waiting = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, waiting)
    return waiting[0]


@pytest.mark.skipif(sys.platform != "linux", reason="measures the pipe with Linux fcntl/ioctl calls")
async def test_sigterm_ends_the_stdio_server_even_when_the_host_stopped_reading_stdout(
    tmp_path: Path,
) -> None:
    """A write to a full pipe blocks and cannot be interrupted; it must not keep the process alive."""
    env = server_env(tmp_path / "home", "http://127.0.0.1:9/v1")
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS}
    requests = [initialize] + [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(1, 200)]
    unread, server_stdout = os.pipe()  # this test never reads it
    try:
        capacity = fcntl.fcntl(unread, fcntl.F_GETPIPE_SZ)
        with tempfile.TemporaryFile("w+b") as errlog, anyio.fail_after(40):
            command = [ENTRY_POINT, "--log-level", "INFO"]
            async with await anyio.open_process(
                command, env=env, stdout=server_stdout, stderr=errlog
            ) as process:
                os.close(server_stdout)
                assert process.stdin is not None
                await process.stdin.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
                # The answers (megabytes) cannot fit: once the pipe is mostly full the writer is stuck.
                await until(lambda: unread_bytes(unread) >= capacity * 3 // 4, "the stdout pipe to fill up")
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(EXIT_SECONDS):
                    status = await process.wait()
            errlog.seek(0)
            stderr = errlog.read().decode()
    finally:
        os.close(unread)
    assert status == 0, stderr
    assert "Traceback" not in stderr
