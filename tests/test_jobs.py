"""The job manager against upstream answers the simulator never gives: a completed image task with no
images, a completed video without a URL. Scripted over a real loopback socket (tests/rawserver.py)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.jobs import JobManager
from alltoken_mcp.store import process_owner
from tests.pgkit import Database
from tests.rawserver import RawResponse, raw_server
from tests.serverkit import settings_for

JSON = [("Content-Type", "application/json")]


def answer(status: int, body: dict[str, object]) -> RawResponse:
    return RawResponse(status=status, headers=JSON, pieces=[json.dumps(body).encode()], framing="length")


async def run_job(
    tmp_path: Path, database: Database, kind: str, created: dict[str, object], polled: dict[str, object]
) -> dict[str, object]:
    async with raw_server(answer(202, created), answer(200, polled)) as upstream:
        settings = settings_for(tmp_path, upstream.base_url)
        store = await database.open()
        try:
            async with AllTokenClient(base_url=settings.base_url, api_key=settings.api_key) as client:
                jobs = JobManager(store=store, client=client, settings=settings, owner=process_owner())
                async with anyio.create_task_group() as tg:
                    tg.start_soon(jobs.run)
                    job = await jobs.submit(kind, {"model": "m", "prompt": "p"})  # type: ignore[arg-type]
                    with anyio.fail_after(10):
                        job = await jobs.wait(job.job_id, 10)
                    tg.cancel_scope.cancel()
        finally:
            await store.close()
    return {"status": job.status, "code": job.error_code, "message": job.error_message, "files": job.files}


async def test_a_completed_image_task_without_images_fails_instead_of_completing_empty(
    tmp_path: Path,
    database: Database,
) -> None:
    outcome = await run_job(
        tmp_path,
        database,
        "image",
        {"id": "igen_1", "status": "queued", "model": "m"},
        {"id": "igen_1", "status": "completed", "model": "m", "data": []},
    )
    assert outcome == {
        "status": "failed",
        "code": "image_missing",
        "message": "AllToken reported completion without any image.",
        "files": [],
    }


async def test_a_completed_video_without_a_url_fails_with_a_reason(
    tmp_path: Path, database: Database
) -> None:
    outcome = await run_job(
        tmp_path,
        database,
        "video",
        {"id": "vgen_1", "status": "queued", "model": "m", "is_expired": False},
        {"id": "vgen_1", "status": "completed", "model": "m", "is_expired": False},
    )
    assert outcome["status"] == "failed"
    assert outcome["code"] == "video_missing"
    assert outcome["files"] == []
