"""The media tools — `alltoken_image`, `alltoken_video`, `job_status`, `job_cancel`, `list_jobs` — and the
`alltoken://jobs…` and `alltoken://media…` resources.

Tools stay thin: arguments are checked (`media_args`) against the catalog's entry for the model — for a
video model its `VideoRules`, the same ones `list_models` shows — before anything is sent or paid for;
local frame files are uploaded through `/uploads/presign`, and the job manager does the rest (durable
submit, polling, delivery). `save_to` is checked against the client's roots (asked with `roots/list`
when the client declares them), the input directories and the output directory before anything is paid
for, and stored with the job (`destinations`). Results carry the job record as structuredContent plus a
`resource_link` and the absolute path for every saved file, and a small inline preview of each image
(`previews`); no file is inlined.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field, ValidationError

from alltoken_mcp import budget, destinations, files, image_inputs, previews
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import ModelEntry, video_rules
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.formats import byte_size
from alltoken_mcp.job_records import ANSWER_PROMPT_CHARS, JobAnswer, JobRecord, JobSummary, prompt_start
from alltoken_mcp.jobs import ForeignJobError, Progress, SubmitRejected, UnknownJobError
from alltoken_mcp.media_urls import LINK_SECONDS, MediaLinks
from alltoken_mcp.people import current_person
from alltoken_mcp.settings import Settings, Upstream
from alltoken_mcp.store import Delivery, Job, JobKind, JobStatus, StoreError
from alltoken_mcp.tools.error_text import reports_store_errors, tool_error
from alltoken_mcp.tools.media_args import (
    ArgumentProblem,
    FrameRef,
    ImageInputs,
    image_body,
    image_model,
    image_operation,
    video_body,
)
from alltoken_mcp.tools.results import JSON_MIME, to_json
from alltoken_mcp.tools.spend import INPUT_REQUIRED_VERSION, confirm_render, refuse_over_budget
from alltoken_mcp.tools.state_resources import add_state_resource

logger = logging.getLogger(__name__)

MAX_FRAME_UPLOAD_BYTES = 30 * 1024 * 1024
ROOTS_SECONDS = 5.0
MAX_PREVIEW_SOURCE_BYTES = 64 * 1024 * 1024
PREVIEW_MARGIN_SECONDS = 1.0
"""Previews stop this long before the call's budget ends, so the answer itself still goes out."""
FRAME_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")


class JobList(BaseModel):
    """`list_jobs`: a summary of each job."""

    jobs: list[JobSummary]


class JobRecords(BaseModel):
    """`alltoken://jobs`: the full records."""

    jobs: list[JobRecord]


# ------------------------------------------------------------------------------- model listings


async def _models(state: AppState, kind: JobKind, expecting: str | None = None) -> list[ModelEntry]:
    """The catalog's models of `kind` that the arguments are checked against."""
    try:
        return await state.catalog.models(kind, expecting=expecting)
    except AllTokenError as exc:
        raise tool_error(exc) from exc


# ------------------------------------------------------------------------------- results


def job_result(
    job: Job,
    warnings: Sequence[str] = (),
    *,
    max_wait_seconds: float,
    here: Upstream | None = None,
    shown: dict[int, previews.Preview] | None = None,
    links: MediaLinks | None = None,
) -> t.CallToolResult:
    """Short text for the model, a resource_link per saved file (followed by its preview, if `shown` has
    one for its index), the job's `JobAnswer` as structuredContent. `max_wait_seconds` is the longest wait
    the next-step hint may suggest. With `here`, a job of another upstream is marked as such (see
    `JobRecord.from_job`). With `links` (serving HTTP), each saved file also gets a signed download URL,
    for a host that cannot read this machine's disk."""
    record = JobRecord.from_job(job, here)
    downloads = [links.url(job.job_id, i) for i in range(len(record.files))] if links else None
    text = _job_text(record, warnings, max_wait_seconds, downloads)
    content: list[t.ContentBlock] = [t.TextContent(type="text", text=text)]
    for index, saved in enumerate(record.files):
        content.append(
            t.ResourceLink(
                type="resource_link",
                uri=saved.uri,
                name=Path(saved.path).name,
                description=f"{saved.role} saved at {saved.path}",
                mime_type=saved.mime_type,
                size=saved.bytes,
            )
        )
        preview = (shown or {}).get(index)
        if preview is not None:
            data = base64.b64encode(preview.data).decode("ascii")
            content.append(t.ImageContent(type="image", data=data, mime_type=preview.mime_type))
    answer = JobAnswer.from_record(record, warnings, downloads)
    return t.CallToolResult(content=content, structured_content=answer.dump())


