"""The tools for jobs already started: `job_status` (with an optional wait), `job_cancel` and
`list_jobs`. Each sees only the calling person's jobs."""

from __future__ import annotations

from typing import Annotated

import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.formats import short_seconds
from alltoken_mcp.job_records import JobAnswer, JobRecord, JobSummary
from alltoken_mcp.jobs import ForeignJobError, UnknownJobError
from alltoken_mcp.people import current_person
from alltoken_mcp.settings import Settings
from alltoken_mcp.store import JobKind, JobStatus
from alltoken_mcp.tools.error_text import reports_store_errors, tool_error
from alltoken_mcp.tools.job_answers import JobList, job_list_result, job_result
from alltoken_mcp.tools.job_previews import JobPreviews
from alltoken_mcp.tools.job_waiting import result_after_wait
from alltoken_mcp.tools.media_fields import WAIT_FIELD


def job_status_description(settings: Settings) -> str:
    """Written at start-up: the model reads the wait cap really in force."""
    return (
        "A media job's state and saved files. wait_seconds waits (with progress) until it finishes, at "
        f"most {short_seconds(settings.max_wait_seconds)} s. Jobs survive server restarts."
    )


JOB_CANCEL_DESCRIPTION = (
    "Cancel a job. AllToken cancels a video only while it is queued: once rendering, it finishes, is "
    "charged and is still saved. An image job is dropped here (a late result is discarded)."
)

LIST_JOBS_DESCRIPTION = (
    "Recent image and video jobs, newest first, in short (status, model, prompt start, file count); "
    "job_status(job_id) gives one job's full record with its file paths."
)


def register(server: MCPServer[AppState], settings: Settings, shows: JobPreviews) -> None:
    """`job_status`, `job_cancel` and `list_jobs`; `job_status`'s description quotes `settings`' wait
    cap, and `shows` makes the previews of a job's images."""

    @server.tool(
        name="job_status",
        title="Check a media job",
        description=job_status_description(settings),
        annotations=t.ToolAnnotations(
            title="Check a media job", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    @reports_store_errors
    async def job_status(
        ctx: Context[AppState],
        job_id: Annotated[str, Field(max_length=100)],
        wait_seconds: Annotated[float, WAIT_FIELD] = 0,
    ) -> Annotated[t.CallToolResult, JobAnswer]:
        try:
            job = await app_state(ctx).jobs.get(job_id, current_person())
        except UnknownJobError as exc:
            raise ToolError(str(exc)) from exc
        return await result_after_wait(ctx, job, wait_seconds, (), shows)

    @server.tool(
        name="job_cancel",
        title="Cancel a media job",
        description=JOB_CANCEL_DESCRIPTION,
        annotations=t.ToolAnnotations(
            title="Cancel a media job",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )
    @reports_store_errors
    async def job_cancel(
        ctx: Context[AppState],
        job_id: Annotated[str, Field(max_length=100)],
    ) -> Annotated[t.CallToolResult, JobAnswer]:
        state = app_state(ctx)
        try:
            job = await state.jobs.cancel(job_id, current_person())
        except (UnknownJobError, ForeignJobError) as exc:
            raise ToolError(str(exc)) from exc
        except AllTokenError as exc:
            raise tool_error(exc) from exc
        return job_result(
            job,
            max_wait_seconds=state.settings.max_wait_seconds,
            here=state.jobs.upstream,
            links=state.media_links,
        )

    @server.tool(
        name="list_jobs",
        title="List media jobs",
        description=LIST_JOBS_DESCRIPTION,
        annotations=t.ToolAnnotations(
            title="List media jobs", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    @reports_store_errors
    async def list_jobs(
        ctx: Context[AppState],
        kind: JobKind | None = None,
        status: JobStatus | None = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> Annotated[t.CallToolResult, JobList]:
        manager = app_state(ctx).jobs
        jobs = await manager.list_jobs(kind=kind, status=status, limit=limit, person=current_person())
        summaries = [JobSummary.from_record(JobRecord.from_job(job, manager.upstream)) for job in jobs]
        return job_list_result(summaries)
