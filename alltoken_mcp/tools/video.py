"""`alltoken_video`: start a video render from text, or from a first and/or last frame.

The arguments are checked (`media_args`) against the catalog's entry for the model — its `VideoRules`,
the same ones `list_models` shows — with stand-ins for local frame files, and the destination
(`delivery`) too, before the user is asked to confirm (`spend`) and before anything is uploaded or paid
for; then local frames are uploaded (`media_inputs`), the job manager submits the job durably and the
call waits for it within its budget (by default not at all: renders take minutes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import video_rules
from alltoken_mcp.formats import short_seconds
from alltoken_mcp.job_records import JobAnswer
from alltoken_mcp.settings import Settings
from alltoken_mcp.tools.delivery import delivery_or_ask, input_required, planned
from alltoken_mcp.tools.error_text import reports_store_errors
from alltoken_mcp.tools.job_previews import JobPreviews
from alltoken_mcp.tools.media_args import ArgumentProblem, FrameRef, video_body
from alltoken_mcp.tools.media_fields import (
    OVERWRITE_FIELD,
    PREVIEW_FIELD,
    SAVE_TO_FIELD,
    WAIT_FIELD,
    generating_annotations,
)
from alltoken_mcp.tools.media_inputs import is_remote, readable_dirs, upload_frame
from alltoken_mcp.tools.media_submit import catalog_models, require_key, submit_and_wait
from alltoken_mcp.tools.spend import confirm_render, refuse_over_budget


def video_description(settings: Settings) -> str:
    """Written at start-up: the model reads the default model, its default duration, the directories a
    local frame may come from and the wait cap really in force."""
    model = settings.default_video_model
    durations = video_rules(model, None).durations
    if durations is not None and durations.default is not None:
        model += f", {durations.default} s"
    wait = short_seconds(settings.max_wait_seconds)
    under = " or ".join(str(d) for d in readable_dirs(settings))
    return (
        f"Start a video render (default model {model}) from text, or from a first/last frame (a local "
        f"one must be under {under}); paid per second. It returns a job at once; renders "
        f"take minutes: call job_status(job_id, wait_seconds={wait}) until it completes; job_cancel works "
        "while it is queued. Arguments are checked against the model's limits "
        '(list_models modality="video") before paying. Files are saved locally.'
    )


def register(server: MCPServer[AppState], settings: Settings, shows: JobPreviews) -> None:
    """`alltoken_video`, its description quoting `settings`; `shows` makes the preview of a last frame."""

    @server.tool(
        name="alltoken_video",
        title="Start a video render",
        description=video_description(settings),
        annotations=generating_annotations("Start a video render"),
    )
    @reports_store_errors
    async def alltoken_video(
        ctx: Context[AppState],
        prompt: Annotated[str, Field(min_length=1, max_length=32000)],
        model: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
        duration: Annotated[
            int | None, Field(description="seconds; -1: the model picks (where allowed)")
        ] = None,
        ratio: Annotated[
            str | None, Field(max_length=10, description="16:9, 9:16, 4:3, 3:4, 21:9, 1:1, adaptive")
        ] = None,
        resolution: Annotated[str | None, Field(max_length=10, description="480p, 720p, 1080p")] = None,
        generate_audio: bool | None = None,
        seed: Annotated[int | None, Field(ge=-1, le=2**63 - 1)] = None,
        camera_fixed: bool | None = None,
        watermark: bool | None = None,
        return_last_frame: Annotated[bool | None, Field(description="also save it, to chain renders")] = None,
        first_frame: Annotated[
            str | None, Field(min_length=1, max_length=4096, description="an https URL or a local image path")
        ] = None,
        last_frame: Annotated[
            str | None, Field(min_length=1, max_length=4096, description="the same; needs first_frame")
        ] = None,
        wait_seconds: Annotated[float, WAIT_FIELD] = 0,
        save_to: Annotated[str | None, SAVE_TO_FIELD] = None,
        overwrite: Annotated[bool, OVERWRITE_FIELD] = False,
        preview: Annotated[bool, PREVIEW_FIELD] = True,
    ) -> Annotated[t.CallToolResult, JobAnswer] | t.InputRequiredResult:
        state = app_state(ctx)
        require_key(state)
        await refuse_over_budget(state)
        chosen = model or state.settings.default_video_model
        video_models = await catalog_models(state, "video", expecting=chosen)
        wanted: list[tuple[Literal["first_frame", "last_frame"], str]] = []
        if first_frame:
            wanted.append(("first_frame", first_frame))
        if last_frame:
            wanted.append(("last_frame", last_frame))

        def build(frames: Sequence[FrameRef]) -> tuple[dict[str, object], list[str]]:
            try:
                return video_body(
                    model=chosen,
                    prompt=prompt,
                    duration=duration,
                    ratio=ratio,
                    resolution=resolution,
                    generate_audio=generate_audio,
                    seed=seed,
                    camera_fixed=camera_fixed,
                    watermark=watermark,
                    return_last_frame=return_last_frame,
                    frames=frames,
                    video_models=video_models,
                )
            except ArgumentProblem as exc:
                raise ToolError(str(exc)) from exc

        # Check everything (with stand-ins for local files) before uploading or paying for anything.
        checked, _ = build(
            [
                FrameRef(role=role, url=raw) if is_remote(raw) else FrameRef(role=role, upload_id="-")
                for role, raw in wanted
            ]
        )
        destination = await delivery_or_ask(
            ctx, save_to, kind="video", count=1, extension="mp4", overwrite=overwrite, preview=preview
        )
        question = await confirm_render(ctx, "video", checked)
        if (ask := input_required(destination, question)) is not None:
            return ask
        delivery, placed = planned(destination)
        frames = [await upload_frame(state, raw, role) for role, raw in wanted]
        body, warnings = build(frames)
        return await submit_and_wait(ctx, "video", body, wait_seconds, [*warnings, *placed], delivery, shows)