@dataclass(frozen=True)
class _Previews:
    """Makes the inline previews of a job's images: the recorded files only (read as `saved_files` serves
    them), off the event loop, within what is left of the call's budget. Never fails the call."""

    reader: files.SavedFileReader
    maker: previews.Previewer

    async def of(self, state: AppState, job: Job) -> tuple[dict[int, previews.Preview], list[str]]:
        wanted = state.settings.previews and (job.delivery is None or job.delivery.preview)
        if not wanted or job.status != "completed":
            return {}, []
        shown: dict[int, previews.Preview] = {}
        problems: list[str] = []
        with anyio.move_on_after(max(0.0, budget.remaining() - PREVIEW_MARGIN_SECONDS)) as scope:
            for index, saved in enumerate(job.files):
                if saved.role == "video" or not saved.mime_type.startswith("image/"):
                    continue
                if saved.bytes > MAX_PREVIEW_SOURCE_BYTES:
                    problems.append(
                        f"no preview of {Path(saved.path).name}: over {byte_size(MAX_PREVIEW_SOURCE_BYTES)}"
                    )
                    continue
                try:
                    source = await self.reader.read(saved.path, size=saved.bytes, sha256=saved.sha256)
                    shown[index] = await self.maker.preview(source)
                except (files.SavedFileError, previews.PreviewError) as exc:
                    problems.append(f"no preview of {Path(saved.path).name}: {exc}")
        if scope.cancelled_caught:
            problems.append("previews skipped: this call's time (ALLTOKEN_MAX_WAIT_SECONDS) ran out")
        return shown, problems


def _job_text(
    record: JobRecord, warnings: Sequence[str], max_wait_seconds: float, downloads: Sequence[str] | None
) -> str:
    head = f"{record.kind.capitalize()} job {record.job_id} ({record.model}) is {record.status}"
    if record.upstream_id:
        head += f" [AllToken task {record.upstream_id}]"
    lines = [
        head + ".",
        f'Prompt ({len(record.prompt):,} characters): "{prompt_start(record.prompt, ANSWER_PROMPT_CHARS)}"',
    ]
    for index, saved in enumerate(record.files):
        lines.append(
            f"Saved {saved.role}: {saved.path} ({byte_size(saved.bytes)}, {saved.mime_type}; {saved.uri})"
        )
        if downloads:
            lines.append(f"Download ({LINK_SECONDS // 60} min): {downloads[index]}")
    if record.error is not None:
        lines.append(f"Error {record.error.code}: {record.error.message}")
    if record.note:
        lines.append(record.note)
    if record.status in ("queued", "processing") and not record.foreign:
        collect = f'job_status(job_id="{record.job_id}", wait_seconds={_seconds(max_wait_seconds)})'
        cancel = f' or job_cancel(job_id="{record.job_id}")' if _cancel_can_help(record) else ""
        lines.append(
            f"Still running: call {collect} later to collect it{cancel}. The job survives server restarts."
        )
    lines.extend(f"Warning: {w}" for w in warnings)
    return "\n".join(lines)


LISTED_IN_TEXT = 10
"""How many jobs the text of a list_jobs answer names; all of them are in its structured result."""


def _list_text(summaries: Sequence[JobSummary]) -> str:
    counts = Counter(s.status for s in summaries)
    head = f"{len(summaries)} job(s), newest first" + (
        ": " + ", ".join(f"{n} {status}" for status, n in counts.items()) if summaries else ""
    )
    lines = [head + ". job_status(job_id) gives one in full."]
    lines += [
        f'{s.job_id} {s.kind} {s.status} {s.model} "{s.prompt}"'
        + (f" ({s.files} files)" if s.files > 1 else "")
        + (" [not this server's: job_status says whose]" if s.foreign else "")
        for s in summaries[:LISTED_IN_TEXT]
    ]
    if len(summaries) > LISTED_IN_TEXT:
        lines.append(f"… and {len(summaries) - LISTED_IN_TEXT} more in the structured result.")
    return "\n".join(lines)


