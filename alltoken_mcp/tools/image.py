"""`alltoken_image`: generate images, or edit one (with an optional mask) or vary it.

The arguments are checked (`media_args`) against the catalog's image models, the destination
(`delivery`) and, for an edit or variation, the input files (`media_inputs`) before the user is asked
to confirm (`spend`) and before anything is uploaded or paid for; then the job manager submits the job
durably and the call waits for it within its budget.
"""

from __future__ import annotations

from typing import Annotated, Literal

import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from alltoken_mcp import files, image_inputs
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.formats import short_seconds
from alltoken_mcp.job_records import JobAnswer
from alltoken_mcp.settings import Settings
from alltoken_mcp.tools.delivery import AskForRoots, PlannedDelivery, delivery_or_ask, input_required, planned
from alltoken_mcp.tools.error_text import reports_store_errors
from alltoken_mcp.tools.job_previews import JobPreviews
from alltoken_mcp.tools.media_args import (
    ArgumentProblem,
    ImageInputs,
    image_body,
    image_model,
    image_operation,
)
from alltoken_mcp.tools.media_fields import (
    OVERWRITE_FIELD,
    PREVIEW_FIELD,
    SAVE_TO_FIELD,
    WAIT_FIELD,
    generating_annotations,
)
from alltoken_mcp.tools.media_inputs import checked_image_inputs, upload_image_inputs
from alltoken_mcp.tools.media_submit import catalog_models, require_key, submit_and_wait
from alltoken_mcp.tools.spend import confirm_render, refuse_over_budget


def image_description(settings: Settings) -> str:
    """Written at start-up: the model reads the default model and the wait cap really in force."""
    return (
        f"Generate images (default model {settings.default_image_model}), or edit image per the prompt "
        "(mask optional) or vary it (variation=true); paid per image. The files are saved locally before "
        "the result returns their paths. Waits up to wait_seconds (default and "
        f"maximum: {short_seconds(settings.max_wait_seconds)} s); a job still running then is finished in "
        "the background: collect it with job_status."
    )


def register(server: MCPServer[AppState], settings: Settings, shows: JobPreviews) -> None:
    """`alltoken_image`, its description quoting `settings`; `shows` makes the previews of its images."""

    @server.tool(
        name="alltoken_image",
        title="Generate images",
        description=image_description(settings),
        annotations=generating_annotations("Generate images"),
    )
    @reports_store_errors
    async def alltoken_image(
        ctx: Context[AppState],
        prompt: Annotated[str | None, Field(min_length=1, max_length=32000)] = None,
        model: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
        n: Annotated[int, Field(ge=1, le=10)] = 1,
        size: Annotated[
            str, Field(max_length=20, description="auto or WIDTHxHEIGHT, e.g. 1536x1024")
        ] = "auto",
        quality: Literal["auto", "low", "medium", "high"] = "auto",
        output_format: Literal["png", "jpeg", "webp"] = "png",
        background: Annotated[
            Literal["auto", "opaque", "transparent"], Field(description="transparent needs png or webp")
        ] = "auto",
        moderation: Literal["auto", "low"] = "auto",
        seed: Annotated[int | None, Field(ge=0, le=2147483647, description="wan2.7 models only")] = None,
        image: Annotated[
            str | None,
            Field(min_length=1, max_length=4096, description="image to edit or vary: path or https URL"),
        ] = None,
        mask: Annotated[
            str | None,
            Field(min_length=1, max_length=4096, description="edit where transparent; image's size"),
        ] = None,
        variation: Annotated[bool, Field(description="vary image instead (no prompt)")] = False,
        wait_seconds: Annotated[float | None, WAIT_FIELD] = None,
        save_to: Annotated[str | None, SAVE_TO_FIELD] = None,
        overwrite: Annotated[bool, OVERWRITE_FIELD] = False,
        preview: Annotated[bool, PREVIEW_FIELD] = True,
    ) -> Annotated[t.CallToolResult, JobAnswer] | t.InputRequiredResult:
        state = app_state(ctx)
        require_key(state)
        await refuse_over_budget(state)
        default = state.settings.default_image_model
        try:
            operation = image_operation(image=image is not None, mask=mask is not None, variation=variation)
        except ArgumentProblem as exc:
            raise ToolError(str(exc)) from exc
        image_models = await catalog_models(state, "image", expecting=model or default)

        def build(inputs: ImageInputs | None) -> tuple[dict[str, object], list[str]]:
            try:
                chosen, picked = image_model(model, default, operation, image_models)
                body, warnings = image_body(
                    model=chosen,
                    prompt=prompt,
                    n=n,
                    size=size,
                    quality=quality,
                    output_format=output_format,
                    background=background,
                    moderation=moderation,
                    seed=seed,
                    image_models=image_models,
                    inputs=inputs,
                )
            except ArgumentProblem as exc:
                raise ToolError(str(exc)) from exc
            return body, [*picked, *warnings]

        async def where() -> PlannedDelivery | AskForRoots:
            return await delivery_or_ask(
                ctx,
                save_to,
                kind="image",
                count=n,
                extension=files.extension_for(f"image/{output_format}", "png"),
                overwrite=overwrite,
                preview=preview,
            )

        if image is None:
            body, warnings = build(None)
            destination = await where()
            question = await confirm_render(ctx, "image", body)
            if (ask := input_required(destination, question)) is not None:
                return ask
            delivery, placed = planned(destination)
            return await submit_and_wait(
                ctx, "image", body, wait_seconds, [*warnings, *placed], delivery, shows
            )
        # An edit or variation: the arguments (with stand-in upload ids), the destination, then the files,
        # then the user's confirmation, and only then the uploads — nothing reaches AllToken before all
        # of them pass.
        stand_in, _ = build(ImageInputs("-", "-" if mask else None, variation))
        destination = await where()
        async with image_inputs.scratch_dir() as scratch:
            source, masked = await checked_image_inputs(state, image, mask, scratch)
            question = await confirm_render(ctx, "image", stand_in)
            if (ask := input_required(destination, question)) is not None:
                return ask
            inputs = await upload_image_inputs(state, source, masked, variation)
        body, warnings = build(inputs)
        delivery, placed = planned(destination)
        return await submit_and_wait(ctx, "image", body, wait_seconds, [*warnings, *placed], delivery, shows)
