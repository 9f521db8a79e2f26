"""Waiting for a job inside a tool call — with progress notifications, within the call's budget
(ALLTOKEN_MAX_WAIT_SECONDS) — and answering with what it came to: the steps `alltoken_image`,
`alltoken_video` and `job_status` end with."""

from __future__ import annotations

from collections.abc import Sequence

import mcp_types as t
from mcp.server.mcpserver import Context

from alltoken_mcp import budget
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.formats import short_seconds
from alltoken_mcp.jobs import Progress
from alltoken_mcp.people import current_person
from alltoken_mcp.store import Job
from alltoken_mcp.tools.job_answers import job_result
from alltoken_mcp.tools.job_previews import JobPreviews


async def result_after_wait(
    ctx: Context[AppState], job: Job, asked: float | None, warnings: Sequence[str], shows: JobPreviews
) -> t.CallToolResult:
    """`job_result` for `job` once `wait_for_job` is done with it, with the previews of its images."""
    state = app_state(ctx)
    job, capped = await wait_for_job(ctx, job, asked)
    shown, unshown = await shows.of(state, job)
    return job_result(
        job,
        [*warnings, *capped, *unshown],
        max_wait_seconds=state.settings.max_wait_seconds,
        here=state.jobs.upstream,
        shown=shown,
        links=state.media_links,
    )


async def wait_for_job(ctx: Context[AppState], job: Job, asked: float | None) -> tuple[Job, list[str]]:
    """`job` after waiting up to `asked` seconds (None: as long as this call may) for it to finish, and a
    warning when it is still running after a wait shorter than asked — the call's budget,
    ALLTOKEN_MAX_WAIT_SECONDS, bounds every wait."""
    state = app_state(ctx)
    cap = state.settings.max_wait_seconds
    granted = max(0.0, min(cap if asked is None else asked, cap, budget.remaining()))
    if granted <= 0 or not job.active:
        return job, []
    job = await state.jobs.wait(job.job_id, granted, _progress(ctx), person=current_person())
    if asked is None or not job.active:
        return job, []
    # Cut past the cap, or by what earlier steps of this call (submit, frame uploads) used of its budget.
    if asked > cap or asked - granted >= 1:
        return job, [
            f"Waited {short_seconds(granted)} s, not the {short_seconds(asked)} s asked: the most this "
            f"server allows in one call (ALLTOKEN_MAX_WAIT_SECONDS = {short_seconds(cap)} s)."
        ]
    return job, []


def _progress(ctx: Context[AppState]) -> Progress:
    """The job manager's progress callback, sent to the client as the call's progress notifications."""

    async def report(elapsed: float, total: float, message: str) -> None:
        await ctx.report_progress(round(elapsed, 1), total, message)

    return report
