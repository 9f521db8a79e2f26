"""The files a render starts from: a video's first and last frames, an image to edit or vary and its
mask. A local one must be under the input directories or the output directory; each is found and checked
before anything is paid for, then uploaded through `/uploads/presign` for the upload id the request
names. Every failure is a ToolError saying what was (not) sent."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError

from alltoken_mcp import files, image_inputs
from alltoken_mcp.app_state import AppState
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.settings import Settings
from alltoken_mcp.tools.error_text import tool_error
from alltoken_mcp.tools.media_args import FrameRef, ImageInputs

MAX_FRAME_UPLOAD_BYTES = 30 * 1024 * 1024
FRAME_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")


def readable_dirs(settings: Settings) -> list[Path]:
    """Where a local input file may be read from: the input directories and the output directory."""
    return [*settings.input_dirs, settings.output_dir]


def is_remote(frame: str) -> bool:
    """A URL (media_args decides which schemes are acceptable) rather than a local path."""
    return "://" in frame or frame.startswith("data:")


async def upload_frame(state: AppState, raw: str, role: Literal["first_frame", "last_frame"]) -> FrameRef:
    """An https URL is passed through (media_args checks it); a local path is uploaded for its upload_id."""
    if is_remote(raw):
        return FrameRef(role=role, url=raw)
    try:
        path = files.resolve_input_file(raw, readable_dirs(state.settings), max_bytes=MAX_FRAME_UPLOAD_BYTES)
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


async def checked_image_inputs(
    state: AppState, image: str, mask: str | None, scratch: Path
) -> tuple[image_inputs.InputImage, image_inputs.InputImage | None]:
    """The source (and mask) of an edit or variation, found (a URL downloaded into `scratch`) and checked;
    nothing is sent to AllToken here (see image_inputs)."""
    settings = state.settings
    allowed = readable_dirs(settings)
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


async def upload_image_inputs(
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
