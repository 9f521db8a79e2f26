"""The steps `alltoken_image` and `alltoken_video` share around their arguments: the key is there, the
catalog's models to check them against, and — once everything is checked — the durable submit of the
job and the wait for it."""

from __future__ import annotations

import mcp_types as t
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import ModelEntry
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.jobs import SubmitRejected
from alltoken_mcp.people import current_person
from alltoken_mcp.store import Delivery, JobKind
from alltoken_mcp.tools.error_text import tool_error
from alltoken_mcp.tools.job_previews import JobPreviews
from alltoken_mcp.tools.job_waiting import result_after_wait


def require_key(state: AppState) -> None:
    """Refuse the call, in the settings' one line, when there is no usable AllToken key."""
    if state.settings.key_problem is not None:
        raise ToolError(str(state.settings.key_problem))


async def catalog_models(state: AppState, kind: JobKind, expecting: str | None = None) -> list[ModelEntry]:
    """The catalog's models of `kind` that the arguments are checked against."""
    try:
        return await state.catalog.models(kind, expecting=expecting)
    except AllTokenError as exc:
        raise tool_error(exc) from exc


async def submit_and_wait(
    ctx: Context[AppState],
    kind: JobKind,
    body: dict[str, object],
    wait_seconds: float | None,
    warnings: list[str],
    delivery: Delivery | None,
    shows: JobPreviews,
) -> t.CallToolResult:
    """Submit the checked `body` as a job (a refusal is recorded as a failed job and named in the
    error), then answer as `result_after_wait` does."""
    state = app_state(ctx)
    try:
        job = await state.jobs.submit(kind, dict(body), delivery, person=current_person())
    except SubmitRejected as rejected:
        known = [m.id for m in await catalog_models(state, kind)]
        raise ToolError(
            f"{tool_error(rejected.cause, model=str(body['model']), known_models=known)} "
            f"(recorded as failed job {rejected.record.job_id})"
        ) from rejected.cause
    return await result_after_wait(ctx, job, wait_seconds, warnings, shows)
