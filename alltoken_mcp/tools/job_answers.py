"""What the media tools answer about jobs: `job_result` for one job (`alltoken_image`, `alltoken_video`,
`job_status`, `job_cancel`) and `job_list_result` for `list_jobs`.

A job's answer is a short text for the model (head line, the prompt's start, saved files, error, note, the
next-step hint), a `resource_link` per saved file (followed by its inline preview, when one was made) and
the `JobAnswer` as structuredContent; no file is inlined.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import mcp_types as t
from pydantic import BaseModel

from alltoken_mcp import previews
from alltoken_mcp.formats import byte_size, short_seconds
from alltoken_mcp.job_records import ANSWER_PROMPT_CHARS, JobAnswer, JobRecord, JobSummary, prompt_start
from alltoken_mcp.media_urls import LINK_SECONDS, MediaLinks
from alltoken_mcp.settings import Upstream
from alltoken_mcp.store import Job

LISTED_IN_TEXT = 10
"""How many jobs the text of a list_jobs answer names; all of them are in its structured result."""


class JobList(BaseModel):
    """`list_jobs`: a summary of each job."""

    jobs: list[JobSummary]


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


def job_list_result(summaries: Sequence[JobSummary]) -> t.CallToolResult:
    """The `JobList` as structuredContent, its text naming the newest `LISTED_IN_TEXT`."""
    return t.CallToolResult(
        content=[t.TextContent(type="text", text=_list_text(summaries))],
        structured_content={"jobs": [summary.dump() for summary in summaries]},
    )


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
        collect = f'job_status(job_id="{record.job_id}", wait_seconds={short_seconds(max_wait_seconds)})'
        cancel = f' or job_cancel(job_id="{record.job_id}")' if _cancel_can_help(record) else ""
        lines.append(
            f"Still running: call {collect} later to collect it{cancel}. The job survives server restarts."
        )
    lines.extend(f"Warning: {w}" for w in warnings)
    return "\n".join(lines)


def _cancel_can_help(record: JobRecord) -> bool:
    """Whether job_cancel can still stop a running job: an image is dropped here at any time; AllToken
    cancels a video only while it is queued (a render in progress is refused with 409), and a cancel
    already requested is sent on its own."""
    if record.cancel_requested:
        return False
    return record.kind == "image" or record.upstream_status in (None, "queued")


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
