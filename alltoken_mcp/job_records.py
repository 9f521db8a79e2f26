"""What tools and resources show about a media job: `JobRecord` and its parts, built from a store row.

Kept apart from the job manager so the public shape (part of the product contract in design.md) reads
in one place.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from alltoken_mcp.store import Job, JobKind, JobStatus


class MediaFile(BaseModel):
    path: str = Field(description="absolute path of the saved file")
    uri: str = Field(description="alltoken://media/{job_id}/{index}: the file as an MCP resource")
    mime_type: str
    bytes: int
    sha256: str
    role: str = Field(description="image, video or last_frame")


class JobErrorInfo(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    """What tools and resources show about a job."""

    job_id: str
    kind: JobKind
    status: JobStatus
    model: str
    prompt: str
    created_at: str
    updated_at: str
    upstream_id: str | None = Field(default=None, description="AllToken's task id")
    upstream_status: str | None = None
    files: list[MediaFile] = Field(default_factory=list)
    error: JobErrorInfo | None = None
    video_url: str | None = Field(default=None, description="remote video URL (expires); the file is saved")
    video_url_expires_at: str | None = None
    usage: dict[str, Any] | None = None
    note: str | None = Field(default=None, description="the latest notable event, e.g. a cancel outcome")
    cancel_requested: bool = False

    @classmethod
    def from_job(cls, job: Job) -> JobRecord:
        error = None
        if job.error_code or job.error_message:
            error = JobErrorInfo(code=job.error_code or "error", message=job.error_message or "")
        return cls(
            job_id=job.job_id,
            kind=job.kind,
            status=job.status,
            model=job.model,
            prompt=job.prompt,
            created_at=_iso(job.created_at),
            updated_at=_iso(job.updated_at),
            upstream_id=job.upstream_id,
            upstream_status=job.upstream_status,
            files=[MediaFile.model_validate(f) for f in job.files],
            error=error,
            video_url=job.video_url,
            video_url_expires_at=job.video_url_expires_at,
            usage=job.usage,
            note=job.note,
            cancel_requested=job.cancel_requested,
        )


def media_uri(job_id: str, index: int) -> str:
    return f"alltoken://media/{job_id}/{index}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