def _cancel_can_help(record: JobRecord) -> bool:
    """Whether job_cancel can still stop a running job: an image is dropped here at any time; AllToken
    cancels a video only while it is queued (a render in progress is refused with 409), and a cancel
    already requested is sent on its own."""
    if record.cancel_requested:
        return False
    return record.kind == "image" or record.upstream_status in (None, "queued")


def _seconds(value: float) -> str:
    """A wait as a caller would write it: 45, 0.3, 12.5."""
    return f"{round(value, 1):g}"


def _progress(ctx: Context[AppState]) -> Progress:
    async def report(elapsed: float, total: float, message: str) -> None:
        await ctx.report_progress(round(elapsed, 1), total, message)

    return report


# ------------------------------------------------------------------------------- shared steps


def _require_key(state: AppState) -> None:
    if state.settings.key_problem is not None:
        raise ToolError(str(state.settings.key_problem))


async def _wait(ctx: Context[AppState], job: Job, asked: float | None) -> tuple[Job, list[str]]:
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
            f"Waited {_seconds(granted)} s, not the {_seconds(asked)} s asked: the most this server allows "
            f"in one call (ALLTOKEN_MAX_WAIT_SECONDS = {_seconds(cap)} s)."
        ]
    return job, []


async def _submit_and_wait(
    ctx: Context[AppState],
    kind: JobKind,
    body: dict[str, object],
    wait_seconds: float | None,
    warnings: list[str],
    delivery: Delivery | None,
    shows: _Previews,
) -> t.CallToolResult:
    state = app_state(ctx)
    try:
        job = await state.jobs.submit(kind, dict(body), delivery, person=current_person())
    except SubmitRejected as rejected:
        known = [m.id for m in await _models(state, kind)]
        raise ToolError(
            f"{tool_error(rejected.cause, model=str(body['model']), known_models=known)} "
            f"(recorded as failed job {rejected.record.job_id})"
        ) from rejected.cause
    job, capped = await _wait(ctx, job, wait_seconds)
    shown, unshown = await shows.of(state, job)
    return job_result(
        job,
        [*warnings, *capped, *unshown],
        max_wait_seconds=state.settings.max_wait_seconds,
        here=state.jobs.upstream,
        shown=shown,
        links=state.media_links,
    )


class _AskForRoots:
    """The client's roots are needed and, in the 2026-07-28 era, must be asked for in an input round."""


ROOTS_KEY = "roots"
"""The key of the roots request in an `InputRequiredResult` (beside spend's confirmation, if asked)."""


async def _client_roots(
    ctx: Context[AppState], save_to: str | None
) -> t.ListRootsResult | _AskForRoots | None:
    """The client's roots, when it declares them and they matter: `save_to` is checked against them, and
    without ALLTOKEN_OUTPUT_DIR the first one holds new files. In the 2026-07-28 era they come back in the
    call's `input_responses` after an `InputRequiredResult` round (`_AskForRoots`: ask); before it,
    `roots/list` goes out mid-call, and a client that fails or does not answer it in `ROOTS_SECONDS` is
    treated as one without roots (logged), rather than failing the call."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return None
    if save_to is None and app_state(ctx).settings.output_dir_configured:
        return None
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        answer = (ctx.input_responses or {}).get(ROOTS_KEY)
        if answer is None:
            return _AskForRoots()
        try:
            return t.ListRootsResult.model_validate(answer.model_dump(mode="json", by_alias=True))
        except ValidationError:
            logger.warning("the client answered the roots request with something else; using no roots")
            return None
    if not ctx.session.can_send_request:
        return None
    try:
        with anyio.fail_after(ROOTS_SECONDS):
            roots: t.ListRootsResult = await ctx.session.send_request(
                t.ListRootsRequest(),
                t.ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        return roots
    except (MCPError, TimeoutError) as exc:
        logger.warning(
            "the client declares roots but roots/list failed (%s); using the input directories", exc
        )
        return None


async def _delivery(
    ctx: Context[AppState],
    save_to: str | None,
    *,
    kind: JobKind,
    count: int,
    extension: str,
    overwrite: bool,
    preview: bool,
) -> tuple[Delivery | None, list[str]] | _AskForRoots:
    """Where the job's files go (see `destinations`), checked before anything is paid for or the user is
    asked to confirm it; `_AskForRoots` when the client must first be asked for its roots."""
    roots = await _client_roots(ctx, save_to)
    if isinstance(roots, _AskForRoots):
        return roots
    dirs = destinations.root_dirs(str(root.uri) for root in roots.roots) if roots is not None else ()
    places = destinations.Places.for_call(app_state(ctx).settings, dirs)
    try:
        return await anyio.to_thread.run_sync(
            lambda: destinations.plan_delivery(
                save_to,
                kind=kind,
                count=count,
                extension=extension,
                overwrite=overwrite,
                preview=preview,
                places=places,
            )
        )
    except destinations.DestinationError as exc:
        raise ToolError(f"{exc} Nothing was sent.") from exc


def _planned(
    delivery: tuple[Delivery | None, list[str]] | _AskForRoots,
) -> tuple[Delivery | None, list[str]]:
    """The planned delivery, once `_input_required` has said nothing is left to ask."""
    assert not isinstance(delivery, _AskForRoots)
    return delivery


def _input_required(
    delivery: tuple[Delivery | None, list[str]] | _AskForRoots, question: t.InputRequiredResult | None
) -> t.InputRequiredResult | None:
    """One input round for everything the call still needs: the roots and spend's confirmation are asked
    together (a call has one input channel), the confirmation's request state kept as it is."""
    if not isinstance(delivery, _AskForRoots):
        return question
    requests: dict[str, t.InputRequest] = dict(question.input_requests or {}) if question else {}
    requests[ROOTS_KEY] = t.ListRootsRequest()
    return t.InputRequiredResult(
        input_requests=requests, request_state=question.request_state if question else None
    )


