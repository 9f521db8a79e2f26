"""The state database failing under the server: a file-size limit, a read-only (or immutable) file, a full
disk. Each is produced for real, never mocked; each must give a one-line error that names the database
and the fix, send no paid request when the job row cannot be written, keep the server (and its poller)
up without a traceback, and recover once the machine is fixed.

- file-size limit: RLIMIT_FSIZE set on the running stdio server with prlimit (any user, Linux);
- read-only: the database file made unwritable before the server opens it (chmod for a normal user;
  root ignores modes, so `chattr +i` then, skipped where the filesystem has no immutable flag);
- full disk: a 1 MiB tmpfs filled up (needs root to mount; skipped otherwise).

SQLite only: these are failures of the embedded database file on this machine's disk. A PostgreSQL
store has no file here; its server's failures are test_store_postgres's (unreachable, login refused,
missing database, each one line with its fix) and test_jobs_crash's (a restart under a running server).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
import pytest
from mcp import Client

from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.rawstdio import StdioServer, stdio_server
from tests.serverkit import connect, data, error_text, settings_for
from tests.test_jobs_crash import finish_all, server_env, until

IMAGE_CREATE = "POST /v1/images/generations/async"
VIDEO_CREATE = "POST /v1/videos/generations"
VIDEO_POLL_PATH = "/v1/videos/generations/{task_id}"
VIDEO_POLL = f"GET {VIDEO_POLL_PATH}"
POLL_LATENCY_MS = 2000
"""Real time a held status check waits: ample for the test to set the limit meanwhile."""
IMAGE_ARGS = {"prompt": "a lighthouse in fog", "quality": "low", "wait_seconds": 0}
VIDEO_ARGS = {"prompt": "waves at dusk", "wait_seconds": 0}


@pytest.fixture
def sim_config() -> SimConfig:
    # Real-time renders: nothing finishes while the database is broken unless the test moves the
    # simulator's clock (finish_all).
    return SimConfig(speed=1.0)


def one_line_naming(text: str, database: Path, *phrases: str) -> None:
    assert "\n" not in text, text
    assert str(database) in text, text
    for phrase in phrases:
        assert phrase in text, text


# ----------------------------------------------------------------------------------- file-size limit


@asynccontextmanager
async def stdio_server_on(home: Path, base_url: str) -> AsyncIterator[StdioServer]:
    # stderr is a pipe: a file-size limit set on the server does not apply to pipes.
    async with stdio_server(server_env(home, base_url), stderr="pipe") as server:
        yield server


async def call(server: StdioServer, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool result, error or not."""
    return await server.request("tools/call", {"name": name, "arguments": arguments})


def text_of(result: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for c in result["content"])


def set_file_size_limit(pid: int, limit: int | None) -> None:
    import resource

    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY if limit is None else limit, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit on another process is Linux-only")
