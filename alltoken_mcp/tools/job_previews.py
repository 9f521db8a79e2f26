"""The small inline previews of a completed job's images, which `job_result` shows after each file's
`resource_link`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio

from alltoken_mcp import budget, files, previews
from alltoken_mcp.app_state import AppState
from alltoken_mcp.formats import byte_size
from alltoken_mcp.store import Job

MAX_PREVIEW_SOURCE_BYTES = 64 * 1024 * 1024
PREVIEW_MARGIN_SECONDS = 1.0
"""Previews stop this long before the call's budget ends, so the answer itself still goes out."""


@dataclass(frozen=True)
class JobPreviews:
    """Makes the inline previews of a job's images: the recorded files only (read as the
    `alltoken://media` resource serves them), off the event loop, within what is left of the call's
    budget. Never fails the call. One per server: its reader and previewer bound the worker threads."""

    reader: files.SavedFileReader
    maker: previews.Previewer

    async def of(self, state: AppState, job: Job) -> tuple[dict[int, previews.Preview], list[str]]:
        """The previews by file index, and a warning for each image that got none."""
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