def _is_remote(frame: str) -> bool:
    """A URL (media_args decides which schemes are acceptable) rather than a local path."""
    return "://" in frame or frame.startswith("data:")


async def _upload_frame(state: AppState, raw: str, role: Literal["first_frame", "last_frame"]) -> FrameRef:
    """An https URL is passed through (media_args checks it); a local path is uploaded for its upload_id."""
    if _is_remote(raw):
        return FrameRef(role=role, url=raw)
    allowed = [*state.settings.input_dirs, state.settings.output_dir]
    try:
        path = files.resolve_input_file(raw, allowed, max_bytes=MAX_FRAME_UPLOAD_BYTES)
        size, md5, sha256 = await files.file_digests(path)
        async with await anyio.open_file(path, "rb") as handle:
            mime = files.sniff_mime(await handle.read(64))
    except files.FileProblem as exc:
        raise ToolError(f"{role}: {exc}") from exc
    if mime not in FRAME_MIME_TYPES:
        raise ToolError(f"{role}: {path} is not a PNG, JPEG or WebP image ({mime or 'unknown type'}).")
    try:
        presigned = await state.client.presign_upload(
            purpose="video_input_image",
            content_type=mime,
            content_length=size,
            content_md5=md5,
            checksum_sha256=sha256,
        )
        await state.client.put_upload(presigned, path)
    except AllTokenError as exc:
        raise ToolError(f"Uploading the {role} {path} failed: {tool_error(exc)}") from exc
    return FrameRef(role=role, upload_id=presigned.upload_id)


async def _checked_inputs(
    state: AppState, image: str, mask: str | None, scratch: Path
) -> tuple[image_inputs.InputImage, image_inputs.InputImage | None]:
    """The source (and mask) of an edit or variation, found (a URL downloaded into `scratch`) and checked;
    nothing is sent to AllToken here (see image_inputs)."""
    settings = state.settings
    allowed = [*settings.input_dirs, settings.output_dir]
    try:

        async def fetch(raw: str, name: image_inputs.InputName) -> image_inputs.InputImage:
            return await image_inputs.input_image(
                state.client, raw, name, allowed_dirs=allowed, scratch=scratch, limits=settings.downloads
            )

        source = await fetch(image, "image")
        masked = await fetch(mask, "mask") if mask else None
        if masked is not None:
            image_inputs.check_mask(source, masked)
    except image_inputs.InputImageError as exc:
        raise ToolError(f"{exc} Nothing was sent to AllToken.") from exc
    return source, masked


async def _uploaded(
    state: AppState, source: image_inputs.InputImage, mask: image_inputs.InputImage | None, variation: bool
) -> ImageInputs:
    """Upload the checked files with the purposes their endpoint binds (§6)."""
    current = source
    try:
        source_id = await image_inputs.upload(
            state.client, source, "image_variation_source" if variation else "image_edit_source"
        )
        mask_id = None
        if mask is not None:
            current = mask
            mask_id = await image_inputs.upload(state.client, mask, "image_edit_mask")
    except AllTokenError as exc:
        raise ToolError(
            f"Uploading the {current.name} {current.given.strip()[:200]} failed: {tool_error(exc)} "
            "Nothing was charged."
        ) from exc
    return ImageInputs(image_upload_id=source_id, mask_upload_id=mask_id, variation=variation)