async def test_a_file_size_limit_gives_one_line_errors_sends_nothing_and_the_server_recovers(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    database = tmp_path / "state.sqlite3"
    with anyio.fail_after(60):
        async with stdio_server_on(tmp_path, sim.base_url) as server:
            video = await server.tool("alltoken_video", VIDEO_ARGS)  # the poller meets the limit too
            # Its next status check is answered late, after the limit is set: the step's result
            # cannot be stored. (Counter and fault are read and set with no await in between.)
            polls = sim.state.requests[VIDEO_POLL]
            sim.state.add_fault(path=VIDEO_POLL_PATH, method="GET", latency_ms=POLL_LATENCY_MS)
            await until(lambda: sim.state.requests[VIDEO_POLL] > polls, "the poller's next status check")
            set_file_size_limit(server.pid, 1)  # every write of new data now fails (EFBIG)

            refused = await call(server, "alltoken_image", IMAGE_ARGS)
            await server.wait_for_stderr(f"job {video['job_id']}: Cannot write the state database")
            await server.wait_for_stderr("job poller paused")
            listing = await server.tool("list_jobs", {})  # reading still works

            set_file_size_limit(server.pid, None)
            accepted = await server.tool("alltoken_image", IMAGE_ARGS)
            await server.wait_for_stderr("job poller resumed")
            finish_all(sim)
            image = await server.tool("job_status", {"job_id": accepted["job_id"], "wait_seconds": 20})
            finished = await server.tool("job_status", {"job_id": video["job_id"], "wait_seconds": 20})

            assert server.process.stdin is not None
            await server.process.stdin.aclose()  # a clean exit on EOF, with nothing left to fail
            assert await server.process.wait() == 0

    assert refused.get("isError"), refused
    one_line_naming(
        text_of(refused),
        database,
        "file-size limit",
        "Raise the file-size limit",
        "Nothing was sent to AllToken",
    )
    assert [job["job_id"] for job in listing["jobs"]] == [video["job_id"]]
    assert sim.state.requests[IMAGE_CREATE] == 1  # only the call made after the limit was lifted
    assert sim.state.requests[VIDEO_CREATE] == 1
    assert image["status"] == "completed"
    assert finished["status"] == "completed"
    assert "Traceback" not in server.stderr_text()
    assert server.stderr_text().count("job poller paused") == 1  # one line per outage, not one per retry
    assert server.stderr_text().count(f"job {video['job_id']}: Cannot write") == 1


# ----------------------------------------------------------------------------------- read-only file


def make_read_only(path: Path) -> Callable[[], None]:
    """Make `path` unwritable for this process and return the undo. A normal user loses the write
    permission; root ignores permissions, so it gets the immutable flag instead."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"running as root, and no immutable flag here to make a file read-only: {exc}")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


async def tool(client: Client, name: str, arguments: dict[str, Any]) -> t.CallToolResult:
    return await client.call_tool(name, arguments)


async def test_a_read_only_database_gives_one_line_errors_sends_nothing_and_recovers_when_writable(
    sim: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_OUTPUT_DIR=str(tmp_path / "out"))
    database = settings.database_path
    with anyio.fail_after(30):
        async with connect(settings) as client:
            video = data(await tool(client, "alltoken_video", VIDEO_ARGS))  # a job to check and cancel later
        undo = make_read_only(database)
        try:
            async with connect(settings) as client:
                results = {
                    "alltoken_image": await tool(client, "alltoken_image", IMAGE_ARGS),
                    "alltoken_video": await tool(client, "alltoken_video", VIDEO_ARGS),
                    "alltoken_chat": await tool(client, "alltoken_chat", {"prompt": "hello"}),
                    "job_cancel": await tool(client, "job_cancel", {"job_id": video["job_id"]}),
                    "job_status": await tool(client, "job_status", {"job_id": video["job_id"]}),
                    "list_jobs": await tool(client, "list_jobs", {}),
                    "list_models": await tool(client, "list_models", {"modality": "image"}),
                    "route_health": await tool(client, "route_health", {}),
                }
                undo()
                undo = lambda: None  # noqa: E731
                recovered = data(await tool(client, "alltoken_image", IMAGE_ARGS))
        finally:
            undo()

    for name in ("alltoken_image", "alltoken_video", "job_cancel"):
        one_line_naming(error_text(results[name]), database, "read-only", "writable")
    chat = data(results["alltoken_chat"])  # the answer is paid for: it comes back, unsaved
    assert chat["text"].startswith("Echo: hello")
    assert chat["conversation_id"] is None
    ledger, warning = chat["warnings"]
    one_line_naming(ledger, database, "read-only", "writable")
    assert ledger.startswith("This turn was not added to the spend ledger")
    one_line_naming(warning, database, "read-only", "writable")
    assert warning.startswith("This turn was not saved to the conversation")
    for name in ("alltoken_image", "alltoken_video"):
        assert "Nothing was sent to AllToken" in error_text(results[name])
    for name in ("job_status", "list_jobs", "list_models", "route_health"):
        data(results[name])  # reading needs no write
    assert sim.state.requests[IMAGE_CREATE] == 1  # only the call after the file was made writable
    assert sim.state.requests[VIDEO_CREATE] == 1  # only the one before it was made read-only
    assert recovered["status"] in ("queued", "processing")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# ----------------------------------------------------------------------------------- full disk


@contextmanager
def tiny_disk(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at `where` (root only)."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        with suppress(OSError):
            while True:
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_gives_one_line_errors_sends_nothing_and_recovers_when_freed(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        settings = settings_for(disk, sim.base_url, ALLTOKEN_OUTPUT_DIR=str(tmp_path / "out"))
        with anyio.fail_after(30):
            async with connect(settings) as client:
                filler = fill(disk)
                refused = await tool(client, "alltoken_image", IMAGE_ARGS)
                listing = data(await tool(client, "list_jobs", {}))
                filler.unlink()
                recovered = data(await tool(client, "alltoken_image", IMAGE_ARGS))
    one_line_naming(
        error_text(refused),
        settings.database_path,
        "the disk is full",
        f"Free disk space on the volume holding {disk}",
        "Nothing was sent to AllToken",
    )
    assert listing["jobs"] == []
    assert sim.state.requests[IMAGE_CREATE] == 1  # only the call after space was freed
    assert recovered["status"] in ("queued", "processing")
