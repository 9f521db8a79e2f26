"""Several stdio server processes sharing one state directory: the lease decides who polls each job, so
every image is claimed and saved exactly once, and a job whose process died is finished by another.

The simulator runs in legacy delivery mode (`r2_mode=False`): an image result handed out twice would be
a `410 image_already_retrieved` and a failed job, not a quiet re-read from R2, so a double claim shows.

Both store backends (the `database` fixture): processes sharing one SQLite file, and processes sharing
one PostgreSQL database (where leases are claimed with SKIP LOCKED).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests import pgkit
from tests.rawstdio import StdioServer
from tests.test_jobs_crash import (
    HOLD_MS,
    IMAGE_CREATE,
    WAIT_SECONDS,
    mcp_servers,
    only_job,
    partial_files,
    until,
)

JOBS = 20


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01, r2_mode=False)


def image_args(index: int) -> dict[str, Any]:
    return {"prompt": f"shared tile number {index}", "quality": "low", "wait_seconds": 0}


def assert_only_these_files(out: Path, saved: list[dict[str, Any]]) -> None:
    """The output dir holds exactly the recorded files, each whole (its bytes hash to the record)."""
    for entry in saved:
        assert hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f["path"]).name for f in saved)
    assert partial_files(out) == []


@pytest.mark.parametrize("processes", [2, 4])
async def test_images_submitted_across_processes_are_each_saved_exactly_once(
    sim: RunningSimulator, database: pgkit.Database, processes: int
) -> None:
    out = database.home / "out"
    submitted: dict[str, StdioServer] = {}
    records: dict[str, dict[str, Any]] = {}

    async def submit(server: StdioServer, index: int) -> None:
        record = await server.tool("alltoken_image", image_args(index))
        submitted[record["job_id"]] = server

    async def collect(job_id: str, server: StdioServer) -> None:
        records[job_id] = await server.tool("job_status", {"job_id": job_id, "wait_seconds": WAIT_SECONDS})

    with anyio.fail_after(40):
        async with mcp_servers(database, sim.base_url, processes) as servers:
            async with anyio.create_task_group() as tg:
                for index in range(JOBS):
                    tg.start_soon(submit, servers[index % processes], index)
            async with anyio.create_task_group() as tg:
                for job_id, server in submitted.items():
                    tg.start_soon(collect, job_id, server)
    assert len(records) == JOBS
    failed = {job_id: r["error"] for job_id, r in records.items() if r["status"] != "completed"}
    assert failed == {}  # a second claim would have been a 410 and a failed job
    assert sim.state.b64_deliveries == JOBS
    assert sim.state.tasks_created["images"] == JOBS
    for record in records.values():
        task = sim.state.images[record["upstream_id"]]
        assert task.images is not None
        (entry,) = record["files"]
        assert entry["sha256"] == hashlib.sha256(task.images[0]).hexdigest()
    # Exactly one whole file per job: no second copy ("name-1.png") from a duplicate delivery, no temp files.
    assert_only_these_files(out, [f for record in records.values() for f in record["files"]])


async def test_a_job_whose_process_was_killed_is_finished_by_another_process(
    sim: RunningSimulator, database: pgkit.Database
) -> None:
    # A's create is processed upstream but A never hears back: the job is A's, leased, unconfirmed.
    sim.state.add_fault(path=IMAGE_CREATE, method="POST", hold_ms=HOLD_MS)
    with anyio.fail_after(40):
        async with mcp_servers(database, sim.base_url, 2) as (a, b):
            await a.start_tool("alltoken_image", image_args(0))
            await until(lambda: len(sim.state.images) == 1, "A's task to be created")
            job = await only_job(database)
            assert job.lease_owner is not None
            # The lease names A's pid, so B can tell at once that its holder is dead.
            assert f":{a.pid}:" in job.lease_owner, job.lease_owner
            await a.kill()
            record = await b.tool("job_status", {"job_id": job.job_id, "wait_seconds": WAIT_SECONDS})
    assert record["status"] == "completed", record
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] == 2  # B resent A's key and adopted the task
    assert list(sim.state.images) == [record["upstream_id"]]
    assert sim.state.b64_deliveries == 1
    assert_only_these_files(database.home / "out", record["files"])