# ------------------------------------------------------------------------------- descriptions

# Each description is written at start-up from the settings: the model reads the defaults and the wait cap
# that are really in force, not the names of the variables that set them.


def image_description(settings: Settings) -> str:
    return (
        f"Generate images (default model {settings.default_image_model}), or edit image per the prompt "
        "(mask optional) or vary it (variation=true); paid per image. The files are saved locally before "
        "the result returns their paths. Waits up to wait_seconds (default and "
        f"maximum: {_seconds(settings.max_wait_seconds)} s); a job still running then is finished in the "
        "background: collect it with job_status."
    )


def video_description(settings: Settings) -> str:
    model = settings.default_video_model
    durations = video_rules(model, None).durations
    if durations is not None and durations.default is not None:
        model += f", {durations.default} s"
    wait = _seconds(settings.max_wait_seconds)
    return (
        f"Start a video render (default model {model}) from text, or from a first/last frame (a local "
        f"one must be under {allowed_dirs(settings)}); paid per second. It returns a job at once; renders "
        f"take minutes: call job_status(job_id, wait_seconds={wait}) until it completes; job_cancel works "
        "while it is queued. Arguments are checked against the model's limits "
        '(list_models modality="video") before paying. Files are saved locally.'
    )


def job_status_description(settings: Settings) -> str:
    return (
        "A media job's state and saved files. wait_seconds waits (with progress) until it finishes, at "
        f"most {_seconds(settings.max_wait_seconds)} s. Jobs survive server restarts."
    )


def allowed_dirs(settings: Settings) -> str:
    """Where a local input file may be read from: the directories themselves, resolved at start-up."""
    return " or ".join(str(d) for d in [*settings.input_dirs, settings.output_dir])


JOB_CANCEL_DESCRIPTION = (
    "Cancel a job. AllToken cancels a video only while it is queued: once rendering, it finishes, is "
    "charged and is still saved. An image job is dropped here (a late result is discarded)."
)

LIST_JOBS_DESCRIPTION = (
    "Recent image and video jobs, newest first, in short (status, model, prompt start, file count); "
    "job_status(job_id) gives one job's full record with its file paths."
)

WAIT_FIELD = Field(ge=0, allow_inf_nan=False)
SAVE_TO_FIELD = Field(
    min_length=1,
    max_length=4096,
    description="file or dir inside the client's roots, input dirs or output dir",
)
OVERWRITE_FIELD = Field(description="replace an existing save_to file")
PREVIEW_FIELD = Field(description="inline a small preview")


# ------------------------------------------------------------------------------- registration


def register(server: MCPServer[AppState], settings: Settings) -> None:
    """The media tools and resources; their descriptions quote `settings`' defaults and wait cap."""
    saved_files = files.SavedFileReader()  # this server's own threads and deadline for file reads
    shows = _Previews(saved_files, previews.Previewer())
    generating = dict(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )

    @server.tool(
        name="alltoken_image",
        title="Generate images",
        description=image_description(settings),
        annotations=t.ToolAnnotations(title="Generate images", **generating),
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
        _require_key(state)
        await refuse_over_budget(state)
        default = state.settings.default_image_model
        try:
            operation = image_operation(image=image is not None, mask=mask is not None, variation=variation)
        except ArgumentProblem as exc:
            raise ToolError(str(exc)) from exc
        image_models = await _models(state, "image", expecting=model or default)

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

        async def where() -> tuple[Delivery | None, list[str]] | _AskForRoots:
            return await _delivery(
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
            if (ask := _input_required(destination, question)) is not None:
                return ask
            delivery, placed = _planned(destination)
            return await _submit_and_wait(
                ctx, "image", body, wait_seconds, [*warnings, *placed], delivery, shows
            )
        # An edit or variation: the arguments (with stand-in upload ids), the destination, then the files,
        # then the user's confirmation, and only then the uploads — nothing reaches AllToken before all
        # of them pass.
        stand_in, _ = build(ImageInputs("-", "-" if mask else None, variation))
        destination = await where()
        async with image_inputs.scratch_dir() as scratch:
            source, masked = await _checked_inputs(state, image, mask, scratch)
            question = await confirm_render(ctx, "image", stand_in)
            if (ask := _input_required(destination, question)) is not None:
                return ask
            inputs = await _uploaded(state, source, masked, variation)
        body, warnings = build(inputs)
        delivery, placed = _planned(destination)
        return await _submit_and_wait(ctx, "image", body, wait_seconds, [*warnings, *placed], delivery, shows)

    @server.tool(
        name="alltoken_video",
        title="Start a video render",
        description=video_description(settings),
        annotations=t.ToolAnnotations(title="Start a video render", **generating),
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
        _require_key(state)
        await refuse_over_budget(state)
        chosen = model or state.settings.default_video_model
        video_models = await _models(state, "video", expecting=chosen)
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
                FrameRef(role=role, url=raw) if _is_remote(raw) else FrameRef(role=role, upload_id="-")
                for role, raw in wanted
            ]
        )
        delivery_or_ask = await _delivery(
            ctx, save_to, kind="video", count=1, extension="mp4", overwrite=overwrite, preview=preview
        )
        question = await confirm_render(ctx, "video", checked)
        if (ask := _input_required(delivery_or_ask, question)) is not None:
            return ask
        delivery, placed = _planned(delivery_or_ask)
        frames = [await _upload_frame(state, raw, role) for role, raw in wanted]
        body, warnings = build(frames)
        return await _submit_and_wait(ctx, "video", body, wait_seconds, [*warnings, *placed], delivery, shows)

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
        state = app_state(ctx)
        try:
            job = await state.jobs.get(job_id, current_person())
        except UnknownJobError as exc:
            raise ToolError(str(exc)) from exc
        job, capped = await _wait(ctx, job, wait_seconds)
        shown, unshown = await shows.of(state, job)
        return job_result(
            job,
            [*capped, *unshown],
            max_wait_seconds=state.settings.max_wait_seconds,
            here=state.jobs.upstream,
            shown=shown,
            links=state.media_links,
        )

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
        return t.CallToolResult(
            content=[t.TextContent(type="text", text=_list_text(summaries))],
            structured_content={"jobs": [summary.dump() for summary in summaries]},
        )

    # -- resources -------------------------------------------------------------------------------

    async def jobs_resource(state: AppState) -> str:
        jobs = await state.jobs.list_jobs(kind=None, status=None, limit=100, person=current_person())
        return to_json(JobRecords(jobs=[JobRecord.from_job(j, state.jobs.upstream) for j in jobs]))

    add_state_resource(
        server,
        "alltoken://jobs",
        jobs_resource,
        name="jobs",
        title="Media jobs",
        description="The 100 most recent image and video jobs (JSON), newest first.",
    )

    @server.resource(
        "alltoken://jobs/{job_id}",
        name="job",
        title="A media job",
        description="One job record (JSON). Subscribe to be notified when its status changes.",
        mime_type=JSON_MIME,
    )
    async def job_resource(job_id: str, ctx: Context[AppState]) -> str:
        try:
            job = await app_state(ctx).jobs.get(job_id, current_person())
        except UnknownJobError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except StoreError as exc:
            raise ResourceError(str(exc)) from exc
        return to_json(JobRecord.from_job(job, app_state(ctx).jobs.upstream))

    @server.resource(
        "alltoken://media/{job_id}/{index}",
        name="media",
        title="A saved media file",
        description="A generated image, video or last frame (binary). Prefer the absolute path from the job "
        "record for large files.",
    )
    async def media_resource(job_id: str, index: str, ctx: Context[AppState]) -> bytes:
        if not index.isdigit():
            raise ResourceNotFoundError(f"{index!r} is not a file index (0, 1, …)")
        try:
            saved = await app_state(ctx).jobs.media_file(job_id, int(index), current_person())
        except LookupError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except StoreError as exc:
            raise ResourceError(str(exc)) from exc
        try:
            # Only the regular file the job recorded, byte for byte: a file swapped for a symlink (say to
            # /proc/self/environ) or a FIFO, or edited in place, is refused without serving any of it.
            return await saved_files.read(saved.path, size=saved.bytes, sha256=saved.sha256)
        except files.SavedFileMissing as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except files.SavedFileError as exc:
            raise ResourceError(str(exc)) from exc
